/**
 * The validated mesh model: what users declared, cross-checked and normalised.
 * Translation reads only this; it never sees YAML.
 */
import type { SourceLocation } from '../sources/source.js';
import type { CanaryGuard } from './canary.js';

export type Labels = Readonly<Record<string, string>>;

/** `namespace/name`, the key of every namespaced object. */
export type ObjectKey = string;

export function objectKey(namespace: string, name: string): ObjectKey {
  return `${namespace}/${name}`;
}

export interface MeshNode {
  name: string;
  /** Underlay address the node's tunnel listener (port 15008) is reached at. */
  address: string | undefined;
}

export interface Namespace {
  name: string;
  labels: Labels;
  /** `sockmesh.io/mesh: enabled`. */
  meshed: boolean;
  /**
   * `sockmesh.io/mtls`: `strict` (default) drops plaintext that did not come
   * through the node proxy; `permissive` lets the proxy take it (port 15006),
   * authorize it as an unauthenticated caller and deliver it.
   */
  mtlsMode: MtlsMode;
}

export type MtlsMode = 'strict' | 'permissive';

export type PortProtocol = 'http' | 'http2' | 'grpc' | 'tcp';

export interface ServicePort {
  name: string | undefined;
  port: number;
  /** A number, or a container port name resolved per pod. */
  targetPort: number | string;
  appProtocol: string | undefined;
  /** Derived from appProtocol (or the port name prefix, Istio style). */
  protocol: PortProtocol;
}

/** Istio's protocol names that mean "not HTTP": such a port is carried as TCP and never sniffed. */
const DECLARED_TCP = new Set(['tcp', 'tls', 'https', 'mongo', 'mysql', 'redis']);

/**
 * How the outbound proxy carries a Service port: `http` when appProtocol or
 * the port name says HTTP/h2c/gRPC, `tcp` when they name a non-HTTP protocol,
 * `detect` when they say nothing known (Istio's protocol sniffing: the first
 * bytes of each connection decide).
 */
export function portMode(p: ServicePort): 'http' | 'tcp' | 'detect' {
  if (p.protocol !== 'tcp') return 'http';
  const declared = (p.appProtocol ?? p.name?.split('-')[0] ?? '').toLowerCase();
  return DECLARED_TCP.has(declared) ? 'tcp' : 'detect';
}

export interface Service {
  namespace: string;
  name: string;
  /** IPv4 VIP, or undefined for headless / unset. */
  clusterIP: string | undefined;
  selector: Labels;
  ports: ServicePort[];
  origin: SourceLocation;
  /**
   * The Service's endpoints from its EndpointSlices, when the source provides
   * them (Kubernetes); absent: the selector over the declared Pods decides.
   */
  endpoints?: readonly SliceEndpoint[];
}

