/**
 * RouteConfigurations: one per HTTP Service port, one virtual host, routes
 * from the HTTPRoutes attached to it (GAMMA) in Gateway API precedence order.
 * A Service port with routes attached answers only what they match (Envoy
 * returns 404 when no route matches); one without routes goes to itself.
 * GRPCRoutes are HttpRoutes of kind GRPCRoute; on a port where both kinds
 * attach, the GRPCRoutes alone route (GEP-1426: route type specificity,
 * GRPCRoute before HTTPRoute).
 */
import type {
  BackendRef,
  HttpRoute,
  HttpRouteMatch,
  HttpRouteRule,
  MeshModel,
  Service,
  ServicePort,
  TcpRoute,
  TrafficPolicy,
} from '../model/types.js';
import { objectKey, portMode } from '../model/types.js';
import { ROUTE_TYPE } from '../protos.js';
import { duration, type Json, sockmeshMetadata, u32 } from './envoy.js';
import { detectsProtocol } from './listeners.js';
import { clusterName, isHttpPort, routeConfigName } from './names.js';

interface RouteEntry {
  route: HttpRoute;
  ruleIndex: number;
  rule: HttpRouteRule;
  matchIndex: number;
  match: HttpRouteMatch;
}

/** HTTPRoutes attached to each Service port, computed once per model. */
export function attachedRoutes(model: MeshModel): Map<string, RouteEntry[]> {
  const out = new Map<string, RouteEntry[]>();
  for (const route of model.httpRoutes) {
    for (const parent of route.parents) {
      const svc = model.services.get(objectKey(parent.service.namespace, parent.service.name));
      if (!svc) continue;
      for (const port of svc.ports) {
        // An undeclared port is detected per connection; its HTTP traffic follows the HTTPRoutes.
        if (portMode(port) === 'tcp' || (parent.port !== undefined && parent.port !== port.port)) continue;
        const key = `${objectKey(svc.namespace, svc.name)}:${port.port}`;
        let list = out.get(key);
        if (!list) {
          list = [];
          out.set(key, list);
        }
        for (const [ruleIndex, rule] of route.rules.entries()) {
          for (const [matchIndex, match] of rule.matches.entries())
            list.push({ route, ruleIndex, rule, matchIndex, match });
        }
      }
    }
  }
  for (const [key, list] of out) {
    const grpc = list.filter((e) => e.route.kind === 'GRPCRoute');
    if (grpc.length === 0) list.sort(comparePrecedence);
    else out.set(key, grpc.sort(compareGrpcPrecedence));
  }
  return out;
}

/**
 * GRPCRoute precedence (hostnames do not apply to Service parents): the most
 * characters of service, then of method, the most headers, then declaration order.
 */
function compareGrpcPrecedence(a: RouteEntry, b: RouteEntry): number {
  const len = (v: string | undefined) => v?.length ?? 0;
  return (
    len(b.match.grpc?.service) - len(a.match.grpc?.service) ||
    len(b.match.grpc?.method) - len(a.match.grpc?.method) ||
    b.match.headers.length - a.match.headers.length ||
    a.route.order - b.route.order ||
    a.ruleIndex - b.ruleIndex ||
    a.matchIndex - b.matchIndex
  );
}

/** Gateway API precedence: exact path, longest prefix, method, most headers, most query params, then declaration order. */
function comparePrecedence(a: RouteEntry, b: RouteEntry): number {
  const rank = (m: HttpRouteMatch) => (m.path.type === 'Exact' ? 0 : m.path.type === 'PathPrefix' ? 1 : 2);
  return (
    rank(a.match) - rank(b.match) ||
    (a.match.path.type === 'PathPrefix' ? b.match.path.value.length - a.match.path.value.length : 0) ||
    (a.match.method === undefined ? 1 : 0) - (b.match.method === undefined ? 1 : 0) ||
    b.match.headers.length - a.match.headers.length ||
    b.match.queryParams.length - a.match.queryParams.length ||
    a.route.order - b.route.order ||
    a.ruleIndex - b.ruleIndex ||
    a.matchIndex - b.matchIndex
  );
}

export function translateRoutes(
  model: MeshModel,
  attached: ReadonlyMap<string, RouteEntry[]>,
  tcpRoutes: ReadonlyMap<string, TcpRoute>,
): Json[] {
  const out: Json[] = [];
  for (const svc of model.services.values()) {
    const policy = model.trafficPolicies.get(objectKey(svc.namespace, svc.name));
    for (const port of svc.ports) {
      if (!isHttpPort(port) && !detectsProtocol(svc, port, tcpRoutes)) continue;
      out.push(
        routeConfiguration(
          model,
          svc,
          port,
          policy,
          attached.get(`${objectKey(svc.namespace, svc.name)}:${port.port}`),
        ),
      );
    }
  }
  return out;
}

