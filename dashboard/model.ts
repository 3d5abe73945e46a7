/**
 * The live mesh view, computed from what the agents and the control plane
 * serve: each agent's Prometheus text and `/stats/config`, the control
 * plane's CanaryGuards and the routes it pushes. Pure: scrapes go in, one
 * snapshot comes out; rates, success and p99 are over a sliding window of
 * scrapes (counter deltas, so agents' lifetimes do not matter).
 */
import { requestFailed } from '../mesh-agent/telemetry/outcome.js';

/** One collection round, as the collector gathered it. */
export interface Scrape {
  /** ms since the epoch. */
  at: number;
  agents: Array<{
    node: string;
    /** Prometheus text of `/metrics`, or null when the agent did not answer. */
    metrics: string | null;
    /** `/stats/config`, or null. */
    status: { pods?: Array<{ pod: string; ip: string; spiffeId: string; mtls?: string }> } | null;
  }>;
  /** The control plane's `/v1/canary` guards (null when it did not answer). */
  guards: GuardInput[] | null;
  /** The route configurations the control plane pushes to the first node (`/v1/config`), for the weighted splits. */
  routes: unknown[] | null;
  /** The control plane's config version. */
  version: string | null;
}

export interface GuardInput {
  name: string;
  route: string;
  canary: string;
  baseline: string;
  phase: string;
  weight: number;
  writtenWeight: number;
  lastTransition?: { at: string; message: string; from: number; to: number };
  lastDecision?: { at: string; action: string; reason: string; message: string };
}

export interface WorkloadNode {
  /** `namespace/pod`. */
  id: string;
  namespace: string;
  name: string;
  node: string | null;
  meshed: boolean;
  spiffeId: string | null;
  mtls: string | null;
}

/** Kernel TCP health of a pair (`sockmesh_tcp_health_*`, every leg: tunnel, pod -> proxy, proxy -> pod). */
export interface TcpHealth {
  /** Smoothed RTT and its variance (jitter), µs: the largest over the pair's legs now. */
  srttUs: number;
  rttvarUs: number;
  /** Over the window. */
  retransmits: number;
  rtos: number;
  failures: number;
}

interface TcpTotals {
  srttUs: number;
  rttvarUs: number;
  retransmits: number;
  rtos: number;
  failures: number;
}

export interface TrafficEdge {
  source: string;
  destination: string;
  /** Requests per second over the window. */
  rps: number;
  /** Non-5xx share over the window; null without requests. */
  success: number | null;
  /** Upper bucket bound holding the 99th percentile (ms), over the window; null without requests. */
  p99Ms: number | null;
  /** Requests in the window. */
  requests: number;
  /** Of those, denied by authorization (403, response flag UAEX). */
  denied: number;
  /** Kernel TCP health for the pair, when the agents export it; else null. */
  tcp: TcpHealth | null;
}

export interface CanarySplit {
  /** `namespace/name` of the HTTPRoute or GRPCRoute. */
  httpRoute: string;
  routeKind: 'HTTPRoute' | 'GRPCRoute';
  rule: number;
  backends: Array<{
    cluster: string;
    service: string;
    /** Served weight, % (the guard's override included). */
    weight: number;
    /** Share of the requests counted by the callers' agents over the window, %; null without requests. */
    share: number | null;
    requests: number;
  }>;
  guard: {
    name: string;
    phase: string;
    weight: number;
    writtenWeight: number;
    message: string | null;
  } | null;
}

export interface Denial {
  /** The last time the count was seen to rise (ISO). */
  at: string;
  /** The caller's SPIFFE ID (`unknown` for a plaintext caller). */
  source: string;
  /** `namespace/pod`. */
  destination: string;
  /** The deciding policy rule, or `default-deny` (no ALLOW rule matched). */
  policy: string;
  /** Denials seen since the dashboard started. */
  count: number;
}

