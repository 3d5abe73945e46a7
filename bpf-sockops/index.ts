/** The kernel dataplane: the only module that touches BPF file descriptors. */
export { ADDON_PATH, OBJ_DIR } from './addon.js';
export type { CounterName, Counters, DataplaneConfig, Endpoint, PodMode } from './codec.js';
export { COUNTER_NAMES } from './codec.js';
export type { DataplaneOptions, DataplaneStatus, EnrolOptions, Exclusions } from './dataplane.js';
export { detachPinned, INBOUND_PLAINTEXT_PORT, mapLayoutFingerprint, SockopsDataplane } from './dataplane.js';
export { OriginalDestinationMap } from './orig-dst.js';
export { PER_CONNECTION_MAPS, pinLayout } from './pins.js';
export type {
  KernelDecision,
  KernelPolicyStatus,
  KernelPolicyTable,
  KernelRule,
  KernelVerdict,
  PolicyCount,
} from './policy.js';
export { ANY_PORT, KernelPolicyMaps, PLAINTEXT_IDENTITY, POLICY_LIMITS } from './policy.js';
export { assertPreflight, evaluatePreflight, gatherPreflight } from './preflight.js';
export type { TcpConnection, TcpLeg, TcpPair, TcpPairHealth, TcpTagger, WorkloadRef } from './tcp-health.js';
export { TCP_LEGS, TcpHealthMaps, workloadId } from './tcp-health.js';
