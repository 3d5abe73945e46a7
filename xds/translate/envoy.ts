/** Small builders for recurring Envoy v3 message shapes (decoded form). */
import type { ProtoObject } from '../protos.js';

export type Json = ProtoObject;

export function u32(value: number): { value: number } {
  return { value };
}

/** google.protobuf.Duration from milliseconds. */
export function duration(ms: number): { seconds: string; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

export function adsConfigSource(): Json {
  return { ads: {}, resource_api_version: 'V3' };
}

export function cidr(ip: string): Json {
  return { address_prefix: ip, prefix_len: u32(32) };
}

export function socketAddress(ip: string, port: number): Json {
  return { socket_address: { address: ip, port_value: port } };
}

/** Metadata in sockmesh's plain form; the codec turns it into google.protobuf.Struct. */
export function sockmeshMetadata(fields: Record<string, unknown>): Json {
  const clean: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) clean[k] = v;
  return { filter_metadata: { sockmesh: clean } };
}
