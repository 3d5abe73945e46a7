/**
 * The vocabulary the proxy uses to report what happened. These shapes are the
 * whole contract between the data path and telemetry: metric labels and
 * access-log fields are derived from them, nothing else.
 */

/** The calling side of a request or connection. Empty strings mean "unknown". */
export interface SourcePeer {
  workload: string;
  namespace: string;
  version: string;
  /** SPIFFE ID of the caller, e.g. `spiffe://cluster.local/ns/shop/sa/web`. */
  principal: string;
}

/** The called side, as routed (service) and as resolved (workload, version, cluster). */
export interface DestinationPeer {
  /** Service host the route matched, e.g. `reviews.shop.svc.cluster.local`; `-` for passthrough. */
  service: string;
  workload: string;
  namespace: string;
  version: string;
  /** xDS cluster name the request was sent to. */
  cluster: string;
}

export type MeshProtocol = 'http' | 'tcp';

/** Which proxy reported the event: the caller's node (outbound) or the callee's node (inbound). */
export type Reporter = 'source' | 'destination';

/**
 * Envoy-style response flags (a subset that the sockmesh proxy can produce).
 * Several flags are joined with `,`; `-` means none.
 */
export const ResponseFlag = {
  None: '-',
  /** Circuit breaker overflow (max connections/pending/requests). */
  UpstreamOverflow: 'UO',
  /** Could not connect to the upstream. */
  UpstreamConnectionFailure: 'UF',
  /** Upstream reset the connection / stream. */
  UpstreamConnectionTermination: 'UC',
  /** Retry limit reached (retry breaker or attempts). */
  UpstreamRetryLimitExceeded: 'URX',
  /** Request or per-try timeout. */
  UpstreamRequestTimeout: 'UT',
  /** No healthy upstream (all ejected or none). */
  NoHealthyUpstream: 'UH',
  /** No route matched. */
  NoRouteFound: 'NR',
  /** Denied by authorization policy. */
  UnauthorizedExternalService: 'UAEX',
  /** Downstream closed the connection before the response. */
  DownstreamConnectionTermination: 'DC',
  /** Idle timeout. */
  StreamIdleTimeout: 'SI',
} as const;
export type ResponseFlagValue = (typeof ResponseFlag)[keyof typeof ResponseFlag];

/**
 * One finished HTTP request (or TCP connection reported as a "request" with
 * code 0). Only the first block is used for metric labels; the optional
 * details go to the access log and are never labels.
 */
export interface RequestEvent {
  source: SourcePeer;
  destination: DestinationPeer;
  protocol: MeshProtocol;
  reporter: Reporter;
  /** HTTP status; 0 when no response was sent (e.g. connection failure at L4). */
  code: number;
  /** Envoy-style response flags, `-` when none (see {@link ResponseFlag}). */
  flags: string;
  durationMs: number;
  /** grpc-status of a gRPC call (from its trailers, or a trailers-only answer); undefined otherwise. */
  grpcStatus?: number | undefined;

  // Access log only (not labels: unbounded).
  /** Epoch ms when the request started; defaults to now - durationMs. */
  startTime?: number;
  method?: string;
  path?: string;
  authority?: string;
  route?: string;
  upstreamHost?: string;
  downstreamAddress?: string;
  bytesSent?: number;
  bytesReceived?: number;
  traceId?: string;
  spanId?: string;
}

/** Labels of a TCP connection; same peers as requests. */
export interface TcpEvent {
  source: SourcePeer;
  destination: DestinationPeer;
  reporter: Reporter;
}

export interface TcpCloseEvent extends TcpEvent {
  bytesSent: number;
  bytesReceived: number;
  /** Response flags for the connection (`UF`, `UAEX`, `-`, ...). Defaults to `-`. */
  flags?: string;
  /** Connection lifetime; also used for the access log. */
  durationMs?: number;

  // Access log only.
  startTime?: number;
  upstreamHost?: string;
  downstreamAddress?: string;
  connectionId?: string | number;
  traceId?: string;
}

/** Which breaker threshold overflowed. */
export type BreakerKind = 'connections' | 'pending' | 'requests' | 'retries';

/** The outlier detector's events, structurally (mesh-agent/outlier's OutlierEvent fits). */
export type OutlierEventLike =
  | { kind: 'ejected'; endpoint: string; type: string }
  | { kind: 'not-ejected'; endpoint: string; type: string; reason: string }
  | { kind: 'restored'; endpoint: string };

export interface AuthzDenial {
  /** SPIFFE ID of the denied caller, or `-` when it presented none. */
  sourcePrincipal: string;
  destinationWorkload: string;
  destinationNamespace: string;
  /** `namespace/name` of the policy that denied (or `default-deny`). */
  policy: string;
}

/**
 * A claim of identity the mesh refused or overwrote. `listener` is where: `tunnel` (15008:
 * handshake, SPIFFE checks, CONNECT), `inbound` (the destination side: requests delivered to
 * pods), `outbound` (15001, the capture listener). `reason` is a closed set: the TLS or
 * X509-SVID verdict code (`no-client-certificate`, `expired`, `untrusted-issuer`,
 * `several-uri-sans`, `wrong-trust-domain`, ...), `unknown-server-name`, `sni-mismatch`,
 * `forged-xfcc`, `not-captured`, `no-mesh-identity`.
 */
export interface IdentityRejection {
  listener: 'tunnel' | 'inbound' | 'outbound';
  reason: string;
}

/** What the agent reports about its control-plane session, read at scrape time. */
export interface XdsState {
  connected: boolean;
  /** Last ACKed version per type URL. */
  versions: Readonly<Record<string, string>>;
}

/** One SVID the agent holds, read at scrape time. */
export interface SvidInfo {
  spiffeId: string;
  /** Expiry (the certificate's notAfter). */
  notAfter: Date;
}

/** Kernel counters by name (e.g. `redirected`, `passthrough`), read at scrape time. */
export type BpfCounters = Readonly<Record<string, number | bigint>>;

/** One end of a kernel TCP health pair (`namespace/workload` as the mesh names it). */
/**
 * The kernel's TCP statistics for one (source workload, destination workload, leg), as
 * bpf-sockops reads them: counters since the pair was first seen, RTTs in µs.
 */
export type { TcpPairHealth as TcpHealthPair } from '../../bpf-sockops/tcp-health.js';

/** One policy's kernel verdict counters (bpf-sockops KernelPolicyMaps.counters). */
export interface KernelPolicyCount {
  policy: string;
  allowed: bigint;
  denied: bigint;
}
