/** Builds the balancer a cluster's lb_policy asks for. */
import type { CandidateOptions } from './candidates.js';
import { type InFlight, LeastRequest } from './least-request.js';
import { RingHash, type RingHashOptions } from './ring-hash.js';
import { RoundRobin } from './round-robin.js';
import type { Endpoint, LoadBalancer } from './types.js';

export type LbPolicy = LoadBalancer['policy'];

export interface BalancerSettings {
  policy: LbPolicy;
  ringHash?: RingHashOptions;
  /** LEAST_REQUEST choice_count (default 2). */
  choiceCount?: number;
}

export function createLoadBalancer(
  settings: BalancerSettings,
  endpoints: readonly Endpoint[],
  opts: CandidateOptions & { inFlight: InFlight; rand?: () => number },
): LoadBalancer {
  const rand = opts.rand ?? Math.random;
  switch (settings.policy) {
    case 'ROUND_ROBIN':
      return new RoundRobin(endpoints, opts, rand);
    case 'LEAST_REQUEST':
      return new LeastRequest(endpoints, opts, opts.inFlight, rand, settings.choiceCount ?? 2);
    case 'RING_HASH':
      return new RingHash(endpoints, opts.ejections, settings.ringHash, rand);
  }
}
