import type { Results } from './types.js';
/**
 * The targets from issue #8, and the verdict for a measured figure. Kept in one place so the
 * table, the JSON and the README quote the same numbers.
 */

export interface Target {
  id: string;
  what: string;
  /** Upper bound (`max`) or lower bound (`min`) the project aims at. */
  limit: number;
  kind: 'max' | 'min';
  unit: string;
  /** What the issue quotes for comparison (Istio ztunnel/waypoint, the Node prototype). */
  reference?: string;
}

export const TARGETS: Target[] = [
  {
    id: 'l4.vcpu',
    what: 'L4 tunnel: vCPU per proxy at 1000 rps, 1 KB',
    limit: 0.05,
    kind: 'max',
    unit: 'vCPU',
    reference: 'ztunnel 0.06; Node prototype ~0.03',
  },
  {
    id: 'l7.vcpu',
    what: 'L7: vCPU per proxy at 1000 rps, 1 KB',
    limit: 0.15,
    kind: 'max',
    unit: 'vCPU',
    reference: 'Envoy waypoint 0.25',
  },
  {
    id: 'l4.p90',
    what: 'L4: added p90 latency, two proxies + mTLS',
    limit: 0.15,
    kind: 'max',
    unit: 'ms',
    reference: 'two ztunnels 0.17; Node prototype +0.14',
  },
  {
    id: 'l4.p99',
    what: 'L4: added p99 latency',
    limit: 0.25,
    kind: 'max',
    unit: 'ms',
    reference: 'two ztunnels 0.20',
  },
  { id: 'l7.p90', what: 'L7: added p90 latency', limit: 0.3, kind: 'max', unit: 'ms' },
  { id: 'l7.p99', what: 'L7: added p99 latency', limit: 0.5, kind: 'max', unit: 'ms' },
  { id: 'rss.idle', what: 'agent RSS idle', limit: 64, kind: 'max', unit: 'MiB' },
  { id: 'rss.10k', what: 'agent RSS with 10 000 connections', limit: 256, kind: 'max', unit: 'MiB' },
  { id: 'l4.tput', what: 'L4 closed-loop throughput vs direct', limit: 0.6, kind: 'min', unit: 'x' },
  { id: 'l7.tput', what: 'L7 closed-loop throughput vs direct', limit: 0.4, kind: 'min', unit: 'x' },
  {
    id: 'skmsg.rtt',
    what: 'sk_msg hop RTT p50 below plain TCP (C workers when measured)',
    limit: 0.3,
    kind: 'min',
    unit: 'fraction',
  },
];

export interface Verdict {
  id: string;
  what: string;
  target: string;
  measured: number | null;
  unit: string;
  met: boolean | null;
  reference?: string;
}

export function verdict(id: string, measured: number | null | undefined): Verdict {
  const t = TARGETS.find((x) => x.id === id);
  if (!t) throw new Error(`unknown target ${id}`);
  const m = measured === undefined || measured === null || Number.isNaN(measured) ? null : measured;
  return {
    id,
    what: t.what,
    target: `${t.kind === 'max' ? '<=' : '>='} ${t.limit} ${t.unit}`,
    measured: m,
    unit: t.unit,
    met: m === null ? null : t.kind === 'max' ? m <= t.limit : m >= t.limit,
    ...(t.reference ? { reference: t.reference } : {}),
  };
}

/** Every target the results of a run can speak to. */
export function verdictsFor(results: Results): Verdict[] {
  const verdicts: Verdict[] = [];
  const http = results.http;
  if (http) {
    const row = (id: string) => http.find((r) => r.path === id);
    const maxProxy = (id: string) =>
      Math.max(...(row(id)?.proxies.map((p) => p.cpuSecPer1kReq) ?? [Number.NaN]));
    verdicts.push(verdict('l4.vcpu', maxProxy('sockmesh-l4')), verdict('l7.vcpu', maxProxy('sockmesh-l7')));
    verdicts.push(
      verdict('l4.p90', row('sockmesh-l4')?.addedP90),
      verdict('l4.p99', row('sockmesh-l4')?.addedP99),
    );
    verdicts.push(
      verdict('l7.p90', row('sockmesh-l7')?.addedP90),
      verdict('l7.p99', row('sockmesh-l7')?.addedP99),
    );
  }
  const idleRss = results.agentIdleRssMiB;
  if (idleRss) verdicts.push(verdict('rss.idle', Math.max(...Object.values(idleRss))));
  const scale = results.scale;
  if (scale) verdicts.push(verdict('rss.10k', Math.max(...scale.agents.map((a) => a.rssActiveMiB))));
  const tput = results.throughput;
  if (tput) {
    verdicts.push(verdict('l4.tput', tput.find((r) => r.path === 'sockmesh-l4')?.ratio));
    verdicts.push(verdict('l7.tput', tput.find((r) => r.path === 'sockmesh-l7')?.ratio));
  }
  const hop = results.hop?.rows;
  if (hop) {
    // The C workers (blocking read/write) measure the hop itself; Node's adds two event-loop turns.
    const impl = hop.some((r) => r.impl === 'c') ? 'c' : hop[0]?.impl;
    const tcp = hop.find((r) => r.impl === impl && /plain/.test(r.path));
    const on = hop.find((r) => r.impl === impl && /sk_msg on/.test(r.path));
    verdicts.push(verdict('skmsg.rtt', tcp && on ? 1 - on.p50us / tcp.p50us : null));
  }
  return verdicts;
}
