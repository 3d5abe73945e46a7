// GRPCRoute (Gateway API v1, GAMMA): decoded into the HTTPRoute model and translated to `:path`
// matches; bad input named by file:line and field; GRPCRoute before HTTPRoute on one Service port
// (GEP-1426); CanaryGuards on a GRPCRoute.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildModel } from '../../../xds/model/build.js';
import { canaryWeights } from '../../../xds/model/canary.js';
import type { MeshModel } from '../../../xds/model/types.js';
import { formatConfigError } from '../../../xds/sources/source.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';
import { translateForNode } from '../../../xds/translate/index.js';

const svc = (name: string, ip: string) => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec:
  clusterIP: ${ip}
  selector: { app: ${name} }
  ports: [{ name: grpc, port: 9091, appProtocol: grpc }]
`;
const SERVICES = [
  'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, labels: { sockmesh.io/mesh: enabled } }\n',
  svc('greeter', '10.96.1.10'),
  svc('greeter-v1', '10.96.1.11'),
  svc('greeter-v2', '10.96.1.12'),
].join('---\n');

const grpcRoute = (rules: string, name = 'greeter') => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: ${name}, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9091 }]
  rules:
${rules}`;

const SPLIT = `    - backendRefs:
        - { name: greeter-v1, port: 9091, weight: 90 }
        - { name: greeter-v2, port: 9091, weight: 10 }
`;

function build(...docs: string[]): { model?: MeshModel; errors: string[] } {
  const parsed = parseManifestText('m.yaml', [SERVICES, ...docs].join('---\n'));
  assert.deepEqual(parsed.errors, []);
  const r = buildModel(parsed.objects);
  return r.ok ? { model: r.model, errors: [] } : { errors: r.errors.map(formatConfigError) };
}

interface XdsRoute {
  name: string;
  match: Record<string, unknown>;
  route?: { cluster?: string; weighted_clusters?: { clusters: { name: string; weight: unknown }[] } };
  request_headers_to_add?: unknown[];
  metadata?: { filter_metadata: { sockmesh: Record<string, unknown> } };
}

function routesOf(model: MeshModel): XdsRoute[] {
  const rcs = translateForNode(model, 'node1').routes as Array<{
    name: string;
    virtual_hosts: Array<{ routes: XdsRoute[] }>;
  }>;
  const rc = rcs.find((r) => r.name.includes('greeter.shop') && r.name.includes('9091'));
  assert.ok(rc, `a RouteConfiguration for greeter.shop:9091 among ${rcs.map((r) => r.name).join(', ')}`);
  return rc.virtual_hosts[0]!.routes;
}

const cluster = (s: string) => `outbound|9091||${s}.shop.svc.cluster.local`;
const weightsOf = (r: XdsRoute) =>
  r.route?.weighted_clusters?.clusters.map((c) => [
    c.name,
    Number((c.weight as { value?: number }).value ?? c.weight),
  ]);

test('a weighted GRPCRoute is the canary split of the HTTP model, tagged GRPCRoute', () => {
  const { model, errors } = build(grpcRoute(SPLIT));
  assert.deepEqual(errors, []);
  const route = model!.httpRoutes.find((r) => r.name === 'greeter')!;
  assert.equal(route.kind, 'GRPCRoute');
  const [r] = routesOf(model!);
  assert.deepEqual(r!.match, { prefix: '/' });
  assert.deepEqual(weightsOf(r!), [
    [cluster('greeter-v1'), 90],
    [cluster('greeter-v2'), 10],
  ]);
  assert.deepEqual(r!.metadata?.filter_metadata.sockmesh, {
    httpRoute: 'shop/greeter',
    kind: 'GRPCRoute',
    rule: 0,
  });
});

