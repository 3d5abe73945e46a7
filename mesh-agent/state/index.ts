export { type CidrPrefix, cidrContains, ipToBigInt, parseCidrRange } from './cidr.js';
export {
  type ClusterSettings,
  DEFAULT_CONNECT_TIMEOUT_MS,
  type DiscoveryType,
  parseCluster,
} from './cluster.js';
export { type LoadAssignment, parseEndpoints } from './endpoints.js';
export {
  type ChainAction,
  DEFAULT_TCP_IDLE_TIMEOUT_MS,
  type FilterChain,
  type HttpManager,
  type ListenerConfig,
  parseListener,
  selectFilterChain,
  type TcpProxy,
} from './listener.js';
export {
  type InboundMatch,
  MeshState,
  type MeshStateOptions,
  MeshStateStore,
  type OutboundMatch,
  type ResourceSet,
  type XdsSnapshot,
} from './mesh-state.js';
export { validateResources } from './validate.js';
export { decodeError, type PlainValue, sockmeshMetadata, structToPlain } from './wire.js';
