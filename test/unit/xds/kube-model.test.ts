// The Kubernetes shapes in the model (core v1 Node, EndpointSlices), per-object acceptance,
// the projection of API objects and the status the control plane writes back. Pure: no server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildModelPerObject } from '../../../xds/model/accept.js';
import { buildModel } from '../../../xds/model/build.js';
import type { MeshModel } from '../../../xds/model/types.js';
import type { KubeObject } from '../../../xds/sources/kube/client.js';
import { WATCHED } from '../../../xds/sources/kube/resources.js';
import {
  CONTROLLER_NAME,
  carryTransitionTimes,
  mergeRouteParents,
  policyConditions,
  routeParentStatuses,
} from '../../../xds/sources/kube/status.js';
import { formatConfigError, type SourceObject } from '../../../xds/sources/source.js';
import { translateMesh } from '../../../xds/translate/index.js';

/** A SourceObject as the Kubernetes source makes them: named origin, line 0. */
function obj(value: Record<string, unknown>): SourceObject {
  const m = value.metadata as { name: string; namespace?: string };
  const origin = { file: `${value.kind} ${m.namespace ? `${m.namespace}/` : ''}${m.name}`, line: 0 };
  return { value, origin, locate: () => origin };
}

const ns = obj({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name: 'shop', labels: { 'sockmesh.io/mesh': 'enabled' } },
});
const node = obj({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: 'node1' },
  status: {
    addresses: [
      { type: 'Hostname', address: 'node1' },
      { type: 'InternalIP', address: '10.99.0.1' },
    ],
  },
});
/** Each Service its own cluster IP, as the API server allocates them. */
const vips = new Map<string, string>();
const svc = (name: string) =>
  obj({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'shop' },
    spec: {
      clusterIP: vips.get(name) ?? vips.set(name, `10.96.1.${vips.size + 1}`).get(name),
      selector: { app: name },
      ports: [{ name: 'http', port: 9080, targetPort: 'web', appProtocol: 'http' }],
    },
  });
const pod = (name: string, app: string, ip?: string) =>
  obj({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'shop', labels: { app } },
    spec: { nodeName: 'node1', containers: [{ ports: [{ name: 'web', containerPort: 8080 }] }] },
    status: ip ? { podIP: ip } : {},
  });
const slice = (name: string, service: string, endpoints: unknown[]) =>
  obj({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints,
  });
const ep = (pod: string, ip: string, conditions: Record<string, boolean>) => ({
  addresses: [ip],
  conditions,
  targetRef: { kind: 'Pod', name: pod, namespace: 'shop' },
});
const route = (backend: string, weight = 1, generation = 1) =>
  obj({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'split', namespace: 'shop', generation },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 9080 }],
      rules: [{ backendRefs: [{ group: '', kind: 'Service', name: backend, port: 9080, weight }] }],
    },
  });

function endpointIps(model: MeshModel, service: string): string[] {
  const cla = translateMesh(model).endpoints.find((e) =>
    String((e as { cluster_name: string }).cluster_name).endsWith(`${service}.shop.svc.cluster.local`),
  ) as {
    endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { address: string } } } }[] }[];
  };
  return cla.endpoints.flatMap((l) => l.lb_endpoints.map((e) => e.endpoint.address.socket_address.address));
}