export interface DashboardSnapshot {
  at: string;
  windowSeconds: number;
  version: string | null;
  agents: Array<{ node: string; up: boolean }>;
  workloads: WorkloadNode[];
  edges: TrafficEdge[];
  splits: CanarySplit[];
  denials: Denial[];
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition -> samples (names filtered by `keep`). */
export function parseSamples(text: string, keep: (name: string) => boolean): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.lastIndexOf(' ');
    const name = brace >= 0 ? line.slice(0, brace) : line.slice(0, space);
    if (!keep(name)) continue;
    const labels: Record<string, string> = {};
    if (brace >= 0) {
      const body = line.slice(brace + 1, line.lastIndexOf('}'));
      for (const m of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
        labels[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
    }
    out.push({ name, labels, value: Number(line.slice(space + 1)) });
  }
  return out;
}

const REQUESTS = 'sockmesh_requests_total';
const BUCKETS = 'sockmesh_request_duration_milliseconds_bucket';
const DENIALS = 'sockmesh_authz_denials_total';
/** Kernel TCP health per workload pair, when the agents export it. */
const TCP_HEALTH = /^sockmesh_tcp_health_/;

/** Counters of one round, keyed for deltas. */
interface Totals {
  at: number;
  /** edge -> requests, ok, buckets (le -> count) */
  edges: Map<string, { requests: number; ok: number; denied: number; buckets: Map<number, number> }>;
  clusters: Map<string, number>;
  denials: Map<string, number>;
  tcp: Map<string, TcpTotals>;
}

const edgeKey = (src: string, dst: string) => `${src}\u0000${dst}`;

function workloadOf(ns: string | undefined, w: string | undefined): string {
  return !w || w === 'unknown' ? 'unknown (outside the mesh)' : `${ns}/${w}`;
}

function totalsOf(s: Scrape): Totals {
  const t: Totals = { at: s.at, edges: new Map(), clusters: new Map(), denials: new Map(), tcp: new Map() };
  for (const a of s.agents) {
    if (!a.metrics) continue;
    const samples = parseSamples(
      a.metrics,
      (n) => n === REQUESTS || n === BUCKETS || n === DENIALS || TCP_HEALTH.test(n),
    );
    for (const x of samples) {
      const l = x.labels;
      if (x.name === DENIALS) {
        const k = [
          l.source_principal ?? '-',
          `${l.destination_namespace}/${l.destination_workload}`,
          l.policy ?? '-',
        ].join('\u0000');
        t.denials.set(k, (t.denials.get(k) ?? 0) + x.value);
        continue;
      }
      if (TCP_HEALTH.test(x.name)) {
        if (!l.source_workload || !l.destination_workload) continue;
        const k = edgeKey(
          workloadOf(l.source_namespace, l.source_workload),
          workloadOf(l.destination_namespace, l.destination_workload),
        );
        const h = t.tcp.get(k) ?? { srttUs: 0, rttvarUs: 0, retransmits: 0, rtos: 0, failures: 0 };
        t.tcp.set(k, h);
        const metric = x.name.slice('sockmesh_tcp_health_'.length);
        if (metric === 'srtt_microseconds') h.srttUs = Math.max(h.srttUs, x.value);
        else if (metric === 'rttvar_microseconds') h.rttvarUs = Math.max(h.rttvarUs, x.value);
        else if (metric === 'retransmits_total') h.retransmits += x.value;
        else if (metric === 'rtos_total') h.rtos += x.value;
        else if (metric === 'failures_total') h.failures += x.value;
        continue;
      }
      // Each request once: the caller's agent counts it (reporter=source); a caller outside the
      // mesh (no SPIFFE ID) has no agent of its own, so the destination's count stands for it.
      const outside = l.source_principal === 'unknown' || !l.source_principal;
      if (l.reporter !== 'source' && !(l.reporter === 'destination' && outside)) continue;
      const k = edgeKey(
        workloadOf(l.source_namespace, l.source_workload),
        workloadOf(l.destination_namespace, l.destination_workload),
      );
      const e = t.edges.get(k) ?? { requests: 0, ok: 0, denied: 0, buckets: new Map<number, number>() };
      t.edges.set(k, e);
      if (x.name === REQUESTS) {
        e.requests += x.value;
        if (!requestFailed(l)) e.ok += x.value;
        if (l.response_flags === 'UAEX') e.denied += x.value;
        if (l.reporter === 'source' && l.destination_cluster)
          t.clusters.set(l.destination_cluster, (t.clusters.get(l.destination_cluster) ?? 0) + x.value);
      } else {
        const le = l.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(l.le);
        e.buckets.set(le, (e.buckets.get(le) ?? 0) + x.value);
      }
    }
  }
  return t;
}

function p99(before: Map<number, number> | undefined, after: Map<number, number>): number | null {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Number.POSITIVE_INFINITY) ?? 0) - (before?.get(Number.POSITIVE_INFINITY) ?? 0);
  if (total <= 0) return null;
  for (const le of bounds) if ((after.get(le) ?? 0) - (before?.get(le) ?? 0) >= 0.99 * total) return le;
  return null;
}

