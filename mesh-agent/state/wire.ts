/**
 * Narrowing helpers for xDS resources as @grpc/proto-loader decodes them
 * (keepCase, longs and enums as strings, defaults omitted, oneof discriminators,
 * Any unpacked with `@type`). Input comes off the wire, so every accessor takes
 * the field path it is reading and throws a SockmeshError naming that path.
 */
import { SockmeshError } from '../../lib/errors.js';

export type Wire = Readonly<Record<string, unknown>>;

export function decodeError(path: string, reason: string): SockmeshError {
  return new SockmeshError('SOCKMESH_E_XDS', `invalid xDS resource at ${path}: ${reason}`, {
    hint: 'the control plane sent a resource this agent cannot use; the last good config stays in force',
  });
}

export function isRecord(v: unknown): v is Wire {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

export function obj(v: unknown, path: string): Wire {
  if (!isRecord(v)) throw decodeError(path, `expected an object, got ${describe(v)}`);
  return v;
}

export function optObj(v: unknown, path: string): Wire | undefined {
  return v === undefined || v === null ? undefined : obj(v, path);
}

export function list(v: unknown, path: string): readonly unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw decodeError(path, `expected a list, got ${describe(v)}`);
  return v;
}

export function str(v: unknown, path: string): string {
  if (typeof v !== 'string') throw decodeError(path, `expected a string, got ${describe(v)}`);
  return v;
}

export function optStr(v: unknown, path: string): string | undefined {
  return v === undefined || v === null ? undefined : str(v, path);
}

export function optBool(v: unknown, path: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw decodeError(path, `expected a boolean, got ${describe(v)}`);
  return v;
}

/** An unsigned integer; 64-bit ones arrive as strings (`longs: String`). */
export function optUint(v: unknown, path: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > max) {
    throw decodeError(path, `expected an unsigned integer up to ${max}, got ${describe(v)}`);
  }
  return n;
}

export const UINT32_MAX = 0xffff_ffff;

/** google.protobuf.UInt32Value / UInt64Value: `{ value: n }` (a bare number is tolerated). */
export function optUintWrapper(v: unknown, path: string, max = UINT32_MAX): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (isRecord(v)) return optUint(v.value, `${path}.value`, max) ?? 0;
  return optUint(v, path, max);
}

/** google.protobuf.BoolValue: `{ value: b }` (a bare boolean is tolerated). */
export function optBoolWrapper(v: unknown, path: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (isRecord(v)) return optBool(v.value, `${path}.value`) ?? false;
  return optBool(v, path);
}

/** google.protobuf.Duration `{ seconds: '1', nanos: 5e8 }` as milliseconds. */
export function optDurationMs(v: unknown, path: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  const d = obj(v, path);
  const secRaw = d.seconds ?? 0;
  const seconds = typeof secRaw === 'string' && /^-?\d+$/.test(secRaw) ? Number(secRaw) : secRaw;
  const nanos = d.nanos ?? 0;
  if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 0) {
    throw decodeError(`${path}.seconds`, `expected a non-negative integer, got ${describe(secRaw)}`);
  }
  if (typeof nanos !== 'number' || !Number.isInteger(nanos) || nanos < 0 || nanos > 999_999_999) {
    throw decodeError(`${path}.nanos`, `expected 0..999999999, got ${describe(nanos)}`);
  }
  return seconds * 1000 + nanos / 1e6;
}

/** An enum decoded as its name (`enums: String`); absent means the proto default. */
export function optEnum<T extends string>(v: unknown, path: string, allowed: readonly T[]): T | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw decodeError(path, `expected one of ${allowed.join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}

export type PlainValue = null | boolean | number | string | PlainValue[] | { [k: string]: PlainValue };

/**
 * google.protobuf.Struct as proto-loader delivers it (`{ fields: { k: { stringValue, kind } } }`,
 * protobufjs keeps its bundled well-known types in camelCase) or already plain JSON.
 */
export function structToPlain(v: unknown, path: string): Record<string, PlainValue> {
  const s = obj(v, path);
  if (isRecord(s.fields) && Object.keys(s).every((k) => k === 'fields')) {
    const out: Record<string, PlainValue> = {};
    for (const [k, val] of Object.entries(s.fields)) out[k] = valueToPlain(val, `${path}.fields.${k}`);
    return out;
  }
  const out: Record<string, PlainValue> = {};
  for (const [k, val] of Object.entries(s)) out[k] = jsonToPlain(val, `${path}.${k}`);
  return out;
}

function valueToPlain(v: unknown, path: string): PlainValue {
  const val = obj(v, path);
  const pick = (camel: string, snake: string): unknown => val[camel] ?? val[snake];
  const s = pick('stringValue', 'string_value');
  if (s !== undefined) return str(s, `${path}.string_value`);
  const n = pick('numberValue', 'number_value');
  if (n !== undefined) {
    if (typeof n !== 'number') throw decodeError(`${path}.number_value`, 'expected a number');
    return n;
  }
  const b = pick('boolValue', 'bool_value');
  if (b !== undefined) return optBool(b, `${path}.bool_value`) ?? false;
  const st = pick('structValue', 'struct_value');
  if (st !== undefined) return structToPlain(st, `${path}.struct_value`);
  const l = pick('listValue', 'list_value');
  if (l !== undefined) {
    return list(obj(l, `${path}.list_value`).values, `${path}.list_value.values`).map((x, i) =>
      valueToPlain(x, `${path}.list_value.values[${i}]`),
    );
  }
  return null;
}

function jsonToPlain(v: unknown, path: string): PlainValue {
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (Array.isArray(v)) return v.map((x, i) => jsonToPlain(x, `${path}[${i}]`));
  if (isRecord(v)) {
    const out: Record<string, PlainValue> = {};
    for (const [k, val] of Object.entries(v)) out[k] = jsonToPlain(val, `${path}.${k}`);
    return out;
  }
  throw decodeError(path, `expected JSON data, got ${describe(v)}`);
}

/** Throws on an Any that was not unpacked (decoded without proto-loader's `json: true`). */
export function typedConfig(v: unknown, path: string): Wire {
  const t = obj(v, path);
  if (t['@type'] === undefined && t.type_url !== undefined) {
    throw decodeError(
      path,
      `google.protobuf.Any ${String(t.type_url)} was not unpacked (decode with json: true)`,
    );
  }
  return t;
}

/** The `@type` of an unpacked Any, without the type.googleapis.com/ prefix. */
export function anyTypeName(v: Wire): string | undefined {
  const t = v['@type'];
  return typeof t === 'string' ? t.slice(t.lastIndexOf('/') + 1) : undefined;
}

/** The `filter_metadata.sockmesh` entry of an envoy.config.core.v3.Metadata, as plain JSON ({} when absent). */
export function sockmeshMetadata(v: unknown, path: string): Record<string, PlainValue> {
  if (v === undefined || v === null) return {};
  const md = obj(v, path);
  if (md.filter_metadata == null) return {};
  const fm = obj(md.filter_metadata, `${path}.filter_metadata`);
  return fm.sockmesh == null ? {} : structToPlain(fm.sockmesh, `${path}.filter_metadata.sockmesh`);
}