function routeConfiguration(
  model: MeshModel,
  svc: Service,
  port: ServicePort,
  policy: TrafficPolicy | undefined,
  entries: RouteEntry[] | undefined,
): Json {
  const name = routeConfigName(model, svc, port.port);
  const routes: Json[] = [];
  if (!entries || entries.length === 0) {
    routes.push({
      name: 'default',
      match: { prefix: '/' },
      route: routeAction(model, policy, [{ service: svc, port: port.port, weight: 1 }], undefined),
    });
  } else {
    for (const e of entries) {
      const base = `${e.route.namespace}/${e.route.name}/rule-${e.ruleIndex}/match-${e.matchIndex}`;
      const action = e.rule.backends.some((b) => b.weight > 0)
        ? { route: routeAction(model, policy, e.rule.backends, e.rule) }
        : // Gateway API: a rule with no usable backend answers 500.
          { direct_response: { status: 500 } };
      for (const [suffix, pathMatch] of pathMatches(e.match)) {
        routes.push({
          name: base + suffix,
          match: { ...pathMatch, ...headerAndQueryMatch(e.match) },
          ...action,
          ...headerModifier(e.rule),
          metadata: sockmeshMetadata({
            httpRoute: objectKey(e.route.namespace, e.route.name),
            ...(e.route.kind === 'GRPCRoute' ? { kind: 'GRPCRoute' } : {}),
            rule: e.ruleIndex,
          }),
        });
      }
    }
  }
  return {
    '@type': ROUTE_TYPE,
    name,
    virtual_hosts: [{ name, domains: ['*'], routes }],
  };
}

/** Gateway API PathPrefix matches whole path elements: `/foo` is `/foo` exactly or `/foo/...`. */
function pathMatches(m: HttpRouteMatch): [string, Json][] {
  const v = m.path.value;
  switch (m.path.type) {
    case 'Exact':
      return [['', { path: v }]];
    case 'RegularExpression':
      return [['', { safe_regex: { regex: v } }]];
    default: {
      const trimmed = v.replace(/\/+$/, '');
      if (trimmed === '') return [['', { prefix: '/' }]];
      return [
        ['', { path: trimmed }],
        ['/prefix', { prefix: `${trimmed}/` }],
      ];
    }
  }
}

function stringMatch(type: 'Exact' | 'RegularExpression', value: string): Json {
  return type === 'Exact' ? { exact: value } : { safe_regex: { regex: value } };
}

function headerAndQueryMatch(m: HttpRouteMatch): Json {
  const headers = m.headers.map((h) => ({ name: h.name, string_match: stringMatch(h.type, h.value) }));
  if (m.method !== undefined) headers.push({ name: ':method', string_match: { exact: m.method } });
  const out: Json = {};
  if (headers.length > 0) out.headers = headers;
  if (m.queryParams.length > 0) {
    out.query_parameters = m.queryParams.map((q) => ({
      name: q.name,
      string_match: stringMatch(q.type, q.value),
    }));
  }
  return out;
}

function headerModifier(rule: HttpRouteRule): Json {
  const mod = rule.requestHeaderModifier;
  if (!mod) return {};
  const out: Json = {};
  const add = [
    ...mod.set.map((h) => ({
      header: { key: h.name, value: h.value },
      append_action: 'OVERWRITE_IF_EXISTS_OR_ADD',
    })),
    ...mod.add.map((h) => ({
      header: { key: h.name, value: h.value },
      append_action: 'APPEND_IF_EXISTS_OR_ADD',
    })),
  ];
  if (add.length > 0) out.request_headers_to_add = add;
  if (mod.remove.length > 0) out.request_headers_to_remove = mod.remove;
  return out;
}

function routeAction(
  model: MeshModel,
  policy: TrafficPolicy | undefined,
  backends: BackendRef[],
  rule: HttpRouteRule | undefined,
): Json {
  const action: Json = {};
  if (backends.length === 1) {
    action.cluster = clusterName(model, backends[0]!.service, backends[0]!.port);
  } else {
    const clusters = backends.map((b) => ({
      name: clusterName(model, b.service, b.port),
      weight: u32(b.weight),
    }));
    // grpc-js-xds assumes 100 when total_weight is absent: always set it.
    action.weighted_clusters = { clusters, total_weight: u32(backends.reduce((s, b) => s + b.weight, 0)) };
  }
  const retries = policy?.retries && policy.retries.attempts > 0 ? policy.retries : undefined;
  const request = rule?.timeouts.request ?? policy?.timeouts?.request;
  const perTry = rule?.timeouts.backendRequest ?? retries?.perTryTimeout;
  // Without retries there is a single try: its timeout bounds the whole request.
  const timeout =
    retries || perTry === undefined
      ? request
      : request === undefined || request === 0
        ? perTry
        : Math.min(request, perTry);
  if (timeout !== undefined) action.timeout = duration(timeout);
  if (policy?.timeouts?.idle !== undefined) action.idle_timeout = duration(policy.timeouts.idle);
  if (retries) {
    const rp: Json = { retry_on: retries.retryOn.join(','), num_retries: u32(retries.attempts) };
    if (perTry !== undefined) rp.per_try_timeout = duration(perTry);
    action.retry_policy = rp;
  }
  if (policy?.loadBalancer?.type === 'RING_HASH' && policy.loadBalancer.hashHeader !== undefined) {
    action.hash_policy = [{ header: { header_name: policy.loadBalancer.hashHeader } }];
  }
  return action;
}