test('a core v1 Node gives its InternalIP as the underlay address; without one it has none', () => {
  const bare = obj({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node2' }, status: {} });
  const r = buildModel([node, bare]);
  assert.ok(r.ok);
  assert.equal(r.model.nodes.get('node1')?.address, '10.99.0.1');
  assert.equal(r.model.nodes.get('node2')?.address, undefined);
});

test('EndpointSlices decide the endpoints: ready ones; terminating+serving only when none is ready', () => {
  const base = [ns, node, svc('reviews'), pod('r1', 'reviews', '10.1.1.1'), pod('r2', 'reviews', '10.1.1.2')];
  const build = (eps: unknown[]) => {
    const r = buildModel([...base, slice('reviews-abc', 'reviews', eps)], { endpointsFrom: 'EndpointSlice' });
    assert.ok(r.ok, r.ok ? '' : r.errors.map(formatConfigError).join('\n'));
    return endpointIps(r.model, 'reviews');
  };
  assert.deepEqual(
    build([ep('r1', '10.1.1.1', { ready: true }), ep('r2', '10.1.1.2', { ready: false, serving: false })]),
    ['10.1.1.1'],
  );
  // Absent conditions mean ready (API conventions).
  assert.deepEqual(build([ep('r1', '10.1.1.1', {}), ep('r2', '10.1.1.2', {})]), ['10.1.1.1', '10.1.1.2']);
  // A terminating pod that still serves takes traffic only while nothing is ready (kube-proxy).
  const terminating = ep('r2', '10.1.1.2', { ready: false, serving: true, terminating: true });
  assert.deepEqual(build([ep('r1', '10.1.1.1', { ready: true }), terminating]), ['10.1.1.1']);
  assert.deepEqual(build([ep('r1', '10.1.1.1', { ready: false, serving: false }), terminating]), [
    '10.1.1.2',
  ]);
  // The slice's port (8080, resolved from the named targetPort) is the endpoint port.
  const r = buildModel([...base, slice('s', 'reviews', [ep('r1', '10.1.1.1', {})])], {
    endpointsFrom: 'EndpointSlice',
  });
  assert.ok(r.ok);
  const cla = JSON.stringify(translateMesh(r.model).endpoints);
  assert.match(cla, /"port_value":8080/);
  // Without a slice a Service has no endpoints, whatever its selector says.
  const none = buildModel(base, { endpointsFrom: 'EndpointSlice' });
  assert.ok(none.ok);
  assert.deepEqual(endpointIps(none.model, 'reviews'), []);
});

test('the selector path is unchanged: pods without an IP are simply no endpoint', () => {
  const r = buildModel([ns, node, svc('reviews'), pod('r1', 'reviews', '10.1.1.1'), pod('r2', 'reviews')]);
  assert.ok(r.ok);
  assert.deepEqual(endpointIps(r.model, 'reviews'), ['10.1.1.1']);
  assert.equal(r.model.services.get('shop/reviews')?.endpoints, undefined);
  // EndpointSlices stay unknown to a manifests directory.
  const d = buildModel([slice('s', 'reviews', [])]);
  assert.ok(!d.ok);
  assert.match(formatConfigError(d.errors[0]!), /unsupported kind 'EndpointSlice'/);
});

test('errors of named objects read `Kind ns/name: path: reason`', () => {
  const r = buildModel([ns, svc('reviews'), route('missing')]);
  assert.ok(!r.ok);
  assert.deepEqual(r.errors.map(formatConfigError), [
    'HTTPRoute shop/split: spec.rules[0].backendRefs[0].name: Service shop/missing does not exist',
  ]);
});

test('per-object acceptance: a bad object is left out, the rest applies, its last good version stays', () => {
  const base = [ns, node, svc('reviews'), svc('reviews-v2')];
  const first = buildModelPerObject([...base, route('reviews-v2', 5)], new Map());
  assert.ok(first.verdicts.every((v) => v.state === 'accepted'));
  assert.equal(first.model.httpRoutes[0]?.rules[0]?.backends[0]?.weight, 5);

  // The route now names a missing Service: the weight-5 version stays in force.
  const bad = route('reviews-v3', 7, 2);
  const second = buildModelPerObject([...base, bad], first.inForce);
  const v = second.verdicts.find((x) => x.id === 'HTTPRoute/shop/split');
  assert.equal(v?.state, 'kept-previous');
  assert.match(
    formatConfigError(v!.errors[0]!),
    /^HTTPRoute shop\/split: spec\.rules\[0\]\.backendRefs\[0\]\.name: /,
  );
  assert.equal(second.model.httpRoutes[0]?.rules[0]?.backends[0]?.weight, 5);
  assert.equal(second.model.services.size, 2);

  // Without a previous version it is simply not there.
  const fresh = buildModelPerObject([...base, bad], new Map());
  assert.equal(fresh.verdicts.find((x) => x.id === 'HTTPRoute/shop/split')?.state, 'rejected');
  assert.equal(fresh.model.httpRoutes.length, 0);

  // Dropping a bad Service also drops what then dangles (the route to it), and nothing else.
  const badSvc = obj({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'reviews-v2', namespace: 'shop' },
    spec: { clusterIP: '10.96.0.11', ports: [{ port: 99999 }] },
  });
  const cascade = buildModelPerObject([ns, node, svc('reviews'), badSvc, route('reviews-v2')], new Map());
  const states = Object.fromEntries(cascade.verdicts.map((x) => [x.id, x.state]));
  assert.equal(states['Service/shop/reviews-v2'], 'rejected');
  assert.equal(states['HTTPRoute/shop/split'], 'rejected');
  assert.equal(states['Service/shop/reviews'], 'accepted');
  assert.equal(cascade.model.services.size, 1);
});

const WATCHED_BY_KIND = Object.fromEntries(WATCHED.map((w) => [w.kind, w]));

test('projection keeps what the model reads and drops what the server sets', () => {
  const service: KubeObject = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'dns', namespace: 'kube-system', resourceVersion: '7', managedFields: [{}] },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.53',
      clusterIPs: ['10.96.0.53'],
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      internalTrafficPolicy: 'Cluster',
      selector: { k8s: 'dns' },
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
        { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53, nodePort: 30053 },
      ],
    },
    status: { loadBalancer: {} },
  };
  assert.deepEqual(WATCHED_BY_KIND.Service!.project(service), {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'dns', namespace: 'kube-system' },
    spec: {
      clusterIP: '10.96.0.53',
      selector: { k8s: 'dns' },
      ports: [{ port: 53, name: 'dns-tcp', targetPort: 53, protocol: 'TCP' }],
    },
  });
  const built = buildModel([obj(WATCHED_BY_KIND.Service!.project(service)!)]);
  assert.ok(built.ok, built.ok ? '' : built.errors.map(formatConfigError).join());
  // UDP-only and ExternalName Services are not mesh objects.
  assert.equal(
    WATCHED_BY_KIND.Service!.project({ ...service, spec: { ports: [{ port: 53, protocol: 'UDP' }] } }),
    undefined,
  );
  // A pod that ended has no IP any more; a running one keeps its podIP.
  const p: KubeObject = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'a', namespace: 'shop', uid: 'u1', labels: { app: 'a' } },
    spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'x', ports: [{ containerPort: 80 }] }] },
    status: { phase: 'Running', podIP: '10.1.1.1', conditions: [{ type: 'Ready', status: 'True' }] },
  };
  assert.deepEqual((WATCHED_BY_KIND.Pod!.project(p) as { status: unknown }).status, { podIP: '10.1.1.1' });
  assert.deepEqual(
    (
      WATCHED_BY_KIND.Pod!.project({ ...p, status: { phase: 'Succeeded', podIP: '10.1.1.1' } }) as {
        status: unknown;
      }
    ).status,
    {},
  );
  // Routes with only Gateway parents belong to a gateway implementation.
  const gw: KubeObject = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'r', namespace: 'shop' },
    spec: { parentRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'gw' }] },
  };
  assert.equal(WATCHED_BY_KIND.HTTPRoute!.project(gw), undefined);
});

