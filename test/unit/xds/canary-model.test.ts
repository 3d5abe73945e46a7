// CanaryGuard: decoding, cross-checks against the HTTPRoute (errors name file:line and
// field path), and the weight override that leaves the route as written.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { buildModel } from '../../../xds/model/build.js';
import { canaryWeights } from '../../../xds/model/canary.js';
import type { MeshModel } from '../../../xds/model/types.js';
import { formatConfigError } from '../../../xds/sources/source.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';
import { translateForNode } from '../../../xds/translate/index.js';

const SHOP = path.resolve(import.meta.dirname, '../../../examples/shop');
const shop = ['00-cluster.yaml', '10-services.yaml', '20-pods.yaml', '30-routes.yaml']
  .map((f) => readFileSync(path.join(SHOP, f), 'utf8'))
  .join('\n---\n');

const GUARD = `apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata:
  name: reviews
  namespace: shop
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: reviews }
  canaryRef: { name: reviews-v2 }
  baselineRef: { name: reviews-v1 }
  bounds: { minSuccessRate: 99.5, maxP99: 500ms }
  window: 20s
  minRequests: 30
  interval: 5s
  steps: [25, 50, 100]
`;

function build(guard: string): { model?: MeshModel; errors: string[] } {
  const parsed = parseManifestText('shop.yaml', shop);
  const g = parseManifestText('guard.yaml', guard);
  assert.deepEqual([...parsed.errors, ...g.errors], []);
  const r = buildModel([...parsed.objects, ...g.objects]);
  return r.ok ? { model: r.model, errors: [] } : { errors: r.errors.map(formatConfigError) };
}

test('a guard on the shop route builds with its bounds and the written weight', () => {
  const { model, errors } = build(GUARD);
  assert.deepEqual(errors, []);
  const g = model!.canaryGuards![0]!;
  assert.deepEqual(
    { ...g },
    {
      namespace: 'shop',
      name: 'reviews',
      route: { namespace: 'shop', name: 'reviews' },
      routeKind: 'HTTPRoute',
      canary: { namespace: 'shop', name: 'reviews-v2' },
      baseline: { namespace: 'shop', name: 'reviews-v1' },
      minSuccessRate: 99.5,
      maxP99Ms: 500,
      windowMs: 20_000,
      minRequests: 30,
      intervalMs: 5000,
      steps: [25, 50, 100],
      writtenWeight: 10,
    },
  );
});

test('defaults: interval 10s, window = interval, minRequests 20, no steps, latency unguarded', () => {
  const { model } = build(
    GUARD.replace(/ {2}window.*\n| {2}minRequests.*\n| {2}interval.*\n| {2}steps.*\n/g, '').replace(
      ', maxP99: 500ms',
      '',
    ),
  );
  const g = model!.canaryGuards![0]!;
  assert.equal(g.intervalMs, 10_000);
  assert.equal(g.windowMs, 10_000);
  assert.equal(g.minRequests, 20);
  assert.deepEqual(g.steps, []);
  assert.equal(g.maxP99Ms, undefined);
});

test('bad fields are named by file:line and path', () => {
  const cases: Array<[string, string, RegExp]> = [
    [
      'minSuccessRate: 99.5',
      'minSuccessRate: 120',
      /^guard\.yaml:10: spec\.bounds\.minSuccessRate: must be a number of percent from 0 to 100, got 120$/,
    ],
    ['maxP99: 500ms', 'maxP99: soon', /^guard\.yaml:10: spec\.bounds\.maxP99: invalid duration 'soon'/],
    [
      'steps: [25, 50, 100]',
      'steps: [50, 25]',
      /^guard\.yaml:14: spec\.steps\[1\]: steps must rise: 25 after 50$/,
    ],
    ['interval: 5s', 'interval: 100ms', /^guard\.yaml:13: spec\.interval: must be at least 1s/],
    ['window: 20s', 'window: 1s', /^guard\.yaml:11: spec\.window: must be at least the interval/],
    [
      'kind: HTTPRoute, name: reviews',
      'kind: TCPRoute, name: reviews',
      /spec\.targetRef\.kind: must be HTTPRoute or GRPCRoute, got 'TCPRoute'/,
    ],
    [
      'name: reviews }',
      'name: nope }',
      /^guard\.yaml:7: spec\.targetRef\.name: HTTPRoute shop\/nope does not exist$/,
    ],
    [
      'name: reviews-v2 }',
      'name: ratings }',
      /spec\.canaryRef\.name: no rule of HTTPRoute shop\/reviews splits between Service shop\/ratings \(canary\) and Service shop\/reviews-v1 \(baseline\)/,
    ],
    [
      'baselineRef: { name: reviews-v1 }',
      'baselineRef: { name: reviews-v2 }',
      /spec\.baselineRef\.name: the baseline must differ from the canary/,
    ],
    ['  interval: 5s\n', '  intervall: 5s\n', /spec\.intervall: unknown field/],
    [
      '  canaryRef: { name: reviews-v2 }\n',
      '',
      /^guard\.yaml:\d+: spec\.canaryRef: required field is missing$/,
    ],
  ];
  for (const [from, to, want] of cases) {
    assert.ok(GUARD.includes(from), from);
    const { errors } = build(GUARD.replace(from, to));
    assert.ok(
      errors.some((e) => want.test(e)),
      `${to}: ${errors.join(' | ')}`,
    );
  }
});

test('two guards on one route: the second is refused', () => {
  const { errors } = build(
    `${GUARD}---\n${GUARD.replace('name: reviews\n  namespace', 'name: other\n  namespace')}`,
  );
  assert.ok(
    errors.some((e) =>
      /spec\.targetRef\.name: HTTPRoute shop\/reviews already has CanaryGuard shop\/reviews/.test(e),
    ),
  );
});

test('canaryWeights overrides the split in the served routes, not the model, and leaves the header rule alone', () => {
  const { model } = build(GUARD);
  const weightsOf = (m: MeshModel) => {
    const routes = translateForNode(m, 'node1').routes as Array<{
      name: string;
      virtual_hosts: Array<{
        routes: Array<{
          name: string;
          route?: {
            cluster?: string;
            weighted_clusters?: { clusters: Array<{ name: string; weight: { value: number } }> };
          };
        }>;
      }>;
    }>;
    const rc = routes.find((r) => r.name.includes('reviews.shop') && r.name.includes('9080'))!;
    return rc.virtual_hosts[0]!.routes.map((r) =>
      r.route?.weighted_clusters
        ? r.route.weighted_clusters.clusters
            .map((c) => `${c.name.split('|')[3]!.split('.')[0]}=${c.weight.value}`)
            .join(',')
        : (r.route?.cluster ?? '?').split('|')[3]?.split('.')[0],
    );
  };
  assert.deepEqual(weightsOf(model!), ['reviews-v2', 'reviews-v1=90,reviews-v2=10']);
  const rolled = canaryWeights(model!, new Map([['shop/reviews', 0]]));
  assert.deepEqual(weightsOf(rolled), ['reviews-v2', 'reviews-v1=100,reviews-v2=0']);
  assert.deepEqual(weightsOf(canaryWeights(model!, new Map([['shop/reviews', 50]]))), [
    'reviews-v2',
    'reviews-v1=50,reviews-v2=50',
  ]);
  // The model as written is unchanged; a guard without a weight entry changes nothing.
  assert.deepEqual(weightsOf(model!), ['reviews-v2', 'reviews-v1=90,reviews-v2=10']);
  assert.equal(canaryWeights(model!, new Map()), model);
});
