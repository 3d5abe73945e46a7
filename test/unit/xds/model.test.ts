// Manifest validation: every error names file, line, field path and reason, exactly.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildModel } from '../../../xds/model/build.js';
import { parseDuration } from '../../../xds/model/reader.js';
import { formatConfigError } from '../../../xds/sources/source.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';

function errorsOf(text: string): string[] {
  const parsed = parseManifestText('m.yaml', text);
  if (parsed.errors.length > 0) return parsed.errors.map(formatConfigError);
  const r = buildModel(parsed.objects);
  return r.ok ? [] : r.errors.map(formatConfigError);
}

const SVC = `apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  selector: { app: reviews }
  ports:
    - name: http
      port: 9080
      appProtocol: http
    - name: tcp
      port: 9081
`;

test('a valid set builds', () => {
  assert.deepEqual(errorsOf(SVC), []);
});

test('YAML syntax errors carry the line', () => {
  const errs = errorsOf('apiVersion: v1\nkind: Service\nmetadata: {name: x\n');
  assert.equal(errs.length > 0, true);
  assert.match(errs[0]!, /^m\.yaml:4: YAML syntax: /);
});

test('unsupported kinds and apiVersions', () => {
  assert.deepEqual(errorsOf('apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\n'), [
    "m.yaml:2: kind: unsupported kind 'Deployment' (supported: Namespace, Service, Pod, Node, HTTPRoute, GRPCRoute, TCPRoute, TrafficPolicy, AuthorizationPolicy, CanaryGuard)",
  ]);
  assert.deepEqual(errorsOf('apiVersion: v2\nkind: Service\nmetadata: { name: x }\n'), [
    "m.yaml:1: apiVersion: Service needs apiVersion v1, got 'v2'",
  ]);
});

test('Service field errors', () => {
  const bad = SVC.replace(
    '    - name: tcp\n      port: 9081\n',
    '    - port: 9081\n      protocol: UDP\n',
  ).replace('clusterIP: 10.96.0.10', 'clusterIP: 10.96.0.300');
  assert.deepEqual(errorsOf(bad), [
    "m.yaml:7: spec.clusterIP: must be an IPv4 address or None, got '10.96.0.300'",
    'm.yaml:13: spec.ports[1].name: required when a Service has several ports',
    "m.yaml:14: spec.ports[1].protocol: only TCP is supported, got 'UDP'",
  ]);
  assert.deepEqual(errorsOf(SVC.replace('port: 9081', 'port: 9080')), [
    'm.yaml:14: spec.ports[1].port: duplicate port 9080 (also at spec.ports[0])',
  ]);
  assert.deepEqual(errorsOf(SVC.replace('appProtocol: http', 'appProtocl: http')), [
    'm.yaml:12: spec.ports[0].appProtocl: unknown field (expected one of: name, port, targetPort, appProtocol, protocol)',
  ]);
});

test('duplicates name the first declaration', () => {
  assert.deepEqual(errorsOf(`${SVC}---\n${SVC}`), [
    'm.yaml:19: metadata.name: duplicate Service shop/reviews (first declared at m.yaml:1)',
  ]);
});

const ROUTE = `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: r, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: reviews, port: 9080 }]
  rules:
    - matches:
        - path: { type: PathPrefix, value: /api }
      backendRefs:
        - name: reviews
          port: 9080
          weight: 5
`;

test('HTTPRoute references and values are checked', () => {
  assert.deepEqual(errorsOf(SVC + ROUTE), []);
  assert.deepEqual(
    errorsOf(
      SVC + ROUTE.replace('name: reviews\n          port: 9080', 'name: ratings\n          port: 9080'),
    ),
    ['m.yaml:25: spec.rules[0].backendRefs[0].name: Service shop/ratings does not exist'],
  );
  assert.deepEqual(
    errorsOf(SVC + ROUTE.replace('port: 9080\n          weight', 'port: 1\n          weight')),
    ['m.yaml:26: spec.rules[0].backendRefs[0].port: Service shop/reviews has no port 1'],
  );
  assert.deepEqual(errorsOf(SVC + ROUTE.replace('weight: 5', 'weight: -1')), [
    'm.yaml:27: spec.rules[0].backendRefs[0].weight: must be >= 0, got -1',
  ]);
  assert.deepEqual(errorsOf(SVC + ROUTE.replace('port: 9080 }]', 'port: 9081 }]')), [
    'm.yaml:20: spec.parentRefs[0].port: port 9081 of Service shop/reviews is declared non-HTTP (tcp); set appProtocol: http, http2 or grpc, or leave it undeclared to have HTTP detected',
  ]);
  // A port that names no protocol is detected per connection: an HTTPRoute may route its HTTP...
  const detected = SVC.replace('- name: tcp', '- name: web');
  assert.deepEqual(errorsOf(detected + ROUTE.replace('port: 9080 }]', 'port: 9081 }]')), []);
  // ...unless a TCPRoute carries that port as TCP (here one without a port: every non-HTTP port).
  const tcpRoute = `---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: { name: t, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: reviews }]
  rules: [{ backendRefs: [{ name: reviews, port: 9081 }] }]
`;
  assert.deepEqual(errorsOf(detected + ROUTE.replace('port: 9080 }]', 'port: 9081 }]') + tcpRoute), [
    'm.yaml:20: spec.parentRefs[0].port: port 9081 of Service shop/reviews is carried as TCP by TCPRoute shop/t: detach one of the two routes',
  ]);
  assert.deepEqual(errorsOf(SVC + ROUTE.replace('value: /api', 'value: api')), [
    "m.yaml:23: spec.rules[0].matches[0].path.value: must start with '/', got 'api'",
  ]);
  assert.deepEqual(errorsOf(SVC + ROUTE.replace('kind: Service, name', 'kind: Gateway, name')), [
    "m.yaml:20: spec.parentRefs[0].kind: must be Service (GAMMA), got 'Gateway'",
  ]);
});

