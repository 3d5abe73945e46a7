/**
 * Per destination cluster, what this agent's callers saw (reporter=source):
 * successes, errors (no response, 5xx, or a gRPC server-side failure: telemetry/outcome.ts) and how many finished within each
 * duration bound, cumulative. What the agent reports over LRS for canary guards.
 */
import { requestFailed } from './outcome.js';
import { REQUEST_DURATION } from './request-metrics.js';
import type { MetricsSnapshot } from './snapshot.js';

export interface ClusterOutcome {
  cluster: string;
  successes: number;
  errors: number;
  /** Duration bound (ms) -> requests that took at most that long. */
  fast: Map<number, number>;
}

export function clusterOutcomes(snapshot: MetricsSnapshot): ClusterOutcome[] {
  const out = new Map<string, ClusterOutcome>();
  for (const m of snapshot.metrics) {
    if (m.name !== REQUEST_DURATION || m.type !== 'histogram') continue;
    for (const [labels, h] of m.points) {
      if (labels.reporter !== 'source') continue;
      const cluster = String(labels.destination_cluster ?? '');
      if (cluster === '' || cluster === 'unknown') continue;
      let o = out.get(cluster);
      if (!o) {
        o = { cluster, successes: 0, errors: 0, fast: new Map() };
        out.set(cluster, o);
      }
      if (requestFailed(labels)) o.errors += h.count;
      else o.successes += h.count;
      let cumulative = 0;
      h.boundaries.forEach((le, i) => {
        cumulative += h.counts[i] ?? 0;
        o.fast.set(le, (o.fast.get(le) ?? 0) + cumulative);
      });
    }
  }
  return [...out.values()];
}
