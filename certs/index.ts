/**
 * The certs module's public surface. Other modules import from here only: they get
 * SVIDs and trust bundles, TLS material (PEM) for their TLS contexts, verifiers and
 * the Workload API; CA keys and certificate encoding stay inside certs/.
 */
export {
  CertificateAuthority,
  DEFAULT_SVID_TTL_MS,
  type IssueOptions,
} from './ca/authority.js';
export { DEFAULT_CA_DIR, loadAuthority, resolveCaDir } from './ca/store.js';
export { type ConformanceRule, svidViolations, type Violation } from './conformance.js';
export {
  DelegatedIdentityClient,
  formatSelectors,
  kubernetesSelectors,
  type Selector,
} from './delegated-identity/client.js';
export {
  backoffDelayMs,
  caRotator,
  type RotatorOptions,
  renewalDelayMs,
  type SvidFetcher,
  SvidRotator,
} from './rotator.js';
export type { SvidListener, SvidSource } from './source.js';
export {
  checkSpiffeId,
  parseSpiffeId,
  parseTrustDomain,
  type SpiffeId,
  type WorkloadRef,
  workloadOf,
  workloadSpiffeId,
} from './spiffe-id.js';
export {
  bundlePem,
  isExpired,
  type SvidTlsMaterial,
  type SvidWire,
  svidFromWire,
  svidTlsMaterial,
  svidToWire,
  type TrustBundle,
  type X509Svid,
} from './svid.js';
export {
  chainFromPeerCertificate,
  createMtlsServer,
  type MtlsConnectOptions,
  type MtlsServerOptions,
  mtlsConnect,
  svidSecureContextOptions,
  verifyTlsPeer,
} from './tls.js';
export { type VerifyFailureCode, type VerifyOptions, type VerifyResult, verifyPeer } from './verify.js';
export { WorkloadApiClient, type X509Context, type X509ContextWatcher } from './workload-api/client.js';
export { ENDPOINT_ENV, endpointTarget, resolveEndpoint } from './workload-api/endpoint.js';
export {
  type CallerEntitlements,
  type Entitlement,
  RegistrationEntitlements,
  WorkloadEntitlements,
} from './workload-api/entitlements.js';
export { EmbeddedSvidProvider, type SvidProvider, type SvidSourcesById } from './workload-api/provider.js';
export {
  type CallerFacts,
  entitledSpiffeIds,
  parseRegistrations,
  type RegistrationEntry,
  RegistrationError,
  type RegistrationTable,
  type Selectors,
} from './workload-api/registrations.js';
export {
  CgroupWorkloadResolver,
  cgroup2MountPoint,
  cgroupV2PathOf,
  type WorkloadInfo,
  type WorkloadResolver,
} from './workload-api/resolver.js';
export {
  type WorkloadApiGrants,
  WorkloadApiServer,
  type WorkloadApiServerOptions,
} from './workload-api/server.js';
export {
  WorkloadApiSvidSource,
  WorkloadApiX509Source,
  type X509SourceStatus,
} from './workload-api/x509-source.js';
