/** Shapes of the benchmark results, shared by the runner and the report. */
import type { ProcUsage } from './proc.js';
import type { Verdict } from './targets.js';

export interface HttpRow {
  /** Set when a round of this path failed (the row then shows the rounds that ran). */
  error?: string;
  path: string;
  label: string;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  addedP50: number | null;
  addedP90: number | null;
  addedP99: number | null;
  errors: number;
  achievedRps: number;
  sendLagP99: number;
  /** Per-round percentiles (the row shows their median). */
  rounds: { p50: number | null; p90: number | null; p99: number | null }[];
  proxies: (ProcUsage & { cpuSecPer1kReq: number })[];
}

export interface ThroughputRow {
  path: string;
  label: string;
  rps: number;
  ratio: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  errors: number;
  proxies: ProcUsage[];
  /** Requests per second per core of proxy CPU (both proxies together). */
  rpsPerProxyCore: number | null;
}

export interface BulkRow {
  error?: string;
  path: string;
  gbps: number;
  ratio: number | null;
  proxies: ProcUsage[];
}

export interface ScaleResult {
  idleConnections: number;
  activeConnections: number;
  openSeconds: number;
  failed: number;
  activeRttMs: { p50: number | null; p99: number | null };
  answered: number;
  sent: number;
  agents: {
    name: string;
    rssBeforeMiB: number;
    rssIdleMiB: number;
    /** Of rssIdleMiB: the agent's own (anonymous) memory and the shared, file-backed rest (the node executable). */
    rssIdleOwnMiB?: number;
    rssIdleSharedMiB?: number;
    rssActiveMiB: number;
    idleCores: number;
    activeCores: number;
  }[];
}

export interface HopRow {
  /** Who ping-pongs: `node` (event loops, what the proxy sees) or `c` (bench/hop/hop.c, the kernel path alone). */
  impl?: string;
  path: string;
  p50us: number;
  p99us: number;
  gbps: number;
}

export interface XdsRow {
  services: number;
  clients: number;
  translateMs: number;
  edsPushMs: number;
  rdsPushMs: number;
  /** Older name of newServicePushMs. */
  cdsPushMs?: number;
  newServicePushMs?: number;
  rssMiB: number;
}

export interface Machine {
  nproc: number;
  cpu: string;
  kernel: string;
  node: string;
  haproxy: string;
  /** The commit measured, from git or BENCH_COMMIT. */
  commit: string;
  loadavgAtStart: number[];
}

export interface Results {
  /** Each agent process right after start: the primary and its proxy workers. */
  agentProcesses?: { agent: string; pid: number; role: string; rssMiB: number }[];
  /** Mesh paths that did not answer before the measurements started. */
  brokenPaths?: string[];
  /** Each agent (primary + workers) after agentIdleSettleSeconds without traffic. */
  agentIdleRssMiB?: Record<string, number>;
  /** The same split: anonymous (heap, private) and file-backed (the node executable, shared). */
  agentIdleMemoryMiB?: Record<string, { rss: number; anon: number; file: number }>;
  agentIdleSettleSeconds?: number;
  http?: HttpRow[];
  throughput?: ThroughputRow[];
  bulk?: BulkRow[];
  scale?: ScaleResult;
  hop?: { rows: HopRow[]; params?: Record<string, unknown> };
  xds?: { rows: XdsRow[]; rounds?: number };
  /** bench/agent-upgrade.ts: its own report (bench/results/agent-upgrade.md renders it). */
  upgrade?: unknown;
  /** bench/kube-scale.ts: its own report (bench/results/kube-scale.md renders it). */
  kubeScale?: unknown;
}

export interface Report {
  command: string;
  startedAt: string;
  finishedAt: string;
  quick: boolean;
  scenarios: string[];
  machine: Machine;
  params: Record<string, number | string>;
  verdicts: Verdict[];
  results: Results;
}
