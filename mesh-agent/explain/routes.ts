/**
 * Route matching explained: the same matchers the proxy runs (routing/select.ts),
 * asked one condition at a time so a route that did not match says which
 * condition failed and what the request had there.
 */
import {
  headerValue,
  matchHeader,
  matchPath,
  matchQuery,
  parseQuery,
  selectVirtualHost,
} from '../routing/select.js';
import type { StringMatcher } from '../routing/string-match.js';
import type {
  HeaderMatcher,
  HttpRequest,
  PathMatch,
  QueryParamMatcher,
  Route,
  RouteConfig,
} from '../routing/types.js';
import type { HttpRouting, RouteCheck, WeightedTarget } from './types.js';

function describeString(m: StringMatcher): string {
  if (m.kind === 'regex') return `regex ${JSON.stringify(m.source)}`;
  return `${m.kind} ${JSON.stringify(m.value)}${m.ignoreCase ? ' (any case)' : ''}`;
}

export function describePath(m: PathMatch): string {
  if (m.kind === 'regex') return `path regex ${m.regex.source}`;
  const kind = m.kind === 'path' ? 'path' : m.kind === 'prefix' ? 'prefix' : 'path prefix';
  return `${kind} ${m.value}${m.caseSensitive ? '' : ' (any case)'}`;
}

export function describeHeader(m: HeaderMatcher): string {
  const test =
    m.test.kind === 'present' ? (m.test.present ? 'present' : 'absent') : describeString(m.test.matcher);
  return `header ${m.name} ${m.invert ? 'not ' : ''}${test}`;
}

function describeQuery(m: QueryParamMatcher): string {
  return `query ${m.name} ${m.test.kind === 'present' ? 'present' : describeString(m.test.matcher)}`;
}

export function describeMatch(r: Route): string {
  return [
    describePath(r.match.path),
    ...r.match.headers.map(describeHeader),
    ...r.match.query.map(describeQuery),
  ].join(' and ');
}

/** The first condition of `route` that `req` fails, as text; null when the route matches. */
export function firstMismatch(route: Route, req: HttpRequest): string | null {
  if (!matchPath(route.match.path, req.path))
    return `${describePath(route.match.path)}: the path is ${req.path}`;
  for (const h of route.match.headers) {
    if (matchHeader(h, req)) continue;
    const v = headerValue(req, h.name);
    return `${describeHeader(h)}: ${v === undefined ? 'the request has none' : `the request has ${JSON.stringify(v)}`}`;
  }
  const query = parseQuery(req.path);
  for (const q of route.match.query) {
    if (matchQuery(q, query)) continue;
    const v = query.get(q.name)?.[0];
    return `${describeQuery(q)}: ${v === undefined ? 'the request has none' : `the request has ${JSON.stringify(v)}`}`;
  }
  return null;
}

/** `shop/reviews/rule-1/match-0` -> the Gateway API route and rule it was translated from. */
function origin(name: string | undefined): { httpRoute: string | null; rule: number | null } {
  const m = name?.match(/^([^/]+\/[^/]+)\/rule-(\d+)(?:\/|$)/);
  return m ? { httpRoute: m[1]!, rule: Number(m[2]) } : { httpRoute: null, rule: null };
}

export function targetsOf(
  t: import('../routing/types.js').ClusterTarget,
  serviceOf: (cluster: string) => string,
): WeightedTarget[] {
  if (t.kind === 'cluster') return [{ cluster: t.name, service: serviceOf(t.name), weight: 1, share: 1 }];
  return t.weighted.clusters.map((c) => ({
    cluster: c.name,
    service: serviceOf(c.name),
    weight: c.weight,
    share: c.weight / t.weighted.total,
  }));
}

/**
 * Every route of the chosen virtual host checked in order, as selectRoute
 * would: the first match wins, later ones are not reached.
 */
export function explainRouting(
  rc: RouteConfig,
  req: HttpRequest,
  serviceOf: (cluster: string) => string,
): HttpRouting {
  const vh = selectVirtualHost(rc, req.authority);
  if (!vh) {
    return {
      routeConfig: rc.name,
      virtualHost: null,
      routes: [],
      outcome: { kind: 'respond', status: 404, reason: 'no-virtual-host' },
    };
  }
  const routes: RouteCheck[] = [];
  let chosen: Route | undefined;
  for (const r of vh.routes) {
    const from = origin(r.name);
    const routeKind = from.httpRoute === null ? null : (r.routeKind ?? 'HTTPRoute');
    const base = { name: r.name ?? '', ...from, routeKind, match: describeMatch(r) };
    if (chosen) {
      routes.push({ ...base, result: 'not-reached', mismatch: null });
      continue;
    }
    const mismatch = firstMismatch(r, req);
    routes.push({ ...base, result: mismatch === null ? 'matched' : 'no-match', mismatch });
    if (mismatch === null) chosen = r;
  }
  let outcome: HttpRouting['outcome'];
  if (!chosen) outcome = { kind: 'respond', status: 404, reason: 'no-route' };
  else if (chosen.behaviour.kind === 'direct')
    outcome = { kind: 'respond', status: chosen.behaviour.status, reason: 'direct-response' };
  else {
    const a = chosen.behaviour.action;
    const retry = a.retry ?? vh.retry;
    outcome = {
      kind: 'forward',
      route: chosen.name ?? rc.name,
      targets: targetsOf(a.target, serviceOf),
      timeoutMs: a.timeoutMs,
      retries: retry ? { attempts: retry.numRetries, perTryTimeoutMs: retry.perTryTimeoutMs ?? null } : null,
    };
  }
  return { routeConfig: rc.name, virtualHost: vh.name, routes, outcome };
}
