/** Weighted cluster choice (the canary split), deterministic for a given `rand`. */
import type { ClusterTarget, ClusterWeight, WeightedClusters } from './types.js';

/**
 * Picks one cluster with probability weight / total. A zero weight is never
 * picked. `rand` returns a number in [0, 1).
 */
export function pickWeightedCluster(
  weighted: WeightedClusters,
  rand: () => number = Math.random,
): ClusterWeight {
  const r = Math.floor(rand() * weighted.total);
  let acc = 0;
  for (const c of weighted.clusters) {
    acc += c.weight;
    if (r < acc) return c;
  }
  // Only reachable if rand() returned 1 or more; fall back to the last non-zero entry.
  for (let i = weighted.clusters.length - 1; i >= 0; i--) {
    const c = weighted.clusters[i];
    if (c && c.weight > 0) return c;
  }
  throw new Error('unreachable: weighted clusters with zero total weight passed validation');
}

/** The cluster a route or TCP proxy sends this request/connection to. */
export function chooseCluster(
  target: ClusterTarget,
  rand: () => number = Math.random,
): { name: string; weighted: ClusterWeight | undefined } {
  if (target.kind === 'cluster') return { name: target.name, weighted: undefined };
  const c = pickWeightedCluster(target.weighted, rand);
  return { name: c.name, weighted: c };
}
