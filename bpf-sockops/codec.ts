/**
 * Byte layouts of the BPF map keys and values, mirrored from include/sockmesh.h.
 * IPv4 addresses travel in network order, ports in host (little-endian) order;
 * the addon reports the C sizes so a drift between the two fails loudly at load.
 */
import { SockmeshError } from '../lib/errors.js';

export const TUPLE4_SIZE = 12;
export const TUPLE6_SIZE = 36;
export const ORIG_DST_SIZE = 8;
export const ORIG_DST6_SIZE = 20;
export const CONFIG_SIZE = 24;
export const CIDR4_KEY_SIZE = 8;
export const CIDR6_KEY_SIZE = 20;
export const COUNTER_SLOTS = 16;
export const POD_SIZE = 8;

/** Counter slots, in the order of `enum sm_counter`. */
export const COUNTER_NAMES = [
  'connectsRedirected',
  'connectionsTracked',
  'messagesRedirected',
  'fallbacks',
  'mapFull',
  'socketsAccelerated',
  'plaintextRefused',
  'backpressured',
  'inboundCaptured',
  'inboundRefused',
] as const;

export type CounterName = (typeof COUNTER_NAMES)[number];
export type Counters = Record<CounterName, bigint>;

/**
 * How a meshed pod treats inbound plaintext: `strict` accepts connections only
 * from the node proxy's address, loopback and itself; `permissive` from anyone.
 */
export type PodMode = 'strict' | 'permissive';

/** `struct sm_pod`: `enum sm_pod_mode` (1 = strict), then reserved flags. */
export function encodePod(mode: PodMode): Buffer {
  const b = Buffer.alloc(POD_SIZE);
  b.writeUInt32LE(mode === 'strict' ? 1 : 0, 0);
  return b;
}

export function decodePod(b: Buffer): PodMode {
  return b.readUInt32LE(0) === 1 ? 'strict' : 'permissive';
}

/** An IPv4 (dotted) or IPv6 (RFC 5952 text) address and a port. */
export interface Endpoint {
  ip: string;
  port: number;
}

export interface DataplaneConfig {
  /** The proxy's outbound listener; undefined disables capture. */
  proxy: Endpoint | undefined;
  /** The proxy's IPv6 address (same port); undefined leaves native IPv6 connects alone. */
  proxyIp6: string | undefined;
  /** sk_msg redirection between local peers. */
  acceleration: boolean;
}

export function isIpv6(ip: string): boolean {
  return ip.includes(':');
}

/** `::ffff:10.0.0.1` (how a dual-stack listener reports an IPv4 peer) -> `10.0.0.1`. */
export function unmapIpv4(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m?.[1] ?? ip;
}

export function parseIpv6(ip: string): Buffer {
  const bad = () => invalid(`not an IPv6 address: ${ip}`);
  if (!/^[0-9a-fA-F:.]+$/.test(ip)) throw bad();
  let text = ip;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const b = parseIpv4(v4[1]);
    tail.push(b.readUInt16BE(0), b.readUInt16BE(2));
    text = text.slice(0, -v4[1].length);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) throw bad();
  const groups = (h: string | undefined) => (h ? h.split(':') : []);
  const head = groups(halves[0]);
  const rest = groups(halves[1]);
  for (const g of [...head, ...rest]) if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
  const fill = 8 - tail.length - head.length - rest.length;
  if ((halves.length === 2 && fill < 1) || (halves.length === 1 && fill !== 0)) throw bad();
  const words = [
    ...head.map((g) => parseInt(g, 16)),
    ...Array<number>(halves.length === 2 ? fill : 0).fill(0),
    ...rest.map((g) => parseInt(g, 16)),
    ...tail,
  ];
  const out = Buffer.alloc(16);
  words.forEach((w, i) => {
    out.writeUInt16BE(w, i * 2);
  });
  return out;
}

