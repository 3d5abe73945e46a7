/**
 * TCP health per workload pair (include/tcp-health.bpf.h): the agent tags the
 * connections it makes or accepts with the workloads they serve, the kernel
 * aggregates RTT, jitter, retransmits, RTOs and failures per pair, and this
 * reads the aggregate back. Workloads travel as 32-bit ids (a hash of
 * `namespace/workload`, so every agent and every restart agrees) whose names
 * are kept in a map next to the statistics.
 */
import { SockmeshError } from '../lib/errors.js';
import { BPF_ANY, type BpfAddon, loadAddon } from './addon.js';
import { checkPort, encodeTuple4, encodeU32, parseIpv4, TUPLE4_SIZE, unmapIpv4 } from './codec.js';
import { pinLayout, visible } from './pins.js';

/** Which hop of a meshed call a connection is (enum sm_tcp_leg). */
export const TCP_LEGS = ['unknown', 'tunnel', 'pod_proxy', 'proxy_pod'] as const;
export type TcpLeg = (typeof TCP_LEGS)[number];

export const TCP_PAIR_SIZE = 16;
export const TCP_STATS_SIZE = 64;
export const TCP_CFG_SIZE = 8;
export const TCP_WORKLOAD_NAME_SIZE = 128;
export const TCP_MAX_PAIRS = 4096;

export interface WorkloadRef {
  namespace: string;
  workload: string;
}

export interface TcpPair {
  source: WorkloadRef | undefined;
  destination: WorkloadRef | undefined;
  leg: TcpLeg;
}

/** One pair's kernel statistics (counters since the pair was first seen). */
export interface TcpPairHealth extends TcpPair {
  connections: number;
  failures: number;
  retransmits: number;
  rtos: number;
  rttSamples: number;
  /** Mean smoothed RTT over all samples, and at the latest sample (µs); 0 before any sample. */
  srttMeanUs: number;
  srttUs: number;
  /** Mean deviation of the RTT (the kernel's mdev: jitter), mean and latest (µs). */
  rttvarMeanUs: number;
  rttvarUs: number;
  /** Raw sums for rate()-based means in Prometheus. */
  srttSumUs: number;
  rttvarSumUs: number;
}

/** FNV-1a of `namespace/workload`; never 0 (0 means unknown). */
export function workloadId(ref: WorkloadRef): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(`${ref.namespace}/${ref.workload}`)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h === 0 ? 1 : h;
}

export function encodeTcpPair(ids: { source: number; destination: number; leg: TcpLeg }): Buffer {
  const b = Buffer.alloc(TCP_PAIR_SIZE);
  b.writeUInt32LE(ids.source >>> 0, 0);
  b.writeUInt32LE(ids.destination >>> 0, 4);
  b.writeUInt32LE(TCP_LEGS.indexOf(ids.leg), 8);
  return b;
}

export function decodeTcpPairIds(b: Buffer): { source: number; destination: number; leg: TcpLeg } {
  return {
    source: b.readUInt32LE(0),
    destination: b.readUInt32LE(4),
    leg: TCP_LEGS[b.readUInt32LE(8)] ?? 'unknown',
  };
}

export interface TcpStatsRaw {
  connections: bigint;
  failures: bigint;
  retransmits: bigint;
  rtos: bigint;
  rttSamples: bigint;
  srttSumUs: bigint;
  rttvarSumUs: bigint;
  srttUs: number;
  rttvarUs: number;
}

export function decodeTcpStats(b: Buffer): TcpStatsRaw {
  return {
    connections: b.readBigUInt64LE(0),
    failures: b.readBigUInt64LE(8),
    retransmits: b.readBigUInt64LE(16),
    rtos: b.readBigUInt64LE(24),
    rttSamples: b.readBigUInt64LE(32),
    srttSumUs: b.readBigUInt64LE(40),
    rttvarSumUs: b.readBigUInt64LE(48),
    srttUs: b.readUInt32LE(56),
    rttvarUs: b.readUInt32LE(60),
  };
}

/** Names the map keeps: `namespace/workload`, NUL-padded; longer ones are refused, never cut. */
export function encodeWorkloadName(ref: WorkloadRef): Buffer {
  const text = Buffer.from(`${ref.namespace}/${ref.workload}`);
  if (text.length >= TCP_WORKLOAD_NAME_SIZE) {
    throw new SockmeshError(
      'SOCKMESH_E_CONFIG',
      `workload name ${ref.namespace}/${ref.workload} is longer than ${TCP_WORKLOAD_NAME_SIZE - 1} bytes`,
      { hint: 'TCP health cannot name it; its pairs show as unknown' },
    );
  }
  const b = Buffer.alloc(TCP_WORKLOAD_NAME_SIZE);
  text.copy(b);
  return b;
}

