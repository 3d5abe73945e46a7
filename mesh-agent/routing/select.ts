/**
 * Per-request route selection with Envoy's semantics: virtual host by domain
 * (exact, then `*.suffix`, then `prefix.*`, longest wildcard first, then `*`),
 * then the first route whose path, header and query matchers all match.
 */
import type { RetryPolicy } from '../retry/policy.js';
import { matchString } from './string-match.js';
import type {
  HeaderMatcher,
  HttpRequest,
  PathMatch,
  QueryParamMatcher,
  RequestHeaders,
  Route,
  RouteAction,
  RouteConfig,
  VirtualHost,
} from './types.js';

export type RouteDecision =
  | {
      kind: 'forward';
      virtualHost: VirtualHost;
      route: Route;
      action: RouteAction;
      /** The route's retry policy, else the virtual host's (Envoy: the route's replaces it). */
      retry: RetryPolicy | undefined;
    }
  | {
      kind: 'respond';
      status: number;
      body: string | undefined;
      /** `direct_response` from config, or Envoy's NR (no route) outcome. */
      reason: 'direct-response' | 'no-virtual-host' | 'no-route';
      virtualHost: VirtualHost | undefined;
      route: Route | undefined;
    };

/** Splits `host:port` / `[v6]:port`; returns the host alone when a port was present. */
export function stripPort(authority: string): string | undefined {
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    return end > 0 && authority.length > end + 1 && authority[end + 1] === ':'
      ? authority.slice(0, end + 1)
      : undefined;
  }
  const colon = authority.lastIndexOf(':');
  if (colon <= 0 || authority.indexOf(':') !== colon) return undefined;
  return /^\d+$/.test(authority.slice(colon + 1)) ? authority.slice(0, colon) : undefined;
}

function suffixMatch(rc: RouteConfig, host: string): VirtualHost | undefined {
  // A wildcard never matches the empty string: `*.foo.com` does not match `.foo.com`.
  for (const [suffix, vh] of rc.domains.suffix)
    if (host.length > suffix.length && host.endsWith(suffix)) return vh;
  return undefined;
}

function prefixMatch(rc: RouteConfig, host: string): VirtualHost | undefined {
  for (const [prefix, vh] of rc.domains.prefix)
    if (host.length > prefix.length && host.startsWith(prefix)) return vh;
  return undefined;
}

/**
 * The virtual host for an authority, in Envoy's order: exact, `*.suffix`,
 * `prefix.*` (longest wildcard first), then `*`. Each tier is tried with the
 * authority as given and then without its port, so `reviews:9080` finds a
 * vhost listing only `reviews` while `host:port` domains still work.
 */
export function selectVirtualHost(rc: RouteConfig, authority: string): VirtualHost | undefined {
  const host = authority.toLowerCase();
  const bare = stripPort(host);
  return (
    rc.domains.exact.get(host) ??
    (bare === undefined ? undefined : rc.domains.exact.get(bare)) ??
    suffixMatch(rc, host) ??
    (bare === undefined ? undefined : suffixMatch(rc, bare)) ??
    prefixMatch(rc, host) ??
    (bare === undefined ? undefined : prefixMatch(rc, bare)) ??
    rc.domains.any
  );
}

function splitPath(fullPath: string): string {
  const q = fullPath.search(/[?#]/);
  return q === -1 ? fullPath : fullPath.slice(0, q);
}

export function matchPath(m: PathMatch, fullPath: string): boolean {
  if (m.kind === 'regex') return m.regex.test(splitPath(fullPath));
  switch (m.kind) {
    // Envoy matches `prefix` against the whole :path, query string included.
    case 'prefix':
      return (m.caseSensitive ? fullPath : fullPath.toLowerCase()).startsWith(m.value);
    case 'path': {
      const p = splitPath(fullPath);
      return (m.caseSensitive ? p : p.toLowerCase()) === m.value;
    }
    case 'separated-prefix': {
      const raw = splitPath(fullPath);
      const p = m.caseSensitive ? raw : raw.toLowerCase();
      return p === m.value || p.startsWith(`${m.value}/`);
    }
  }
}

/** A header's value as Envoy sees it: repeated headers joined with `,`. */
export function headerValue(req: HttpRequest, name: string): string | undefined {
  switch (name) {
    case ':authority':
    case 'host':
      return req.authority;
    case ':path':
      return req.path;
    case ':method':
      return req.method;
    case ':scheme':
      return 'http';
  }
  return joinHeader(req.headers, name);
}

export function joinHeader(headers: RequestHeaders, name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.length === 0 ? undefined : v.join(',');
}

export function matchHeader(m: HeaderMatcher, req: HttpRequest): boolean {
  let value = headerValue(req, m.name);
  if (m.test.kind === 'present') return ((value !== undefined) === m.test.present) !== m.invert;
  if (value === undefined) {
    if (!m.treatMissingAsEmpty) return m.invert;
    value = '';
  }
  return matchString(m.test.matcher, value) !== m.invert;
}

/** Query parameters of a :path, decoded; a bare `?flag` has the value ''. */
export function parseQuery(fullPath: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const q = fullPath.indexOf('?');
  if (q === -1) return out;
  const hash = fullPath.indexOf('#', q);
  const qs = fullPath.slice(q + 1, hash === -1 ? undefined : hash);
  for (const part of qs.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = decode(eq === -1 ? part : part.slice(0, eq));
    const v = eq === -1 ? '' : decode(part.slice(eq + 1));
    const vals = out.get(k);
    if (vals) vals.push(v);
    else out.set(k, [v]);
  }
  return out;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export function matchQuery(m: QueryParamMatcher, query: ReadonlyMap<string, readonly string[]>): boolean {
  // Envoy looks at the first occurrence of the parameter only.
  const first = query.get(m.name)?.[0];
  if (first === undefined) return false;
  return m.test.kind === 'present' || matchString(m.test.matcher, first);
}

export function matchRoute(
  route: Route,
  req: HttpRequest,
  query: () => ReadonlyMap<string, readonly string[]>,
): boolean {
  if (!matchPath(route.match.path, req.path)) return false;
  for (const h of route.match.headers) if (!matchHeader(h, req)) return false;
  if (route.match.query.length > 0) {
    const q = query();
    for (const m of route.match.query) if (!matchQuery(m, q)) return false;
  }
  return true;
}

/**
 * Routes one request. No virtual host or no matching route answers 404, as
 * Envoy does (and as GAMMA requires for a Service with routes attached).
 */
export function selectRoute(rc: RouteConfig, req: HttpRequest): RouteDecision {
  const virtualHost = selectVirtualHost(rc, req.authority);
  if (!virtualHost) {
    return {
      kind: 'respond',
      status: 404,
      body: undefined,
      reason: 'no-virtual-host',
      virtualHost,
      route: undefined,
    };
  }
  let parsed: ReadonlyMap<string, readonly string[]> | undefined = req.query;
  const query = (): ReadonlyMap<string, readonly string[]> => {
    parsed ??= parseQuery(req.path);
    return parsed;
  };
  for (const route of virtualHost.routes) {
    if (!matchRoute(route, req, query)) continue;
    if (route.behaviour.kind === 'direct') {
      const { status, body } = route.behaviour;
      return { kind: 'respond', status, body, reason: 'direct-response', virtualHost, route };
    }
    const action = route.behaviour.action;
    return { kind: 'forward', virtualHost, route, action, retry: action.retry ?? virtualHost.retry };
  }
  return { kind: 'respond', status: 404, body: undefined, reason: 'no-route', virtualHost, route: undefined };
}