test('method matches become :path matches: exact, service only, method only, regex; headers as HTTPRoute', () => {
  const { model, errors } = build(
    grpcRoute(`    - matches:
        - method: { service: helloworld.Greeter, method: SayHello }
          headers: [{ name: X-Canary, value: "true" }]
      backendRefs: [{ name: greeter-v2, port: 9091 }]
    - matches:
        - method: { service: helloworld.Greeter }
        - method: { method: Check }
        - method: { type: RegularExpression, service: "helloworld\\\\..*", method: "Say.*|Get" }
        - headers: [{ type: RegularExpression, name: x-user, value: "a.*" }]
      backendRefs: [{ name: greeter-v1, port: 9091 }]
`),
  );
  assert.deepEqual(errors, []);
  const got = routesOf(model!).map((r) => [r.name, r.match, r.route?.cluster]);
  // GRPCRoute precedence: most service characters, then method characters, then headers.
  assert.deepEqual(got, [
    [
      'shop/greeter/rule-0/match-0',
      {
        path: '/helloworld.Greeter/SayHello',
        headers: [{ name: 'x-canary', string_match: { exact: 'true' } }],
      },
      cluster('greeter-v2'),
    ],
    [
      'shop/greeter/rule-1/match-0',
      { safe_regex: { regex: '/helloworld\\.Greeter/[^/]+' } },
      cluster('greeter-v1'),
    ],
    [
      'shop/greeter/rule-1/match-2',
      { safe_regex: { regex: '/(?:helloworld\\..*)/(?:Say.*|Get)' } },
      cluster('greeter-v1'),
    ],
    ['shop/greeter/rule-1/match-1', { safe_regex: { regex: '/[^/]+/Check' } }, cluster('greeter-v1')],
    [
      'shop/greeter/rule-1/match-3',
      { prefix: '/', headers: [{ name: 'x-user', string_match: { safe_regex: { regex: 'a.*' } } }] },
      cluster('greeter-v1'),
    ],
  ]);
  // The regexes are what they say: a full match of the path a gRPC client sends.
  const re = (i: number) =>
    new RegExp(`^${(routesOf(model!)[i]!.match.safe_regex as { regex: string }).regex}$`);
  assert.ok(re(1).test('/helloworld.Greeter/SayHello'));
  assert.ok(!re(1).test('/helloworldxGreeter/SayHello'));
  assert.ok(!re(1).test('/helloworld.Greeter/a/b'));
  assert.ok(re(2).test('/helloworld.Other/Get'));
  assert.ok(!re(2).test('/helloworld.Other/Put'));
  assert.ok(re(3).test('/grpc.health.v1.Health/Check'));
});

