/**
 * Typed reads from an untyped manifest that record a file:line:path:reason
 * error instead of throwing, so one pass reports every problem in a document.
 */
import type { ConfigError, FieldPath, SourceLocation, SourceObject } from '../sources/source.js';
import { formatFieldPath } from '../sources/source.js';

export class FieldReader {
  constructor(
    private readonly obj: SourceObject,
    readonly errors: ConfigError[],
  ) {}

  locate(path: FieldPath): SourceLocation {
    return this.obj.locate(path);
  }

  fail(path: FieldPath, reason: string): void {
    const loc = this.obj.locate(path);
    this.errors.push({ file: loc.file, line: loc.line, path: formatFieldPath(path), reason });
  }

  /** The raw value at `path`, undefined when absent or null. */
  get(path: FieldPath): unknown {
    let cur: unknown = this.obj.value;
    for (const part of path) {
      if (cur === null || cur === undefined) return undefined;
      if (typeof part === 'number') {
        if (!Array.isArray(cur)) return undefined;
        cur = cur[part];
      } else {
        if (typeof cur !== 'object' || Array.isArray(cur)) return undefined;
        cur = (cur as Record<string, unknown>)[part];
      }
    }
    return cur === null ? undefined : cur;
  }

  has(path: FieldPath): boolean {
    return this.get(path) !== undefined;
  }

  string(
    path: FieldPath,
    opts: { required?: boolean; pattern?: RegExp; patternHint?: string; maxLength?: number } = {},
  ): string | undefined {
    const v = this.get(path);
    if (v === undefined) {
      if (opts.required) this.fail(path, 'required field is missing');
      return undefined;
    }
    if (typeof v !== 'string') {
      this.fail(path, `must be a string, got ${describe(v)}`);
      return undefined;
    }
    if (opts.maxLength !== undefined && v.length > opts.maxLength) {
      this.fail(path, `must be at most ${opts.maxLength} characters long, got ${v.length}`);
      return undefined;
    }
    if (opts.pattern && !opts.pattern.test(v)) {
      this.fail(path, `invalid value ${quote(v)}${opts.patternHint ? `: ${opts.patternHint}` : ''}`);
      return undefined;
    }
    if (opts.required && v === '') {
      this.fail(path, 'must not be empty');
      return undefined;
    }
    return v;
  }

  integer(
    path: FieldPath,
    opts: { required?: boolean; min?: number; max?: number } = {},
  ): number | undefined {
    const v = this.get(path);
    if (v === undefined) {
      if (opts.required) this.fail(path, 'required field is missing');
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      this.fail(path, `must be an integer, got ${describe(v)}`);
      return undefined;
    }
    if (opts.min !== undefined && v < opts.min) {
      this.fail(path, `must be >= ${opts.min}, got ${v}`);
      return undefined;
    }
    if (opts.max !== undefined && v > opts.max) {
      this.fail(path, `must be <= ${opts.max}, got ${v}`);
      return undefined;
    }
    return v;
  }

  oneOf<T extends string>(
    path: FieldPath,
    allowed: readonly T[],
    opts: { required?: boolean } = {},
  ): T | undefined {
    const v = this.string(path, opts);
    if (v === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(v)) {
      this.fail(path, `must be one of ${allowed.join(', ')}, got ${quote(v)}`);
      return undefined;
    }
    return v as T;
  }

  /** A list; each element is read by the caller through its index. Returns the length. */
  list(path: FieldPath, opts: { required?: boolean; nonEmpty?: boolean } = {}): number {
    const v = this.get(path);
    if (v === undefined) {
      if (opts.required) this.fail(path, 'required field is missing');
      return 0;
    }
    if (!Array.isArray(v)) {
      this.fail(path, `must be a list, got ${describe(v)}`);
      return 0;
    }
    if (opts.nonEmpty && v.length === 0) this.fail(path, 'must not be empty');
    return v.length;
  }

  /** A map of strings to strings (labels, selectors). */
  stringMap(path: FieldPath): Record<string, string> | undefined {
    const v = this.get(path);
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) {
      this.fail(path, `must be a map, got ${describe(v)}`);
      return undefined;
    }
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (typeof val === 'string') out[k] = val;
      else if (typeof val === 'number' || typeof val === 'boolean') out[k] = String(val);
      else this.fail([...path, k], `must be a string, got ${describe(val)}`);
    }
    return out;
  }

  /** A list of strings. */
  strings(path: FieldPath, opts: { pattern?: RegExp; patternHint?: string } = {}): string[] {
    const n = this.list(path);
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const s = this.string([...path, i], { required: true, ...opts });
      if (s !== undefined) out.push(s);
    }
    return out;
  }

  /** A Gateway API duration (`1h`, `30s`, `500ms`, `1m30s`), in milliseconds. */
  duration(path: FieldPath): number | undefined {
    const v = this.string(path);
    if (v === undefined) return undefined;
    const ms = parseDuration(v);
    if (ms === undefined) this.fail(path, `invalid duration ${quote(v)}: use e.g. 500ms, 10s, 1m30s`);
    return ms;
  }

  /** Reports fields at `path` that are not in `known` (catches typos such as `weigth`). */
  onlyKnown(path: FieldPath, known: readonly string[]): void {
    const v = this.get(path);
    if (v === undefined || typeof v !== 'object' || Array.isArray(v)) return;
    for (const k of Object.keys(v as object)) {
      if (!known.includes(k)) this.fail([...path, k], `unknown field (expected one of: ${known.join(', ')})`);
    }
  }
}

const DURATION = /^(?:\d{1,5}(?:h|ms|m|s)){1,4}$/;
const PART = /(\d+)(h|ms|m|s)/g;

export function parseDuration(s: string): number | undefined {
  if (!DURATION.test(s)) return undefined;
  let ms = 0;
  for (const m of s.matchAll(PART)) {
    const n = Number(m[1]);
    switch (m[2]) {
      case 'h':
        ms += n * 3_600_000;
        break;
      case 'm':
        ms += n * 60_000;
        break;
      case 's':
        ms += n * 1000;
        break;
      default:
        ms += n;
    }
  }
  return ms;
}

/** Values quoted in a message are cut to this many characters (a fuzzed 10 MB name must not make a 10 MB error). */
const MAX_QUOTE = 64;

/** A string cut to a length a message can carry. */
export function quote(v: string): string {
  return v.length > MAX_QUOTE ? `'${v.slice(0, MAX_QUOTE)}...' (${v.length} characters)` : `'${v}'`;
}

/** How a value is named in a message: its type and a bounded rendering. */
export function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string' && v.length > MAX_QUOTE) return `string ${quote(v)}`;
  return `${typeof v} ${JSON.stringify(v)}`;
}
