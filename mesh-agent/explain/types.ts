/**
 * What an agent answers on `/explain/outbound` and `/explain/inbound` (port
 * 15020): its own live view of one connection, computed with the same code
 * the data path runs. `sockmesh explain` joins the source's and the
 * destination's answers with the control plane's; tools read the JSON.
 */

import type { GatewayRouteKind } from '../routing/types.js';

/** The HTTP request explained (what the source would send). */
export interface ExplainRequest {
  method: string;
  /** `:path`, query string included. */
  path: string;
  /** `:authority` / Host as the caller sends it (e.g. `reviews.shop:9080`). */
  authority: string;
  /** Lowercase names. */
  headers: Record<string, string>;
}

export type MtlsMode = 'strict' | 'permissive';

/** Is a pod in the mesh, as this agent sees it: config, cgroup, the kernel's membership map. */
export interface Membership {
  ip: string;
  /** `namespace/pod` when the control plane declares it a meshed pod of this node, else null. */
  pod: string | null;
  spiffeId: string | null;
  /** The namespace's mode as the config says. */
  mtls: MtlsMode | null;
  /** The pod's cgroup as the agent found it (null: not looked up or not found; `tried` says where). */
  cgroup: { dir: string | null; id: string | null; tried: string[] };
  /** The kernel's `sm_pods` entry for that cgroup: null when not enrolled. */
  enrolled: { mode: MtlsMode } | null;
}

export interface SourceSide extends Membership {
  /** The SVID the agent presents for this workload (the tunnel's client certificate); null when it holds none. */
  svid: { spiffeId: string; serial: string; notAfter: string } | null;
}

/** Will `cgroup/connect4` send the connection to the node proxy? */
export interface Capture {
  captured: boolean;
  /** One sentence: why (not). */
  reason: string;
  /** The proxy address connect4 rewrites to (the kernel's `sm_config`), null when unset. */
  proxy: string | null;
}

export interface ListenerMatch {
  /** `http` routes per request, `tcp` per connection, `detect` sniffs the first bytes, `passthrough` leaves it alone. */
  kind: 'http' | 'tcp' | 'detect' | 'passthrough';
  listener: string | null;
  chain: string | null;
  /** For passthrough: no-listener, no-filter-chain, original-dst-cluster. */
  reason: string | null;
}

export interface RouteCheck {
  /** The xDS route name (`<ns>/<httproute>/rule-<i>/match-<j>` for Gateway API routes). */
  name: string;
  /** The Gateway API route (`namespace/name`) and rule it comes from, when it has one. */
  httpRoute: string | null;
  /** That route's kind (route metadata): an HTTPRoute or a GRPCRoute. */
  routeKind: GatewayRouteKind | null;
  rule: number | null;
  /** The route's match, as text (`prefix / and header x-canary exact "true"`). */
  match: string;
  /** `not-reached`: an earlier route matched first. */
  result: 'matched' | 'no-match' | 'not-reached';
  /** For no-match: the first condition that failed and what the request had. */
  mismatch: string | null;
}

export interface WeightedTarget {
  cluster: string;
  /** `name.namespace` of the Service behind the cluster. */
  service: string;
  /** The weight the agent serves now (canary guard overrides included). */
  weight: number;
  /** weight / total. */
  share: number;
}

export type RouteOutcome =
  | {
      kind: 'forward';
      route: string;
      targets: WeightedTarget[];
      timeoutMs: number | null;
      retries: { attempts: number; perTryTimeoutMs: number | null } | null;
    }
  | { kind: 'respond'; status: number; reason: 'direct-response' | 'no-virtual-host' | 'no-route' };

export interface HttpRouting {
  routeConfig: string;
  virtualHost: string | null;
  routes: RouteCheck[];
  outcome: RouteOutcome;
}

export interface EndpointView {
  address: string;
  pod: string | null;
  node: string | null;
  version: string | null;
  /** The identity the endpoint must prove (its node presents it in the tunnel). */
  spiffeId: string | null;
  healthy: boolean;
  /** Ejected by outlier detection right now. */
  ejected: boolean;
  /** Among the endpoints a pick chooses from now (healthy, not ejected, same node first). */
  candidate: boolean;
  /** `same-node`: straight to the pod; `tunnel`: HTTP/2 CONNECT over mTLS to `tunnel`. */
  path: 'same-node' | 'tunnel';
  tunnel: string | null;
}

export interface BreakerView {
  limits: { connections: number; pending: number; requests: number; retries: number };
  /** In use now, in this agent's proxy; null when the proxy runs in worker processes. */
  inUse: { connections: number; pending: number; requests: number; retries: number } | null;
  /** Resources at their limit now (new requests there get 503 UO). */
  open: string[];
}

export interface ClusterView {
  name: string;
  service: string;
  lbPolicy: string;
  /** The endpoint choice rule in one sentence. */
  locality: string;
  connectTimeoutMs: number;
  breaker: BreakerView;
  outlier: {
    consecutive5xx: number;
    intervalMs: number;
    baseEjectionTimeMs: number;
    maxEjectionPercent: number;
    ejected: string[];
  } | null;
  endpoints: EndpointView[];
}

export interface OutboundExplanation {
  node: string;
  /** The xDS versions this answer was computed from. */
  xds: Record<string, string | undefined>;
  source: SourceSide;
  destination: { ip: string; port: number };
  capture: Capture;
  listener: ListenerMatch;
  /** HTTP (and detect) chains: how the request is routed. */
  http: HttpRouting | null;
  /** TCP (and detect) chains: the clusters of the TCP proxy. */
  tcp: { targets: WeightedTarget[] } | null;
  /** Every cluster a target names. */
  clusters: ClusterView[];
  /** A passthrough to a meshed pod's IP still goes through the mesh (mTLS) to that endpoint. */
  meshedPodAt: EndpointView | null;
}

export interface PolicyView {
  name: string;
  action: 'ALLOW' | 'DENY' | 'LOG';
  /** `network`: the chain's RBAC (every connection); `http`: per request. */
  layer: 'network' | 'http';
}

export interface InboundExplanation {
  node: string;
  xds: Record<string, string | undefined>;
  destination: Membership & { port: number; protocol: 'http' | 'tcp' };
  /** Who the caller is to this agent: a verified SPIFFE ID, or none (plaintext). */
  caller: { principal: string | null; namespace: string | null };
  /** For a plaintext caller (no SPIFFE ID): what happens before any policy. */
  plaintext: { verdict: 'dropped-in-kernel' | 'via-agent' | 'delivered'; reason: string } | null;
  authorization: {
    allowed: boolean;
    /** no-policies, allowed-by-policy, denied-by-policy, no-allow-match, unknown-destination. */
    reason: string;
    /** The deciding policy rule (`<ns>/<policy>/rule-<i>`), when one decides. */
    policy: string | null;
    /** Some policy reads method, path or headers: requests are checked one by one. */
    perRequest: boolean;
    policies: PolicyView[];
  };
}
