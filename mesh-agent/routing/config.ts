/** Decodes envoy.config.route.v3.RouteConfiguration into the routing types. */
import { parseRetryPolicy } from '../retry/policy.js';
import {
  decodeError,
  list,
  obj,
  optBool,
  optBoolWrapper,
  optDurationMs,
  optEnum,
  optStr,
  optUint,
  optUintWrapper,
  sockmeshMetadata,
  str,
  type Wire,
} from '../state/wire.js';
import { parseRegexMatcher, parseStringMatcher } from './string-match.js';
import type {
  AppendAction,
  ClusterTarget,
  ClusterWeight,
  DomainIndex,
  GatewayRouteKind,
  HashPolicy,
  HeaderMatcher,
  HeaderMutations,
  HeaderToAdd,
  PathMatch,
  QueryParamMatcher,
  Route,
  RouteAction,
  RouteBehaviour,
  RouteConfig,
  RouteMatch,
  VirtualHost,
} from './types.js';

/** Envoy's route timeout when the route does not set one. */
export const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;

export function parseRouteConfiguration(v: unknown, path = 'RouteConfiguration'): RouteConfig {
  const rc = obj(v, path);
  const name = optStr(rc.name, `${path}.name`) ?? '';
  const at = name ? `RouteConfiguration ${JSON.stringify(name)}` : path;
  const virtualHosts = list(rc.virtual_hosts, `${at}.virtual_hosts`).map((vh, i) =>
    parseVirtualHost(vh, `${at}.virtual_hosts[${i}]`),
  );
  return {
    name,
    virtualHosts,
    headers: parseHeaderMutations(rc, at),
    domains: indexDomains(virtualHosts, at),
  };
}

function parseVirtualHost(v: unknown, path: string): VirtualHost {
  const vh = obj(v, path);
  const domains = list(vh.domains, `${path}.domains`).map((d, i) =>
    str(d, `${path}.domains[${i}]`).toLowerCase(),
  );
  if (domains.length === 0) throw decodeError(`${path}.domains`, 'a virtual host needs at least one domain');
  return {
    name: optStr(vh.name, `${path}.name`) ?? '',
    domains,
    routes: list(vh.routes, `${path}.routes`).map((r, i) => parseRoute(r, `${path}.routes[${i}]`)),
    headers: parseHeaderMutations(vh, path),
    retry: vh.retry_policy == null ? undefined : parseRetryPolicy(vh.retry_policy, `${path}.retry_policy`),
  };
}

function indexDomains(vhosts: readonly VirtualHost[], path: string): DomainIndex {
  const exact = new Map<string, VirtualHost>();
  const suffix: Array<[string, VirtualHost]> = [];
  const prefix: Array<[string, VirtualHost]> = [];
  let any: VirtualHost | undefined;
  const seen = new Set<string>();
  vhosts.forEach((vh, i) => {
    for (const d of vh.domains) {
      if (seen.has(d)) {
        throw decodeError(`${path}.virtual_hosts[${i}].domains`, `domain ${JSON.stringify(d)} is used twice`);
      }
      seen.add(d);
      if (d === '*') any = vh;
      else if (d.startsWith('*')) suffix.push([d.slice(1), vh]);
      else if (d.endsWith('*')) prefix.push([d.slice(0, -1), vh]);
      else if (d.includes('*')) {
        throw decodeError(`${path}.virtual_hosts[${i}].domains`, `wildcard only allowed at either end: ${d}`);
      } else exact.set(d, vh);
    }
  });
  const longestFirst = (a: [string, VirtualHost], b: [string, VirtualHost]): number =>
    b[0].length - a[0].length;
  return { exact, suffix: suffix.sort(longestFirst), prefix: prefix.sort(longestFirst), any };
}

const UNSUPPORTED_MATCH = [
  'grpc',
  'runtime_fraction',
  'dynamic_metadata',
  'tls_context',
  'filter_state',
  'connect_matcher',
  'path_match_policy',
];
const UNSUPPORTED_ACTION = ['redirect', 'filter_action', 'non_forwarding_action'];