/** One endpoint of an EndpointSlice that points at a known Pod, with kube-proxy's conditions. */
export interface SliceEndpoint {
  /** `namespace/name` of the Pod (the slice's targetRef). */
  pod: ObjectKey;
  ip: string;
  /** Slice port name ('' when the Service port has no name) -> the pod port it resolved to. */
  ports: Readonly<Record<string, number>>;
  /** Conditions as written; an absent `ready` means ready, an absent `serving` means `ready` (API conventions). */
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

export interface Workload {
  namespace: string;
  name: string;
  labels: Labels;
  serviceAccount: string;
  node: string | undefined;
  ip: string | undefined;
  /** Named container ports, for named targetPorts. */
  namedPorts: Readonly<Record<string, number>>;
  /** `metadata.uid` (API server objects): the agent finds the pod's kubelet cgroup by it. */
  uid?: string | undefined;
  /** `status.qosClass`: which kubepods branch the cgroup is in (the agent tries every one without it). */
  qosClass?: 'Guaranteed' | 'Burstable' | 'BestEffort' | undefined;
}

export interface ServiceRef {
  namespace: string;
  name: string;
}

export type StringMatchType = 'Exact' | 'RegularExpression';
export type PathMatchType = 'Exact' | 'PathPrefix' | 'RegularExpression';

export interface HttpRouteMatch {
  path: { type: PathMatchType; value: string };
  headers: { type: StringMatchType; name: string; value: string }[];
  queryParams: { type: StringMatchType; name: string; value: string }[];
  method: string | undefined;
  /** A GRPCRoute method match (already in `path`): what gRPC route precedence ranks by. */
  grpc?: { service: string | undefined; method: string | undefined };
}

export interface BackendRef {
  service: ServiceRef;
  port: number;
  /** Gateway API weight: default 1, 0 allowed. */
  weight: number;
}

export interface HeaderModifier {
  set: { name: string; value: string }[];
  add: { name: string; value: string }[];
  remove: string[];
}

export interface HttpRouteRule {
  matches: HttpRouteMatch[];
  backends: BackendRef[];
  requestHeaderModifier: HeaderModifier | undefined;
  /** Milliseconds. */
  timeouts: { request: number | undefined; backendRequest: number | undefined };
}

export interface ParentRef {
  service: ServiceRef;
  /** Only this Service port, or every port when undefined. */
  port: number | undefined;
}

/** Which Gateway API kind a route of the HTTP model was written as. */
export type HttpRouteKind = 'HTTPRoute' | 'GRPCRoute';

export interface HttpRoute {
  /** A GRPCRoute is translated into this model; the kind names it in errors, status and explain. */
  kind: HttpRouteKind;
  namespace: string;
  name: string;
  parents: ParentRef[];
  rules: HttpRouteRule[];
  /** Declaration order, the last tie-breaker in route precedence. */
  order: number;
}

export interface TcpRoute {
  namespace: string;
  name: string;
  parents: ParentRef[];
  backends: BackendRef[];
  order: number;
}

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RING_HASH';

export interface TrafficPolicy {
  namespace: string;
  name: string;
  target: ServiceRef;
  connectionPool:
    | {
        maxConnections: number | undefined;
        maxPendingRequests: number | undefined;
        maxRequests: number | undefined;
        maxRetries: number | undefined;
      }
    | undefined;
  outlierDetection:
    | {
        consecutive5xx: number | undefined;
        consecutiveGatewayErrors: number | undefined;
        /** Milliseconds. */
        interval: number | undefined;
        baseEjectionTime: number | undefined;
        maxEjectionPercent: number | undefined;
      }
    | undefined;
  retries: { attempts: number; perTryTimeout: number | undefined; retryOn: string[] } | undefined;
  timeouts: { request: number | undefined; idle: number | undefined } | undefined;
  loadBalancer: { type: LbPolicy; hashHeader: string | undefined } | undefined;
}

export interface AuthzSource {
  /** SPIFFE IDs; `*` alone, or one `*` at the start (suffix match) or end (prefix match). */
  principals: string[];
  namespaces: string[];
}

export interface AuthzOperation {
  ports: number[];
  methods: string[];
  /** Exact paths, or prefix (`/api/*`) / suffix (`*.css`) wildcards. */
  paths: string[];
}

export interface AuthzRule {
  from: AuthzSource[];
  to: AuthzOperation[];
}

export interface AuthorizationPolicy {
  namespace: string;
  name: string;
  /** Pods in `namespace` matching these labels; with targetRef unset and selector unset, every pod. */
  selector: Labels | undefined;
  targetRef: ServiceRef | undefined;
  action: 'ALLOW' | 'DENY';
  rules: AuthzRule[];
}

export interface MeshModel {
  trustDomain: string;
  /** DNS suffix for service FQDNs (`svc.<clusterDomain>`). */
  clusterDomain: string;
  nodes: ReadonlyMap<string, MeshNode>;
  namespaces: ReadonlyMap<string, Namespace>;
  services: ReadonlyMap<ObjectKey, Service>;
  workloads: ReadonlyMap<ObjectKey, Workload>;
  httpRoutes: readonly HttpRoute[];
  tcpRoutes: readonly TcpRoute[];
  trafficPolicies: ReadonlyMap<ObjectKey, TrafficPolicy>;
  authorizationPolicies: readonly AuthorizationPolicy[];
  /** CanaryGuards (absent = none): which backend of a route is guarded, by which bounds. */
  canaryGuards?: readonly CanaryGuard[];
}
