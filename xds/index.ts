/**
 * The xds module's public surface. Other modules import from here only.
 *
 * - Control plane: `ControlPlane` (+ `DirectorySource`, `KubernetesSource`, `AdminServer`).
 * - Agent side: `AdsClient`, and the resource-name constants it needs to find
 *   its listeners in the config it receives.
 * - Manifests: `buildModel` / `parseManifestText` for validation without a server.
 */
export {
  AdsClient,
  type AdsClientOptions,
  edsNames,
  routeNames,
  type XdsConfig,
} from './client/ads-client.js';
export { decodeResource, encodeResource, jsonToStruct, structToJson } from './codec.js';
export { buildModel, type ModelOptions, SUPPORTED_KINDS } from './model/build.js';
export { MESH_LABEL, MESH_LABEL_VALUE } from './model/kinds.js';
export type { MeshModel } from './model/types.js';
export {
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  HCM_TYPE,
  LISTENER_TYPE,
  NETWORK_RBAC_TYPE,
  type ProtoObject,
  type ResourceTypeUrl,
  ROUTE_TYPE,
  ROUTER_TYPE,
  TCP_PROXY_TYPE,
} from './protos.js';
export { AdminServer } from './server/admin.js';
export type { ApplyChange } from './server/apply.js';
export {
  ControlPlane,
  type ControlPlaneOptions,
  type ListenAddress,
  type ReloadResult,
  type TlsConfig,
} from './server/control-plane.js';
export { DirectorySource } from './sources/directory.js';
export {
  inClusterAvailable,
  inClusterConnection,
  type KubeConnection,
  loadKubeconfig,
} from './sources/kube/config.js';
export { CONTROLLER_NAME, FIELD_MANAGER } from './sources/kube/status.js';
export { KubernetesSource, type KubernetesSourceOptions } from './sources/kubernetes.js';
export type {
  AcceptancePolicy,
  ConfigError,
  ConfigSource,
  ObjectVerdict,
  SourceObject,
  SourceState,
} from './sources/source.js';
export { formatConfigError } from './sources/source.js';
export { parseManifestText } from './sources/yaml.js';
export {
  clusterName,
  INBOUND_LISTENER,
  OUTBOUND_LISTENER,
  OUTBOUND_PORT,
  PASSTHROUGH_CLUSTER,
  routeConfigName,
  serviceFqdn,
  spiffeId,
  TUNNEL_PORT,
} from './translate/names.js';