/** RFC 5952 text, the form Node reports in socket.remoteAddress. */
export function formatIpv6(buf: Buffer, offset = 0): string {
  const words = Array.from({ length: 8 }, (_, i) => buf.readUInt16BE(offset + i * 2));
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${formatIpv4(buf, offset + 12)}`;
  }
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

export function parseIpv4(ip: string): Buffer {
  const parts = ip.split('.');
  if (parts.length !== 4) throw invalid(`not an IPv4 address: ${ip}`);
  const out = Buffer.alloc(4);
  parts.forEach((p, i) => {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw invalid(`not an IPv4 address: ${ip}`);
    out[i] = Number(p);
  });
  return out;
}

export function formatIpv4(buf: Buffer, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

export function checkPort(port: number, allowZero = false): number {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw invalid(`not a TCP port: ${port}`);
  }
  return port;
}

/** `struct sm_tuple4` for a connection seen from one end (src = that end). */
export function encodeTuple4(src: Endpoint, dst: Endpoint): Buffer {
  const b = Buffer.alloc(TUPLE4_SIZE);
  parseIpv4(src.ip).copy(b, 0);
  parseIpv4(dst.ip).copy(b, 4);
  b.writeUInt16LE(checkPort(src.port), 8);
  b.writeUInt16LE(checkPort(dst.port), 10);
  return b;
}

export function decodeTuple4(b: Buffer): { src: Endpoint; dst: Endpoint } {
  return {
    src: { ip: formatIpv4(b, 0), port: b.readUInt16LE(8) },
    dst: { ip: formatIpv4(b, 4), port: b.readUInt16LE(10) },
  };
}

export function encodeOrigDst(ep: Endpoint): Buffer {
  const b = Buffer.alloc(ORIG_DST_SIZE);
  parseIpv4(ep.ip).copy(b, 0);
  b.writeUInt16LE(checkPort(ep.port), 4);
  return b;
}

export function decodeOrigDst(b: Buffer): Endpoint {
  return { ip: formatIpv4(b, 0), port: b.readUInt16LE(4) };
}

export function encodeConfig(cfg: DataplaneConfig): Buffer {
  const b = Buffer.alloc(CONFIG_SIZE);
  if (cfg.proxy) {
    parseIpv4(cfg.proxy.ip).copy(b, 0);
    b.writeUInt16LE(checkPort(cfg.proxy.port, true), 4);
  }
  b[6] = cfg.acceleration ? 1 : 0;
  if (cfg.proxyIp6 !== undefined) {
    b[7] = 1;
    parseIpv6(cfg.proxyIp6).copy(b, 8);
  }
  return b;
}

export function decodeConfig(b: Buffer): DataplaneConfig {
  const port = b.readUInt16LE(4);
  const ip = formatIpv4(b, 0);
  return {
    proxy: ip === '0.0.0.0' || port === 0 ? undefined : { ip, port },
    proxyIp6: b[7] === 1 ? formatIpv6(b, 8) : undefined,
    acceleration: b[6] === 1,
  };
}

/** `struct sm_tuple6`: two 16-byte addresses, then host-order ports. */
export function encodeTuple6(src: Endpoint, dst: Endpoint): Buffer {
  const b = Buffer.alloc(TUPLE6_SIZE);
  parseIpv6(src.ip).copy(b, 0);
  parseIpv6(dst.ip).copy(b, 16);
  b.writeUInt16LE(checkPort(src.port), 32);
  b.writeUInt16LE(checkPort(dst.port), 34);
  return b;
}

export function decodeOrigDst6(b: Buffer): Endpoint {
  return { ip: formatIpv6(b, 0), port: b.readUInt16LE(16) };
}

export interface Cidr {
  family: 4 | 6;
  ip: string;
  prefixLength: number;
}

/** `10.0.0.0/8` or `fd00::/8` (a bare address is a host route); host bits are cleared. */
export function parseCidr(text: string): Cidr {
  const [ip = '', len, ...rest] = text.split('/');
  const family = isIpv6(ip) ? 6 : 4;
  const bits = family === 6 ? 128 : 32;
  if (rest.length > 0 || len === '') throw invalid(`not a CIDR: ${text}`);
  const prefixLength = len === undefined ? bits : Number(len);
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > bits) {
    throw invalid(`not a CIDR: ${text}`);
  }
  const raw = family === 6 ? parseIpv6(ip) : parseIpv4(ip);
  for (let i = 0; i < raw.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLength - i * 8));
    raw[i] = (raw[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return { family, ip: family === 6 ? formatIpv6(raw) : formatIpv4(raw), prefixLength };
}

/** `struct sm_cidr4_key` / `sm_cidr6_key`: prefix length in host order, then the address. */
export function encodeCidrKey(c: Cidr): Buffer {
  const addr = c.family === 6 ? parseIpv6(c.ip) : parseIpv4(c.ip);
  const b = Buffer.alloc(4 + addr.length);
  b.writeUInt32LE(c.prefixLength, 0);
  addr.copy(b, 4);
  return b;
}

export function decodeCidrKey(b: Buffer): Cidr {
  const family = b.length === CIDR6_KEY_SIZE ? 6 : 4;
  return {
    family,
    prefixLength: b.readUInt32LE(0),
    ip: family === 6 ? formatIpv6(b, 4) : formatIpv4(b, 4),
  };
}

export function formatCidr(c: Cidr): string {
  return `${c.ip}/${c.prefixLength}`;
}

export function encodePort(port: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(checkPort(port), 0);
  return b;
}

export function encodeU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b;
}

export function encodeU64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n, 0);
  return b;
}

/** Sum one per-CPU array slot: the value is `cpus` u64s, each padded to 8 bytes. */
export function sumPerCpu(value: Buffer, cpus: number): bigint {
  let total = 0n;
  for (let i = 0; i < cpus; i++) total += value.readBigUInt64LE(i * 8);
  return total;
}

export function emptyCounters(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0n])) as Counters;
}

function invalid(message: string): SockmeshError {
  return new SockmeshError('SOCKMESH_E_CONFIG', message, {
    hint: 'use dotted IPv4 (a.b.c.d), CIDRs as a.b.c.d/n',
  });
}