function num(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v && typeof v === 'object' && 'value' in v) return Number((v as { value: unknown }).value ?? 0);
  return Number(v ?? 0);
}

/** A weighted rule of a pushed route. */
export interface PushedSplit {
  httpRoute: string;
  /** From the route's metadata (`filter_metadata.sockmesh.kind`, set for a GRPCRoute). */
  routeKind: 'HTTPRoute' | 'GRPCRoute';
  rule: number;
  clusters: Array<{ name: string; weight: number }>;
}

/** The weighted rules among the pushed routes, from their xDS form. */
export function splitsOf(routes: readonly unknown[]): PushedSplit[] {
  const out = new Map<string, PushedSplit>();
  for (const rc of routes) {
    for (const vh of ((rc as { virtual_hosts?: unknown[] }).virtual_hosts ?? []) as Array<{
      routes?: unknown[];
    }>) {
      for (const r of (vh.routes ?? []) as Array<{
        name?: string;
        route?: { weighted_clusters?: { clusters?: unknown[] } };
        metadata?: { filter_metadata?: { sockmesh?: { kind?: unknown } } };
      }>) {
        const wc = r.route?.weighted_clusters?.clusters as
          | Array<{ name: string; weight: unknown }>
          | undefined;
        const m = r.name?.match(/^([^/]+\/[^/]+)\/rule-(\d+)/);
        if (!wc || wc.length < 2 || !m) continue;
        const key = `${m[1]}#${m[2]}`;
        if (!out.has(key))
          out.set(key, {
            httpRoute: m[1]!,
            routeKind:
              r.metadata?.filter_metadata?.sockmesh?.kind === 'GRPCRoute' ? 'GRPCRoute' : 'HTTPRoute',
            rule: Number(m[2]),
            clusters: wc.map((c) => ({ name: c.name, weight: num(c.weight) })),
          });
      }
    }
  }
  return [...out.values()];
}

/** `outbound|9080||reviews-v1.shop.svc.cluster.local` -> `reviews-v1.shop`. */
function serviceOf(cluster: string): string {
  return (cluster.split('|')[3] ?? cluster).split('.').slice(0, 2).join('.');
}

function tcpOf(now: TcpTotals | undefined, before: TcpTotals | undefined): TcpHealth | null {
  if (!now) return null;
  const d = (k: 'retransmits' | 'rtos' | 'failures') => Math.max(0, now[k] - (before?.[k] ?? 0));
  return {
    srttUs: now.srttUs,
    rttvarUs: now.rttvarUs,
    retransmits: d('retransmits'),
    rtos: d('rtos'),
    failures: d('failures'),
  };
}

/** Keeps the recent rounds and turns them into snapshots. */
export class MeshView {
  private readonly history: Totals[] = [];
  private readonly denials: Denial[] = [];

  constructor(
    private readonly windowMs = 10_000,
    private readonly maxDenials = 12,
  ) {}