test('route status: BackendNotFound on both conditions, one entry per Service parent, others kept', () => {
  const raw: KubeObject = {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'split', namespace: 'shop', generation: 3 },
    spec: {
      parentRefs: [
        { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'gw' },
        { group: '', kind: 'Service', name: 'reviews', port: 9080 },
      ],
    },
  };
  const verdict = {
    id: 'HTTPRoute/shop/split',
    object: route('missing'),
    state: 'rejected' as const,
    errors: [
      {
        file: 'HTTPRoute shop/split',
        line: 0,
        path: 'spec.rules[0].backendRefs[0].name',
        reason: 'Service shop/missing does not exist',
      },
    ],
  };
  const now = '2026-01-01T00:00:00Z';
  const ours = routeParentStatuses(verdict, raw, now);
  assert.equal(ours.length, 1);
  assert.deepEqual(ours[0]?.parentRef, { group: '', kind: 'Service', name: 'reviews', port: 9080 });
  assert.equal(ours[0]?.controllerName, CONTROLLER_NAME);
  assert.deepEqual(
    ours[0]?.conditions.map((c) => [c.type, c.status, c.reason, c.observedGeneration]),
    [
      ['Accepted', 'False', 'BackendNotFound', 3],
      ['ResolvedRefs', 'False', 'BackendNotFound', 3],
    ],
  );
  const other = { parentRef: { name: 'gw' }, controllerName: 'example.com/gateway', conditions: [] };
  const merged = mergeRouteParents([other], ours);
  assert.equal(merged.changed, true);
  assert.deepEqual(merged.parents[0], other);
  // Written once, the same verdict changes nothing (no write, the transition time kept).
  const again = mergeRouteParents(merged.parents, routeParentStatuses(verdict, raw, '2026-01-02T00:00:00Z'));
  assert.equal(again.changed, false);
  assert.equal(
    (again.parents[1] as { conditions: { lastTransitionTime: string }[] }).conditions[0]?.lastTransitionTime,
    now,
  );
  // A parent Service that does not exist: NoMatchingParent on that parent.
  const noParent = routeParentStatuses(
    {
      ...verdict,
      errors: [
        {
          ...verdict.errors[0]!,
          path: 'spec.parentRefs[0].name',
          reason: 'Service shop/reviews does not exist',
        },
      ],
    },
    raw,
    now,
  );
  assert.deepEqual(
    noParent[0]?.conditions.map((c) => [c.type, c.status, c.reason]),
    [
      ['Accepted', 'False', 'NoMatchingParent'],
      ['ResolvedRefs', 'True', 'ResolvedRefs'],
    ],
  );
});

