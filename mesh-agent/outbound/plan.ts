/**
 * The seam between the outbound proxy (sockets, HTTP, tunnels) and the mesh's
 * decisions (xDS state, routing, balancing, breaking). The proxy asks; the
 * planner answers from the current config. Nothing here does I/O.
 */

export interface Endpoint {
  /** `ip:port`, stable across config updates (outlier and in-flight state hang off it). */
  key: string;
  ip: string;
  port: number;
  node: string;
  /** On this node: reached directly (sk_msg path), never through the tunnel. */
  local: boolean;
  /** `ip:15008` of the endpoint's node. */
  tunnelAddress: string | undefined;
  /** The workload identity the endpoint must prove. */
  spiffeId: string | undefined;
  version: string | undefined;
  workload: string | undefined;
  namespace: string | undefined;
}

export type BreakerKind = 'connection' | 'pending' | 'request' | 'retry';

/** Envoy-style response flags, so access logs read like Envoy's. */
export type ResponseFlag = '-' | 'UO' | 'UF' | 'URX' | 'UT' | 'NR' | 'UAEX' | 'UH' | 'UC' | 'DC' | 'UR';

export type Outcome =
  /** grpcStatus: the status of a trailers-only gRPC answer (HTTP 200). */
  | { kind: 'status'; status: number; grpcStatus?: number | undefined }
  | { kind: 'connect-failure' }
  | { kind: 'reset' }
  | { kind: 'timeout' }
  | { kind: 'success' };

/** A cluster as the proxy uses it: pick, guard, report. */
export interface UpstreamCluster {
  readonly name: string;
  /** A healthy endpoint by the cluster's LB policy; null when none is available. */
  pick(hashKey?: string): Endpoint | null;
  /** Reserves breaker capacity; returns a release function, or null on overflow. */
  tryAcquire(kind: BreakerKind): (() => void) | null;
  /** Feeds outlier detection and least-request accounting. */
  report(ep: Endpoint, outcome: Outcome): void;
  /** Marks a request in flight on ep until the returned function is called. */
  track(ep: Endpoint): () => void;
  readonly connectTimeoutMs: number;
  /** For metrics: the Service and version behind the cluster. */
  readonly service: string;
  readonly version: string | undefined;
}

export interface RetryPlan {
  /** Attempts after the first. */
  numRetries: number;
  perTryTimeoutMs: number | undefined;
  shouldRetry(outcome: Outcome): boolean;
  /** Delay before retry number `n` (1-based). */
  backoffMs(n: number): number;
}

export interface HttpRequestView {
  /** The caller's pod IP (source-ip hash policies). */
  sourceIp: string;
  authority: string;
  path: string;
  method: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

export type RouteDecision =
  | { kind: 'reject'; status: number; body: string; flag: ResponseFlag }
  | {
      kind: 'forward';
      cluster: UpstreamCluster;
      /** Whole-request deadline (ms), if any. */
      timeoutMs: number | undefined;
      idleTimeoutMs: number | undefined;
      retry: RetryPlan | undefined;
      /** The upstream request headers: the route's header mutations applied to the incoming ones. */
      headers: Record<string, string | string[]>;
      /** Ring-hash key from the route's hash policy. */
      hashKey: string | undefined;
      routeName: string;
    };

export interface HttpPlan {
  kind: 'http';
  service: string;
  route(req: HttpRequestView): RouteDecision;
}

export interface TcpPlan {
  kind: 'tcp';
  service: string;
  cluster(): UpstreamCluster | null;
  idleTimeoutMs: number | undefined;
}

export type OutboundPlan =
  | HttpPlan
  | TcpPlan
  /**
   * The Service port does not declare its protocol: the first bytes choose
   * between the two (HTTP/1.1 or h2c -> http, anything else or silence -> tcp).
   */
  | { kind: 'detect'; http: HttpPlan; tcp: TcpPlan }
  /** No Service owns the address: go to the original destination as is. */
  | { kind: 'passthrough' };

export interface OutboundPlanner {
  plan(origIp: string, origPort: number): OutboundPlan;
  /** A meshed workload at this address (for passthrough to a pod IP, which still goes through mTLS). */
  endpointAt(ip: string, port: number): Endpoint | undefined;
}
