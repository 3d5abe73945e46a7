/**
 * The structural check every declared object passes before the model decodes
 * it: one JSON Schema per kind and apiVersion (the Gateway API and sockmesh
 * CRDs' own openAPIV3Schema, hand-written ones for the core kinds), applied
 * with ajv. Errors come out in the model's `file:line: field.path: reason`
 * form. Semantics a schema cannot say (references, CEL rules such as
 * "selector or targetRef") stay in the model's decoders.
 *
 * CRD schemas are read as an API server with strict field validation reads
 * them: an object schema that lists properties is closed unless it says
 * x-kubernetes-preserve-unknown-fields, and a null field is dropped before
 * validation. The x-kubernetes-* keywords (CEL included) validate nothing here.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsPlugin from 'ajv-formats';
import type { ConfigError, FieldPath, SourceObject } from '../sources/source.js';
import { formatFieldPath } from '../sources/source.js';
import { describe, quote } from './reader.js';
import { CORE_SCHEMAS, type JsonSchema, OBJECT_META } from './schemas/core.js';
import generated from './schemas/crds.generated.json' with { type: 'json' };

const KUBERNETES_KEYWORDS = [
  'x-kubernetes-validations',
  'x-kubernetes-list-type',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-map-type',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-int-or-string',
  'x-kubernetes-embedded-resource',
];

/** More errors than this for one object are summed up in one line. */
const MAX_ERRORS = 50;

// ajv-formats is CommonJS: under NodeNext its default import is typed as the module object.
const addFormats = addFormatsPlugin.default;

const ajv = new Ajv({
  allErrors: true,
  verbose: true,
  strict: true,
  strictTypes: false,
  strictRequired: false,
});
ajv.addVocabulary(KUBERNETES_KEYWORDS);
addFormats(ajv, ['date-time', 'int32', 'int64']);

/** Closes every object schema that lists properties, as strict field validation does; metadata gets ObjectMeta. */
function closeStructural(schema: unknown, top: boolean): unknown {
  if (Array.isArray(schema)) return schema.map((s) => closeStructural(s, false));
  if (typeof schema !== 'object' || schema === null) return schema;
  const s = schema as JsonSchema;
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === 'properties' && typeof v === 'object' && v !== null) {
      out[k] = Object.fromEntries(
        Object.entries(v).map(([p, ps]) => [
          p,
          top && p === 'metadata' ? OBJECT_META : closeStructural(ps, false),
        ]),
      );
    } else if (k === 'items' || k === 'additionalProperties') out[k] = closeStructural(v, false);
    else out[k] = v;
  }
  if (
    out.properties !== undefined &&
    out.additionalProperties === undefined &&
    out['x-kubernetes-preserve-unknown-fields'] !== true
  ) {
    out.additionalProperties = false;
  }
  return out;
}

const compiled = new Map<string, ValidateFunction>();
const sources = new Map<string, () => JsonSchema>();
for (const [kind, versions] of Object.entries(CORE_SCHEMAS)) {
  for (const [apiVersion, schema] of Object.entries(versions))
    sources.set(`${kind}\0${apiVersion}`, () => schema);
}
for (const [kind, versions] of Object.entries(
  (generated as { kinds: Record<string, Record<string, { schema: unknown }>> }).kinds,
)) {
  for (const [apiVersion, v] of Object.entries(versions)) {
    sources.set(`${kind}\0${apiVersion}`, () => closeStructural(v.schema, true) as JsonSchema);
  }
}

/** The compiled validator of a kind and apiVersion (compiled on first use), undefined when there is none. */
function validatorFor(kind: string, apiVersion: string): ValidateFunction | undefined {
  const key = `${kind}\0${apiVersion}`;
  let v = compiled.get(key);
  if (!v) {
    const src = sources.get(key);
    if (!src) return undefined;
    v = ajv.compile(src());
    compiled.set(key, v);
  }
  return v;
}

/** Every kind/apiVersion pair with a schema. */
export function schemaKinds(): { kind: string; apiVersion: string }[] {
  return [...sources.keys()].map((k) => {
    const [kind, apiVersion] = k.split('\0') as [string, string];
    return { kind, apiVersion };
  });
}

/** The object with null map values removed (an API server drops them before validating), copied only when needed. */
function pruneNulls(v: unknown): unknown {
  if (!hasNull(v, 0)) return v;
  const walk = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(walk);
    if (typeof x !== 'object' || x === null) return x;
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(x)) if (val !== null) out[k] = walk(val);
    return out;
  };
  return walk(v);
}