  add(s: Scrape): DashboardSnapshot {
    const now = totalsOf(s);
    const prev = this.history.at(-1);
    if (prev) {
      for (const [k, v] of now.denials) {
        const d = v - (prev.denials.get(k) ?? 0);
        if (d <= 0) continue;
        const [source, destination, policy] = k.split('\u0000') as [string, string, string];
        const i = this.denials.findIndex(
          (x) => x.source === source && x.destination === destination && x.policy === policy,
        );
        const count = d + (i >= 0 ? this.denials[i]!.count : 0);
        if (i >= 0) this.denials.splice(i, 1);
        this.denials.unshift({ at: new Date(s.at).toISOString(), source, destination, policy, count });
      }
      this.denials.splice(this.maxDenials);
    }
    this.history.push(now);
    // Keep the newest round older than the window as the baseline of every delta.
    while (this.history.length > 2 && this.history[1]!.at <= s.at - this.windowMs) this.history.shift();
    const base = this.history.length > 1 ? this.history[0]! : undefined;
    const seconds = base ? Math.max(0.001, (now.at - base.at) / 1000) : 0;

    const workloads = new Map<string, WorkloadNode>();
    for (const a of s.agents)
      for (const p of a.status?.pods ?? []) {
        const [namespace = '', name = ''] = p.pod.split('/');
        workloads.set(p.pod, {
          id: p.pod,
          namespace,
          name,
          node: a.node,
          meshed: true,
          spiffeId: p.spiffeId,
          mtls: p.mtls ?? null,
        });
      }
    const edges: TrafficEdge[] = [];
    for (const [k, e] of now.edges) {
      const [source, destination] = k.split('\u0000') as [string, string];
      for (const id of [source, destination]) {
        if (workloads.has(id)) continue;
        const [namespace = '', name = id] = id.includes('/') ? id.split('/') : ['', id];
        workloads.set(id, { id, namespace, name, node: null, meshed: false, spiffeId: null, mtls: null });
      }
      const b = base?.edges.get(k);
      const requests = base ? Math.max(0, e.requests - (b?.requests ?? 0)) : 0;
      const ok = base ? Math.max(0, e.ok - (b?.ok ?? 0)) : 0;
      edges.push({
        source,
        destination,
        rps: base ? requests / seconds : 0,
        success: requests > 0 ? ok / requests : null,
        p99Ms: base && requests > 0 ? p99(b?.buckets, e.buckets) : null,
        requests,
        denied: base ? Math.max(0, e.denied - (b?.denied ?? 0)) : 0,
        tcp: tcpOf(now.tcp.get(k), base?.tcp.get(k)),
      });
    }
    const guards = s.guards ?? [];
    const splits: CanarySplit[] = splitsOf(s.routes ?? []).map((sp) => {
      const total = sp.clusters.reduce((n, c) => n + c.weight, 0) || 1;
      const counts = sp.clusters.map((c) =>
        base ? Math.max(0, (now.clusters.get(c.name) ?? 0) - (base.clusters.get(c.name) ?? 0)) : 0,
      );
      const all = counts.reduce((n, c) => n + c, 0);
      const g = guards.find((x) => x.route === sp.httpRoute);
      return {
        httpRoute: sp.httpRoute,
        routeKind: sp.routeKind,
        rule: sp.rule,
        backends: sp.clusters.map((c, i) => ({
          cluster: c.name,
          service: serviceOf(c.name),
          weight: Math.round((1000 * c.weight) / total) / 10,
          share: all > 0 ? Math.round((1000 * counts[i]!) / all) / 10 : null,
          requests: counts[i]!,
        })),
        guard: g
          ? {
              name: g.name,
              phase: g.phase,
              weight: g.weight,
              writtenWeight: g.writtenWeight,
              message: g.lastTransition?.message ?? g.lastDecision?.message ?? null,
            }
          : null,
      };
    });
    return {
      at: new Date(s.at).toISOString(),
      windowSeconds: Math.round(seconds * 10) / 10,
      version: s.version,
      agents: s.agents.map((a) => ({ node: a.node, up: a.metrics !== null })),
      workloads: [...workloads.values()].sort((a, b) => a.id.localeCompare(b.id)),
      edges: edges.sort((a, b) =>
        `${a.source} ${a.destination}`.localeCompare(`${b.source} ${b.destination}`),
      ),
      splits,
      denials: [...this.denials],
    };
  }
}