test('RequestHeaderModifier is honoured as in HTTPRoute', () => {
  const { model, errors } = build(
    grpcRoute(`    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: X-Via, value: mesh }], remove: [x-debug] }
      backendRefs: [{ name: greeter-v1, port: 9091 }]
`),
  );
  assert.deepEqual(errors, []);
  const [r] = routesOf(model!);
  assert.deepEqual(r!.request_headers_to_add, [
    { header: { key: 'x-via', value: 'mesh' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
  ]);
});

test('bad GRPCRoutes: every error names the file:line and field, with what to write', () => {
  const { errors } = build(
    `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greeter, namespace: shop }
spec:
  hostnames: [greeter.example.com]
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9091 }]
  rules:
    - matches:
        - method: { service: "hello world", method: Say-Hello }
        - method: { type: RegularExpression, method: "Say(" }
        - method: { type: Exact }
      filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: { set: [{ name: x, value: y }] }
      backendRefs: [{ name: greeter-v3, port: 9091 }]
`,
  );
  assert.deepEqual(errors, [
    'm.yaml:33: spec.hostnames: must not be set for Service parents (GAMMA)',
    "m.yaml:37: spec.rules[0].matches[0].method.service: invalid value 'hello world': a protobuf service name, e.g. shop.v1.Reviews",
    "m.yaml:37: spec.rules[0].matches[0].method.method: invalid value 'Say-Hello': a protobuf method name, e.g. GetReview",
    "m.yaml:38: spec.rules[0].matches[1].method.method: invalid regular expression 'Say('",
    'm.yaml:39: spec.rules[0].matches[2].method: set service, method or both',
    "m.yaml:41: spec.rules[0].filters[0].type: must be one of RequestHeaderModifier, got 'ResponseHeaderModifier'",
    'm.yaml:43: spec.rules[0].backendRefs[0].name: Service shop/greeter-v3 does not exist',
  ]);
});

test('the published GRPCRoute schema is applied (ajv), with the model naming the field', () => {
  const { errors } = build(
    grpcRoute(`    - backendRefs: [{ name: greeter-v1, port: 9091, weight: "90" }]
      sessionPersistence: { sessionName: x }
`),
  );
  assert.equal(errors.length > 0, true);
  assert.ok(
    errors.some((e) => /spec\.rules\[0\]\.backendRefs\[0\]\.weight/.test(e)),
    errors.join('\n'),
  );
  assert.ok(
    errors.some((e) => /spec\.rules\[0\]\.sessionPersistence: unknown field/.test(e)),
    errors.join('\n'),
  );
});

test('GRPCRoute before HTTPRoute on one Service port (GEP-1426): the HTTPRoute alone routes, with both the GRPCRoute does', () => {
  const http = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: greeter-http, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9091 }]
  rules: [{ backendRefs: [{ name: greeter-v2, port: 9091 }] }]
`;
  const alone = build(http);
  assert.deepEqual(
    routesOf(alone.model!).map((r) => r.name),
    ['shop/greeter-http/rule-0/match-0'],
  );
  const both = build(http, grpcRoute(SPLIT));
  assert.deepEqual(both.errors, []);
  assert.deepEqual(
    routesOf(both.model!).map((r) => r.name),
    ['shop/greeter/rule-0/match-0'],
  );
});

test('an HTTPRoute and a GRPCRoute of one name: the second is refused, naming the first', () => {
  const http = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: greeter, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9091 }]
  rules: [{ backendRefs: [{ name: greeter-v2, port: 9091 }] }]
`;
  assert.deepEqual(build(http, grpcRoute(SPLIT)).errors, [
    'm.yaml:38: metadata.name: HTTPRoute shop/greeter (m.yaml:29) has the same name: sockmesh knows HTTP and gRPC routes by namespace/name, rename one',
  ]);
});

const guard = (kind: string, name = 'greeter') => `apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: greeter, namespace: shop }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: ${kind}, name: ${name} }
  canaryRef: { name: greeter-v2 }
  baselineRef: { name: greeter-v1 }
  bounds: { minSuccessRate: 99 }
`;

test('a CanaryGuard names a GRPCRoute by kind, and its weight reaches the served split', () => {
  const { model, errors } = build(grpcRoute(SPLIT), guard('GRPCRoute'));
  assert.deepEqual(errors, []);
  const g = model!.canaryGuards![0]!;
  assert.deepEqual(
    [g.route, g.routeKind, g.writtenWeight],
    [{ namespace: 'shop', name: 'greeter' }, 'GRPCRoute', 10],
  );
  const served = canaryWeights(model!, new Map([['shop/greeter', 0]]));
  assert.deepEqual(weightsOf(routesOf(served)[0]!), [
    [cluster('greeter-v1'), 100],
    [cluster('greeter-v2'), 0],
  ]);
  // The kind must be the route's: an HTTPRoute guard does not attach to a GRPCRoute.
  assert.deepEqual(build(grpcRoute(SPLIT), guard('HTTPRoute')).errors, [
    'm.yaml:43: spec.targetRef.kind: shop/greeter is a GRPCRoute, not a HTTPRoute: set kind: GRPCRoute',
  ]);
  assert.deepEqual(build(grpcRoute(SPLIT), guard('GRPCRoute', 'nope')).errors, [
    'm.yaml:43: spec.targetRef.name: GRPCRoute shop/nope does not exist',
  ]);
});