function hasNull(v: unknown, depth: number): boolean {
  if (typeof v !== 'object' || v === null || depth > 200) return false;
  if (Array.isArray(v)) return v.some((x) => hasNull(x, depth + 1));
  for (const val of Object.values(v)) if (val === null || hasNull(val, depth + 1)) return true;
  return false;
}

/**
 * Schema errors of one object whose kind and apiVersion the caller has
 * checked; [] when it conforms or when no schema is known for the pair.
 */
export function schemaErrors(kind: string, apiVersion: string, obj: SourceObject): ConfigError[] {
  const validate = validatorFor(kind, apiVersion);
  if (!validate) return [];
  const value = pruneNulls(obj.value);
  if (validate(value)) return [];
  const out: ConfigError[] = [];
  const seen = new Set<string>();
  const all = validate.errors ?? [];
  for (const e of all) {
    const m = toMessage(e, value);
    if (!m) continue;
    const path = formatFieldPath(m.path);
    const key = `${path}\0${m.reason}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (out.length === MAX_ERRORS) {
      const at = obj.locate([]);
      out.push({
        file: at.file,
        line: at.line,
        path: '',
        reason: `and more schema errors (${all.length} in all)`,
      });
      break;
    }
    const at = obj.locate(m.path);
    out.push({ file: at.file, line: at.line, path, reason: m.reason });
  }
  return out;
}

/** JSON pointer -> field path, with list indexes as numbers. */
function toFieldPath(pointer: string, root: unknown): (string | number)[] {
  if (pointer === '') return [];
  const out: (string | number)[] = [];
  let cur: unknown = root;
  for (const raw of pointer.slice(1).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) {
      const i = Number(part);
      out.push(i);
      cur = cur[i];
    } else {
      out.push(part);
      cur = typeof cur === 'object' && cur !== null ? (cur as Record<string, unknown>)[part] : undefined;
    }
  }
  return out;
}

function toMessage(e: ErrorObject, root: unknown): { path: FieldPath; reason: string } | undefined {
  const path = toFieldPath(e.instancePath, root);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return { path: [...path, String(p.missingProperty)], reason: 'required field is missing' };
    case 'additionalProperties': {
      const props = (e.parentSchema as { properties?: object } | undefined)?.properties;
      const field = String(p.additionalProperty);
      return { path: [...path, field], reason: unknownField(field, props ? Object.keys(props) : []) };
    }
    case 'type':
      return { path, reason: `must be ${typeName(p.type)}, got ${describe(e.data)}` };
    case 'enum':
      return {
        path,
        reason: `must be one of ${(p.allowedValues as unknown[]).map((v) => (v === '' ? '""' : String(v))).join(', ')}, got ${describe(e.data)}`,
      };
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return { path, reason: `must be ${p.comparison} ${p.limit}, got ${String(e.data)}` };
    case 'minLength':
      return p.limit === 1
        ? { path, reason: 'must not be empty' }
        : { path, reason: `must be at least ${p.limit} characters long` };
    case 'maxLength':
      return {
        path,
        reason: `must be at most ${p.limit} characters long, got ${(e.data as string).length}`,
      };
    case 'minItems':
      return p.limit === 1
        ? { path, reason: 'must not be empty' }
        : { path, reason: `must have at least ${p.limit} items` };
    case 'maxItems':
      return { path, reason: `must have at most ${p.limit} items, got ${(e.data as unknown[]).length}` };
    case 'pattern':
      return { path, reason: `invalid value ${quote(String(e.data))}: must match ${p.pattern}` };
    case 'format':
      return { path, reason: `invalid ${p.format} value ${quote(String(e.data))}` };
    default:
      return { path, reason: e.message ?? e.keyword };
  }
}

/** The known fields when they are few; else the nearest one (a typo) when there is one. */
function unknownField(field: string, known: string[]): string {
  if (known.length === 0) return 'unknown field';
  if (known.length <= 12) return `unknown field (expected one of: ${known.join(', ')})`;
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(field.toLowerCase(), k.toLowerCase(), bestDistance);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best
    ? `unknown field (did you mean ${best}?)`
    : `unknown field (not one of the ${known.length} known here)`;
}

/** Levenshtein distance, giving up (returning `limit`) once it is certain to reach it. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) >= limit) return limit;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      cur.push(v);
      rowMin = Math.min(rowMin, v);
    }
    if (rowMin >= limit) return limit;
    prev = cur;
  }
  return Math.min(prev[b.length]!, limit);
}

function typeName(t: unknown): string {
  const names: Record<string, string> = {
    string: 'a string',
    integer: 'an integer',
    number: 'a number',
    boolean: 'a boolean',
    array: 'a list',
    object: 'a map',
  };
  const list = Array.isArray(t) ? t : String(t).split(',');
  return list.map((x) => names[String(x)] ?? String(x)).join(' or ');
}
