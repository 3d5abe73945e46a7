export { type CandidateOptions, candidates, nodeOf } from './candidates.js';
export { type BalancerSettings, createLoadBalancer, type LbPolicy } from './create.js';
export { InFlight, LeastRequest } from './least-request.js';
export {
  DEFAULT_MAX_RING_SIZE,
  DEFAULT_MIN_RING_SIZE,
  hashKey,
  RingHash,
  type RingHashOptions,
} from './ring-hash.js';
export { RoundRobin } from './round-robin.js';
export {
  type EjectionView,
  type Endpoint,
  type EndpointMeta,
  type LoadBalancer,
  type Locality,
  NO_EJECTIONS,
  type PickContext,
} from './types.js';
