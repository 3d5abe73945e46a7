/**
 * Resource bytes <-> sockmesh's decoded shape. On top of the proto-loader
 * shape (see protos.ts), `Metadata.filter_metadata` values are plain JSON
 * objects rather than google.protobuf.Struct, so the agent reads
 * `metadata.filter_metadata.sockmesh.podIp` directly. (protobufjs defines the
 * well-known Struct/Value types itself, in camelCase, whatever keepCase says.)
 */
import { decodeMessage, encodeMessage, type ProtoObject } from './protos.js';

type StructValue = { [k: string]: unknown };

export function jsonToStruct(obj: Record<string, unknown>): StructValue {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) fields[k] = jsonToValue(v);
  return { fields };
}

function jsonToValue(v: unknown): StructValue {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(jsonToValue) } };
  if (typeof v === 'object') return { structValue: jsonToStruct(v as Record<string, unknown>) };
  return { stringValue: String(v) };
}

export function structToJson(s: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = (s as { fields?: Record<string, unknown> } | undefined)?.fields ?? {};
  for (const [k, v] of Object.entries(fields)) out[k] = valueToJson(v);
  return out;
}

function valueToJson(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return null;
  const val = v as Record<string, unknown>;
  if ('stringValue' in val) return val.stringValue;
  if ('numberValue' in val) return val.numberValue;
  if ('boolValue' in val) return val.boolValue;
  if ('structValue' in val) return structToJson(val.structValue);
  if ('listValue' in val)
    return ((val.listValue as { values?: unknown[] } | undefined)?.values ?? []).map(valueToJson);
  return null;
}

/** Returns a copy of `obj` with every filter_metadata entry passed through `fn`. */
function mapFilterMetadata(obj: unknown, fn: (v: unknown) => unknown): unknown {
  if (Array.isArray(obj)) return obj.map((x) => mapFilterMetadata(x, fn));
  if (obj === null || typeof obj !== 'object' || Buffer.isBuffer(obj)) return obj;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    if (k === 'filter_metadata' && v !== null && typeof v === 'object') {
      const fm: Record<string, unknown> = {};
      for (const [ns, s] of Object.entries(v as Record<string, unknown>)) fm[ns] = fn(s);
      out[k] = fm;
    } else out[k] = mapFilterMetadata(v, fn);
  }
  return out;
}

export function encodeResource(typeUrl: string, resource: object): Buffer {
  return encodeMessage(
    typeUrl,
    mapFilterMetadata(resource, (v) => jsonToStruct(v as Record<string, unknown>)) as object,
  );
}

/** Turns a decoded proto object's Struct metadata into plain JSON. */
export function normalizeDecoded(obj: unknown): ProtoObject {
  return mapFilterMetadata(obj, structToJson) as ProtoObject;
}

export function decodeResource(typeUrl: string, bytes: Buffer | Uint8Array): ProtoObject {
  return normalizeDecoded(decodeMessage(typeUrl, bytes));
}