test('TrafficPolicy and AuthorizationPolicy checks', () => {
  const tp = `---
apiVersion: sockmesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: p, namespace: shop }
spec:
  targetRef: { kind: Service, name: reviews }
  loadBalancer:
    type: RING_HASH
  outlierDetection:
    interval: 10 seconds
`;
  assert.deepEqual(errorsOf(SVC + tp), [
    'm.yaml:21: spec.loadBalancer.hashHeader: required when type is RING_HASH',
    "m.yaml:24: spec.outlierDetection.interval: invalid duration '10 seconds': use e.g. 500ms, 10s, 1m30s",
  ]);
  const ap = `---
apiVersion: sockmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: a, namespace: shop }
spec:
  action: MAYBE
  rules:
    - from:
        - principals: ["spiffe://cluster.local/*/sa/x"]
      to:
        - methods: [FETCH]
`;
  assert.deepEqual(errorsOf(SVC + ap), [
    "m.yaml:20: spec.action: must be one of ALLOW, DENY, got 'MAYBE'",
    "m.yaml:23: spec.rules[0].from[0].principals[0]: 'spiffe://cluster.local/*/sa/x': use '*' alone, or one '*' at the start or the end",
    "m.yaml:25: spec.rules[0].to[0].methods[0]: unknown HTTP method 'FETCH'",
  ]);
});

test('Gateway API durations', () => {
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('0s'), 0);
  assert.equal(parseDuration('1.5s'), undefined);
  assert.equal(parseDuration('10'), undefined);
});

test('namespace membership label', () => {
  const parsed = parseManifestText(
    'n.yaml',
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    sockmesh.io/mesh: enabled\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: b }\n',
  );
  const r = buildModel(parsed.objects);
  assert.ok(r.ok);
  assert.equal(r.model.namespaces.get('a')?.meshed, true);
  assert.equal(r.model.namespaces.get('b')?.meshed, false);
  assert.deepEqual(
    errorsOf(
      'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    sockmesh.io/mesh: "yes"\n',
    ),
    ["m.yaml:6: metadata.labels.sockmesh.io/mesh: must be 'enabled' or 'disabled', got 'yes'"],
  );
});

test('namespace mTLS mode label: strict by default, permissive on request, nothing else', () => {
  const parsed = parseManifestText(
    'n.yaml',
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    sockmesh.io/mesh: enabled\n    sockmesh.io/mtls: permissive\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: b, labels: { sockmesh.io/mesh: enabled } }\n',
  );
  const r = buildModel(parsed.objects);
  assert.ok(r.ok);
  assert.equal(r.model.namespaces.get('a')?.mtlsMode, 'permissive');
  assert.equal(r.model.namespaces.get('b')?.mtlsMode, 'strict');
  assert.deepEqual(
    errorsOf(
      'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels:\n    sockmesh.io/mtls: open\n',
    ),
    ["m.yaml:6: metadata.labels.sockmesh.io/mtls: must be 'strict' or 'permissive', got 'open'"],
  );
});

test('two Services cannot share a cluster IP (found by the manifest fuzzer: both chains matched one VIP)', () => {
  const other = SVC.replace('name: reviews\n', 'name: reviews-copy\n');
  assert.deepEqual(errorsOf(`${SVC}---\n${other}`), [
    'm.yaml:22: spec.clusterIP: 10.96.0.10 is already the cluster IP of Service shop/reviews (m.yaml:1)',
  ]);
  assert.deepEqual(errorsOf(`${SVC}---\n${other.replace('clusterIP: 10.96.0.10', 'clusterIP: None')}`), []);
});