export function decodeWorkloadName(b: Buffer): WorkloadRef | undefined {
  const end = b.indexOf(0);
  const text = b.subarray(0, end < 0 ? b.length : end).toString();
  const slash = text.indexOf('/');
  return slash > 0 ? { namespace: text.slice(0, slash), workload: text.slice(slash + 1) } : undefined;
}

export function summarize(pair: TcpPair, raw: TcpStatsRaw): TcpPairHealth {
  const samples = Number(raw.rttSamples);
  const mean = (sum: bigint) => (samples > 0 ? Math.round(Number(sum) / samples) : 0);
  return {
    ...pair,
    connections: Number(raw.connections),
    failures: Number(raw.failures),
    retransmits: Number(raw.retransmits),
    rtos: Number(raw.rtos),
    rttSamples: samples,
    srttMeanUs: mean(raw.srttSumUs),
    srttUs: raw.srttUs,
    rttvarMeanUs: mean(raw.rttvarSumUs),
    rttvarUs: raw.rttvarUs,
    srttSumUs: Number(raw.srttSumUs),
    rttvarSumUs: Number(raw.rttvarSumUs),
  };
}

/** IPv4 only for now: IPv6 connections are not measured (see docs/observability.md). */
function ipv4(ip: string | undefined): string | undefined {
  if (!ip) return undefined;
  const v = unmapIpv4(ip);
  return v.includes(':') ? undefined : v;
}

export interface TcpConnection {
  localIp: string | undefined;
  localPort: number | undefined;
  remoteIp: string | undefined;
  remotePort: number | undefined;
}

/** What the proxy needs to attribute its connections (TcpHealthMaps, or nothing when TCP health is off). */
export interface TcpTagger {
  tag(conn: TcpConnection, pair: TcpPair): (() => void) | undefined;
  untag(conn: TcpConnection): void;
  dial(localIp: string, remote: { ip: string; port: number }, pair: TcpPair): void;
}

/** The tuple key of a connection as `conn`'s end sees it; undefined if it cannot be measured (IPv6, closed). */
function tupleKey(conn: TcpConnection): Buffer | undefined {
  const localIp = ipv4(conn.localIp);
  const remoteIp = ipv4(conn.remoteIp);
  if (!localIp || !remoteIp || !conn.localPort || !conn.remotePort) return undefined;
  return encodeTuple4({ ip: localIp, port: conn.localPort }, { ip: remoteIp, port: conn.remotePort });
}

const TCP_HEALTH_MAPS = ['sm_tcp_tags', 'sm_tcp_pairs', 'sm_tcp_cfg', 'sm_tcp_workloads'] as const;
type TcpHealthMap = (typeof TCP_HEALTH_MAPS)[number];

/**
 * The agent's handle on the TCP health maps: tag connections, name workloads,
 * switch the callbacks on or off, read the aggregate. Synchronous map calls,
 * a few per connection (not per request).
 */
export class TcpHealthMaps implements TcpTagger {
  private readonly fds: Map<TcpHealthMap, number>;
  private readonly named = new Set<number>();
  private closed = false;
  /** Tags that could not be written (map full): those connections are not measured. */
  tagFailures = 0;

  private constructor(
    private readonly addon: BpfAddon,
    fds: Map<TcpHealthMap, number>,
    private readonly ownsFds: boolean,
  ) {
    this.fds = fds;
  }

  /** Opens the node's pinned maps (the agent must have loaded the dataplane); for proxy workers. */
  static open(bpffsDir: string): TcpHealthMaps {
    const addon = loadAddon();
    const pins = pinLayout(visible(bpffsDir).path);
    const fds = new Map<TcpHealthMap, number>();
    try {
      for (const m of TCP_HEALTH_MAPS) fds.set(m, addon.objGet(pins.map(m)));
    } catch (err) {
      for (const fd of fds.values()) addon.close(fd);
      throw new SockmeshError('SOCKMESH_E_BPF', `cannot open the TCP health maps under ${pins.mapsDir}`, {
        hint: 'load the dataplane first (SockopsDataplane.open or `sockmesh up`)',
        cause: err,
      });
    }
    return new TcpHealthMaps(addon, fds, true);
  }

  /** @internal shares fds the dataplane already holds (it closes them). */
  static fromFds(addon: BpfAddon, fds: Record<TcpHealthMap, number>): TcpHealthMaps {
    return new TcpHealthMaps(addon, new Map(Object.entries(fds) as [TcpHealthMap, number][]), false);
  }

  /** Whether new connections get the callbacks (existing ones keep theirs until they close). */
  setEnabled(on: boolean): void {
    const v = Buffer.alloc(TCP_CFG_SIZE);
    v.writeUInt32LE(on ? 1 : 0, 0);
    this.addon.mapUpdate(this.fd('sm_tcp_cfg'), encodeU32(0), v, BPF_ANY);
  }

