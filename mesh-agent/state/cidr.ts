/** IPv4/IPv6 prefixes for filter chain matching (envoy.config.core.v3.CidrRange). */
import { isIP } from 'node:net';
import { decodeError, obj, optUintWrapper, str } from './wire.js';

export interface CidrPrefix {
  family: 4 | 6;
  /** The address as a 32- or 128-bit integer, already masked. */
  bits: bigint;
  length: number;
  text: string;
}

export function ipToBigInt(ip: string): { family: 4 | 6; bits: bigint } | undefined {
  const family = isIP(ip);
  if (family === 4) {
    const parts = ip.split('.').map(Number);
    return { family, bits: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  if (family !== 6) return undefined;
  let text = ip;
  // An embedded IPv4 tail (::ffff:10.0.0.1) becomes two hextets.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = ipToBigInt(v4[1])?.bits ?? 0n;
    text = `${text.slice(0, -v4[1].length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return { family, bits: groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g, 16)), 0n) };
}

function mask(family: 4 | 6, length: number): bigint {
  const width = family === 4 ? 32 : 128;
  return length === 0 ? 0n : ((1n << BigInt(length)) - 1n) << BigInt(width - length);
}

export function parseCidrRange(v: unknown, path: string): CidrPrefix {
  const c = obj(v, path);
  const addr = str(c.address_prefix, `${path}.address_prefix`);
  const ip = ipToBigInt(addr);
  if (!ip) throw decodeError(`${path}.address_prefix`, `not an IP address: ${JSON.stringify(addr)}`);
  const length = optUintWrapper(c.prefix_len, `${path}.prefix_len`) ?? 0;
  if (length > (ip.family === 4 ? 32 : 128))
    throw decodeError(`${path}.prefix_len`, `too long for IPv${ip.family}`);
  return { family: ip.family, bits: ip.bits & mask(ip.family, length), length, text: `${addr}/${length}` };
}

export function cidrContains(p: CidrPrefix, ip: { family: 4 | 6; bits: bigint }): boolean {
  return p.family === ip.family && (ip.bits & mask(p.family, p.length)) === p.bits;
}