function parseRoute(v: unknown, path: string): Route {
  const r = obj(v, path);
  for (const k of UNSUPPORTED_ACTION) {
    if (r[k] != null) throw decodeError(`${path}.${k}`, `route action ${k} is not supported by sockmesh`);
  }
  let behaviour: RouteBehaviour;
  if (r.route != null) {
    behaviour = { kind: 'forward', action: parseRouteAction(r.route, `${path}.route`) };
  } else if (r.direct_response != null) {
    behaviour = parseDirectResponse(r.direct_response, `${path}.direct_response`);
  } else {
    throw decodeError(path, 'a route needs route or direct_response');
  }
  return {
    name: optStr(r.name, `${path}.name`),
    routeKind: routeKindOf(r.metadata, `${path}.metadata`),
    match: parseRouteMatch(r.match, `${path}.match`),
    behaviour,
    headers: parseHeaderMutations(r, path),
  };
}

/** From the control plane's route metadata: `httpRoute` names the route, `kind` a GRPCRoute. */
function routeKindOf(v: unknown, path: string): GatewayRouteKind | undefined {
  const md = sockmeshMetadata(v, path);
  if (md.kind === 'GRPCRoute') return 'GRPCRoute';
  return md.httpRoute === undefined ? undefined : 'HTTPRoute';
}

function parseDirectResponse(v: unknown, path: string): RouteBehaviour {
  const d = obj(v, path);
  const status = optUint(d.status, `${path}.status`, 599);
  if (status === undefined || status < 200) throw decodeError(`${path}.status`, 'must be 200..599');
  let body: string | undefined;
  if (d.body != null) {
    const b = obj(d.body, `${path}.body`);
    if (b.inline_string != null) body = str(b.inline_string, `${path}.body.inline_string`);
    else if (typeof b.inline_bytes === 'string')
      body = Buffer.from(b.inline_bytes, 'base64').toString('utf8');
    else if (b.inline_bytes instanceof Uint8Array) body = Buffer.from(b.inline_bytes).toString('utf8');
    else throw decodeError(`${path}.body`, 'only inline_string and inline_bytes bodies are supported');
  }
  return { kind: 'direct', status, body };
}