  enabled(): boolean {
    const v = this.addon.mapLookup(this.fd('sm_tcp_cfg'), encodeU32(0), TCP_CFG_SIZE);
    return v !== null && v.readUInt32LE(0) === 1;
  }

  /** Records a workload's name under its id (idempotent). */
  name(ref: WorkloadRef): number {
    const id = workloadId(ref);
    if (this.named.has(id)) return id;
    this.addon.mapUpdate(this.fd('sm_tcp_workloads'), encodeU32(id), encodeWorkloadName(ref), BPF_ANY);
    this.named.add(id);
    return id;
  }

  private pairKey(pair: TcpPair): Buffer {
    return encodeTcpPair({
      source: pair.source ? this.name(pair.source) : 0,
      destination: pair.destination ? this.name(pair.destination) : 0,
      leg: pair.leg,
    });
  }

  /**
   * Attributes an open connection of this process (as its socket sees it) to
   * a pair; this end is the one measured. Returns an untag function, or
   * undefined if the connection cannot be measured (IPv6, closed, map full).
   */
  tag(conn: TcpConnection, pair: TcpPair): (() => void) | undefined {
    const key = tupleKey(conn);
    if (!key || !this.tryUpdate(key, pair)) return undefined;
    return () => this.untag(conn);
  }

  /** Measurement must never break the data path: a full tag map or a closed handle leaves the connection unmeasured. */
  private tryUpdate(key: Buffer, pair: TcpPair): boolean {
    if (this.closed) return false;
    try {
      this.addon.mapUpdate(this.fd('sm_tcp_tags'), key, this.pairKey(pair), BPF_ANY);
      return true;
    } catch {
      this.tagFailures++;
      return false;
    }
  }

  /** Drops a connection's tag (a connection that was never tagged is fine). */
  untag(conn: TcpConnection): void {
    const key = tupleKey(conn);
    if (!key || this.closed) return;
    try {
      this.addon.mapDelete(this.fd('sm_tcp_tags'), key);
    } catch {
      // the handle was closed under us: the tag map is bounded anyway
    }
  }

  /**
   * Attributes the next connect() from localIp to remote to a pair, so a
   * handshake that fails (the agent never learns its port) still counts as
   * that pair's failure. One dial tag per (local, remote): the latest wins.
   */
  dial(localIp: string, remote: { ip: string; port: number }, pair: TcpPair): void {
    const l = ipv4(localIp);
    const r = ipv4(remote.ip);
    if (!l || !r) return;
    const key = Buffer.alloc(TUPLE4_SIZE);
    parseIpv4(l).copy(key, 0);
    parseIpv4(r).copy(key, 4);
    key.writeUInt16LE(0, 8);
    key.writeUInt16LE(checkPort(remote.port), 10);
    this.tryUpdate(key, pair);
  }

  /** Tags currently held (connections open or not yet untagged, and dial tags). */
  tagCount(): number {
    return this.addon.mapKeys(this.fd('sm_tcp_tags'), TUPLE4_SIZE, 1 << 20).length;
  }

  /** Every pair the kernel has statistics for, with names resolved (unknown ids stay undefined). */
  read(): TcpPairHealth[] {
    const names = new Map<number, WorkloadRef | undefined>();
    const nameOf = (id: number): WorkloadRef | undefined => {
      if (id === 0) return undefined;
      if (!names.has(id)) {
        const v = this.addon.mapLookup(this.fd('sm_tcp_workloads'), encodeU32(id), TCP_WORKLOAD_NAME_SIZE);
        names.set(id, v ? decodeWorkloadName(v) : undefined);
      }
      return names.get(id);
    };
    const fd = this.fd('sm_tcp_pairs');
    const out: TcpPairHealth[] = [];
    for (const key of this.addon.mapKeys(fd, TCP_PAIR_SIZE, TCP_MAX_PAIRS * 2)) {
      const v = this.addon.mapLookup(fd, key, TCP_STATS_SIZE);
      if (!v) continue; // evicted between the two calls
      const ids = decodeTcpPairIds(key);
      out.push(
        summarize(
          { source: nameOf(ids.source), destination: nameOf(ids.destination), leg: ids.leg },
          decodeTcpStats(v),
        ),
      );
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsFds) for (const fd of this.fds.values()) this.addon.close(fd);
  }

  private fd(name: TcpHealthMap): number {
    if (this.closed) throw new SockmeshError('SOCKMESH_E_BPF', 'TCP health maps are closed');
    const fd = this.fds.get(name);
    if (fd === undefined) throw new SockmeshError('SOCKMESH_E_BPF', `map ${name} missing`);
    return fd;
  }
}