test('policy status: TargetNotFound, Conflicted, Accepted; transition times carried', () => {
  const raw: KubeObject = {
    kind: 'TrafficPolicy',
    metadata: { name: 'p', namespace: 'shop', generation: 2 },
  };
  const v = (errors: { path: string; reason: string }[], state: 'accepted' | 'rejected' = 'rejected') => ({
    id: 'TrafficPolicy/shop/p',
    object: obj({ kind: 'TrafficPolicy', metadata: { name: 'p', namespace: 'shop' } }),
    state,
    errors: errors.map((e) => ({ file: 'TrafficPolicy shop/p', line: 0, ...e })),
  });
  const t = '2026-01-01T00:00:00Z';
  const notFound = policyConditions(
    v([{ path: 'spec.targetRef.name', reason: 'Service shop/x does not exist' }]),
    raw,
    t,
  );
  assert.deepEqual(
    notFound.map((c) => [c.type, c.status, c.reason, c.observedGeneration]),
    [
      ['Accepted', 'False', 'TargetNotFound', 2],
      ['ResolvedRefs', 'False', 'TargetNotFound', 2],
    ],
  );
  const conflicted = policyConditions(
    v([{ path: 'spec.targetRef', reason: 'Service shop/x already has TrafficPolicy shop/q' }]),
    raw,
    t,
  );
  assert.equal(conflicted[0]?.reason, 'Conflicted');
  const ok = policyConditions(v([], 'accepted'), raw, '2026-02-02T00:00:00Z');
  assert.deepEqual(
    ok.map((c) => [c.status, c.reason]),
    [
      ['True', 'Accepted'],
      ['True', 'ResolvedRefs'],
    ],
  );
  // False -> True moves the transition time; an unchanged status keeps it.
  const carried = carryTransitionTimes(ok, notFound);
  assert.equal(carried[0]?.lastTransitionTime, '2026-02-02T00:00:00Z');
  const same = carryTransitionTimes(
    ok,
    ok.map((c) => ({ ...c, lastTransitionTime: t })),
  );
  assert.equal(same[1]?.lastTransitionTime, t);
});
