/** The parsed, validated form of a RouteConfiguration that the request path reads. */
import type { RetryPolicy } from '../retry/policy.js';
import type { StringMatcher } from './string-match.js';

export type PathMatch =
  | { kind: 'prefix'; value: string; caseSensitive: boolean }
  | { kind: 'path'; value: string; caseSensitive: boolean }
  | { kind: 'separated-prefix'; value: string; caseSensitive: boolean }
  | { kind: 'regex'; regex: RegExp };

export interface HeaderMatcher {
  /** Lowercase; pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) allowed. */
  name: string;
  test: { kind: 'present'; present: boolean } | { kind: 'string'; matcher: StringMatcher };
  invert: boolean;
  treatMissingAsEmpty: boolean;
}

export interface QueryParamMatcher {
  name: string;
  test: { kind: 'present' } | { kind: 'string'; matcher: StringMatcher };
}

export interface RouteMatch {
  path: PathMatch;
  headers: readonly HeaderMatcher[];
  query: readonly QueryParamMatcher[];
}

export type AppendAction =
  | 'APPEND_IF_EXISTS_OR_ADD'
  | 'ADD_IF_ABSENT'
  | 'OVERWRITE_IF_EXISTS_OR_ADD'
  | 'OVERWRITE_IF_EXISTS';

export interface HeaderToAdd {
  key: string;
  value: string;
  action: AppendAction;
  keepEmptyValue: boolean;
}

export interface HeaderMutations {
  add: readonly HeaderToAdd[];
  /** Lowercase names. */
  remove: readonly string[];
}

export interface ClusterWeight {
  name: string;
  weight: number;
  headers: HeaderMutations;
}

export interface WeightedClusters {
  clusters: readonly ClusterWeight[];
  /** Sum of the weights (always > 0). */
  total: number;
}

export type ClusterTarget =
  | { kind: 'cluster'; name: string }
  | { kind: 'weighted'; weighted: WeightedClusters };

export type HashPolicy =
  | { kind: 'header'; name: string; terminal: boolean }
  | { kind: 'query'; name: string; terminal: boolean }
  | { kind: 'source-ip'; terminal: boolean };

export interface RouteAction {
  target: ClusterTarget;
  /** Whole-request timeout; null when disabled (`0s`). Envoy's default is 15 s. */
  timeoutMs: number | null;
  /** Stream idle timeout for this route; undefined = the listener's. */
  idleTimeoutMs: number | undefined;
  retry: RetryPolicy | undefined;
  hashPolicy: readonly HashPolicy[];
}

export type RouteBehaviour =
  | { kind: 'forward'; action: RouteAction }
  | { kind: 'direct'; status: number; body: string | undefined };

/** The Gateway API kinds the control plane translates into routes. */
export type GatewayRouteKind = 'HTTPRoute' | 'GRPCRoute';

export interface Route {
  name: string | undefined;
  /** The kind of the Gateway API route it was translated from (route metadata), when it has one. */
  routeKind?: GatewayRouteKind | undefined;
  match: RouteMatch;
  behaviour: RouteBehaviour;
  headers: HeaderMutations;
}

export interface VirtualHost {
  name: string;
  domains: readonly string[];
  routes: readonly Route[];
  headers: HeaderMutations;
  retry: RetryPolicy | undefined;
}

/** Domain lookup tables, built once per config (Envoy's search order). */
export interface DomainIndex {
  exact: ReadonlyMap<string, VirtualHost>;
  /** `*.foo.com` / `*-bar.foo.com`: the part after `*`, longest first. */
  suffix: ReadonlyArray<readonly [string, VirtualHost]>;
  /** `foo.*`: the part before `*`, longest first. */
  prefix: ReadonlyArray<readonly [string, VirtualHost]>;
  any: VirtualHost | undefined;
}

export interface RouteConfig {
  name: string;
  virtualHosts: readonly VirtualHost[];
  headers: HeaderMutations;
  domains: DomainIndex;
}

/** Request headers as node delivers them: lowercase names. */
export type RequestHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

export interface HttpRequest {
  /** `:authority` / Host, possibly with a port. */
  authority: string;
  /** `:path`, including any query string. */
  path: string;
  method: string;
  headers: RequestHeaders;
  /** Decoded query parameters; parsed from `path` when omitted. */
  query?: ReadonlyMap<string, readonly string[]>;
}