export function parseRouteMatch(v: unknown, path: string): RouteMatch {
  const m = obj(v, path);
  for (const k of UNSUPPORTED_MATCH) {
    if (m[k] != null) throw decodeError(`${path}.${k}`, `route match on ${k} is not supported by sockmesh`);
  }
  const caseSensitive = optBoolWrapper(m.case_sensitive, `${path}.case_sensitive`) ?? true;
  let pathMatch: PathMatch;
  const fold = (s: string): string => (caseSensitive ? s : s.toLowerCase());
  if (m.prefix != null)
    pathMatch = { kind: 'prefix', value: fold(str(m.prefix, `${path}.prefix`)), caseSensitive };
  else if (m.path != null)
    pathMatch = { kind: 'path', value: fold(str(m.path, `${path}.path`)), caseSensitive };
  else if (m.path_separated_prefix != null) {
    const p = str(m.path_separated_prefix, `${path}.path_separated_prefix`);
    if (p.endsWith('/') || /[?#]/.test(p)) {
      throw decodeError(`${path}.path_separated_prefix`, 'must not end with / or contain ? or #');
    }
    pathMatch = { kind: 'separated-prefix', value: fold(p), caseSensitive };
  } else if (m.safe_regex != null) {
    pathMatch = { kind: 'regex', regex: parseRegexMatcher(m.safe_regex, `${path}.safe_regex`) };
  } else {
    throw decodeError(path, 'expected one of prefix, path, safe_regex, path_separated_prefix');
  }
  return {
    path: pathMatch,
    headers: list(m.headers, `${path}.headers`).map((h, i) => parseHeaderMatcher(h, `${path}.headers[${i}]`)),
    query: list(m.query_parameters, `${path}.query_parameters`).map((q, i) =>
      parseQueryMatcher(q, `${path}.query_parameters[${i}]`),
    ),
  };
}

/** envoy.config.route.v3.HeaderMatcher, including the deprecated *_match shorthands. */
export function parseHeaderMatcher(v: unknown, path: string): HeaderMatcher {
  const h = obj(v, path);
  const name = str(h.name, `${path}.name`).toLowerCase();
  if (name === '') throw decodeError(`${path}.name`, 'must not be empty');
  const base = {
    name,
    invert: optBool(h.invert_match, `${path}.invert_match`) ?? false,
    treatMissingAsEmpty:
      optBool(h.treat_missing_header_as_empty, `${path}.treat_missing_header_as_empty`) ?? false,
  };
  if (h.string_match != null) {
    return {
      ...base,
      test: { kind: 'string', matcher: parseStringMatcher(h.string_match, `${path}.string_match`) },
    };
  }
  if (h.present_match != null) {
    return {
      ...base,
      test: { kind: 'present', present: optBool(h.present_match, `${path}.present_match`) ?? false },
    };
  }
  const legacy: Array<[string, string]> = [
    ['exact_match', 'exact'],
    ['prefix_match', 'prefix'],
    ['suffix_match', 'suffix'],
    ['contains_match', 'contains'],
  ];
  for (const [field, kind] of legacy) {
    if (h[field] != null) {
      const matcher = parseStringMatcher({ [kind]: h[field] }, `${path}.${field}`);
      return { ...base, test: { kind: 'string', matcher } };
    }
  }
  if (h.safe_regex_match != null) {
    const matcher = parseStringMatcher({ safe_regex: h.safe_regex_match }, `${path}.safe_regex_match`);
    return { ...base, test: { kind: 'string', matcher } };
  }
  if (h.range_match != null)
    throw decodeError(`${path}.range_match`, 'range_match is not supported by sockmesh');
  // No specifier: Envoy matches on presence.
  return { ...base, test: { kind: 'present', present: true } };
}

function parseQueryMatcher(v: unknown, path: string): QueryParamMatcher {
  const q = obj(v, path);
  const name = str(q.name, `${path}.name`);
  if (q.string_match != null) {
    return {
      name,
      test: { kind: 'string', matcher: parseStringMatcher(q.string_match, `${path}.string_match`) },
    };
  }
  if (optBool(q.present_match, `${path}.present_match`) === true) return { name, test: { kind: 'present' } };
  throw decodeError(path, 'expected string_match or present_match: true');
}

function parseRouteAction(v: unknown, path: string): RouteAction {
  const a = obj(v, path);
  let target: ClusterTarget;
  if (a.cluster != null) {
    const name = str(a.cluster, `${path}.cluster`);
    if (name === '') throw decodeError(`${path}.cluster`, 'must not be empty');
    target = { kind: 'cluster', name };
  } else if (a.weighted_clusters != null) {
    target = {
      kind: 'weighted',
      weighted: parseWeightedClusters(a.weighted_clusters, `${path}.weighted_clusters`),
    };
  } else {
    throw decodeError(
      path,
      'expected cluster or weighted_clusters (cluster_header and others are not supported)',
    );
  }
  const timeout = optDurationMs(a.timeout, `${path}.timeout`);
  return {
    target,
    timeoutMs: timeout === undefined ? DEFAULT_ROUTE_TIMEOUT_MS : timeout === 0 ? null : timeout,
    idleTimeoutMs: optDurationMs(a.idle_timeout, `${path}.idle_timeout`),
    retry: a.retry_policy == null ? undefined : parseRetryPolicy(a.retry_policy, `${path}.retry_policy`),
    hashPolicy: list(a.hash_policy, `${path}.hash_policy`).map((h, i) =>
      parseHashPolicy(h, `${path}.hash_policy[${i}]`),
    ),
  };
}

function parseWeightedClusters(v: unknown, path: string) {
  const w = obj(v, path);
  const clusters: ClusterWeight[] = list(w.clusters, `${path}.clusters`).map((c, i) => {
    const at = `${path}.clusters[${i}]`;
    const co = obj(c, at);
    const name = str(co.name, `${at}.name`);
    if (name === '') throw decodeError(`${at}.name`, 'must not be empty');
    return {
      name,
      weight: optUintWrapper(co.weight, `${at}.weight`) ?? 0,
      headers: parseHeaderMutations(co, at),
    };
  });
  if (clusters.length === 0) throw decodeError(`${path}.clusters`, 'needs at least one cluster');
  const sum = clusters.reduce((s, c) => s + c.weight, 0);
  if (sum === 0) throw decodeError(`${path}.clusters`, 'the sum of the weights must be greater than 0');
  const total = optUintWrapper(w.total_weight, `${path}.total_weight`);
  if (total !== undefined && total !== 0 && total !== sum) {
    throw decodeError(`${path}.total_weight`, `is ${total} but the weights add up to ${sum}`);
  }
  return { clusters, total: sum };
}

function parseHashPolicy(v: unknown, path: string): HashPolicy {
  const h = obj(v, path);
  const terminal = optBool(h.terminal, `${path}.terminal`) ?? false;
  if (h.header != null) {
    const name = str(obj(h.header, `${path}.header`).header_name, `${path}.header.header_name`).toLowerCase();
    return { kind: 'header', name, terminal };
  }
  if (h.query_parameter != null) {
    return {
      kind: 'query',
      name: str(obj(h.query_parameter, `${path}.query_parameter`).name, `${path}.query_parameter.name`),
      terminal,
    };
  }
  if (h.connection_properties != null) {
    const cp = obj(h.connection_properties, `${path}.connection_properties`);
    if (optBool(cp.source_ip, `${path}.connection_properties.source_ip`) === true)
      return { kind: 'source-ip', terminal };
  }
  throw decodeError(
    path,
    'only header, query_parameter and connection_properties.source_ip hash policies are supported',
  );
}

const APPEND_ACTIONS: readonly AppendAction[] = [
  'APPEND_IF_EXISTS_OR_ADD',
  'ADD_IF_ABSENT',
  'OVERWRITE_IF_EXISTS_OR_ADD',
  'OVERWRITE_IF_EXISTS',
];

/** request_headers_to_add / request_headers_to_remove of a route, vhost, config or weighted cluster. */
function parseHeaderMutations(owner: Wire, path: string): HeaderMutations {
  const add: HeaderToAdd[] = list(owner.request_headers_to_add, `${path}.request_headers_to_add`).map(
    (o, i) => {
      const at = `${path}.request_headers_to_add[${i}]`;
      const opt = obj(o, at);
      const h = obj(opt.header, `${at}.header`);
      const key = str(h.key, `${at}.header.key`).toLowerCase();
      if (key === '' || key.startsWith(':') || key === 'host') {
        throw decodeError(`${at}.header.key`, `cannot set ${JSON.stringify(key)}`);
      }
      const value = optStr(h.value, `${at}.header.value`) ?? '';
      let action = optEnum(opt.append_action, `${at}.append_action`, APPEND_ACTIONS);
      const legacyAppend = optBoolWrapper(opt.append, `${at}.append`);
      if (legacyAppend !== undefined) {
        if (action !== undefined) throw decodeError(at, 'append and append_action are mutually exclusive');
        action = legacyAppend ? 'APPEND_IF_EXISTS_OR_ADD' : 'OVERWRITE_IF_EXISTS_OR_ADD';
      }
      return {
        key,
        value,
        action: action ?? 'APPEND_IF_EXISTS_OR_ADD',
        keepEmptyValue: optBool(opt.keep_empty_value, `${at}.keep_empty_value`) ?? false,
      };
    },
  );
  const remove = list(owner.request_headers_to_remove, `${path}.request_headers_to_remove`).map((r, i) => {
    const name = str(r, `${path}.request_headers_to_remove[${i}]`).toLowerCase();
    if (name === '' || name.startsWith(':') || name === 'host') {
      throw decodeError(`${path}.request_headers_to_remove[${i}]`, `cannot remove ${JSON.stringify(name)}`);
    }
    return name;
  });
  return { add, remove };
}
