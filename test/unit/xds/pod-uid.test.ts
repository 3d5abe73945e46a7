// A Pod's UID and QoS class (set by the API server) reach its node's agent in the inbound
// listener's per-pod metadata, through the real Envoy protos; pods without them translate as before.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INBOUND_LISTENER, LocalView } from '../../../mesh-agent/agent/local-view.js';
import { MeshState } from '../../../mesh-agent/state/mesh-state.js';
import { decodeResource, encodeResource } from '../../../xds/codec.js';
import { buildModel } from '../../../xds/model/build.js';
import { LISTENER_TYPE } from '../../../xds/protos.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';
import { translateForNode } from '../../../xds/translate/index.js';

const UID = '0b6f1d2e-1111-4a2b-8c3d-9e8f7a6b5c4d';

const MANIFESTS = `
apiVersion: sockmesh.io/v1alpha1
kind: Node
metadata: {name: node1}
spec: {address: 10.99.0.1}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {sockmesh.io/mesh: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: shop, uid: ${UID}, labels: {app: api}}
spec: {nodeName: node1, containers: [{name: app, image: sockmesh/example, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.1.10, qosClass: Burstable}
---
apiVersion: v1
kind: Pod
metadata: {name: plain-1, namespace: shop, labels: {app: plain}}
spec: {nodeName: node1}
status: {podIP: 10.244.1.11}
`;

function localView(text: string): LocalView {
  const parsed = parseManifestText('m.yaml', text);
  assert.deepEqual(parsed.errors, []);
  const built = buildModel(parsed.objects, {});
  assert.ok(built.ok, built.ok ? '' : JSON.stringify(built.errors));
  const inbound = translateForNode(built.model, 'node1').listeners.find(
    (l) => (l as { name?: string }).name === INBOUND_LISTENER,
  );
  assert.ok(inbound);
  const wire = decodeResource(LISTENER_TYPE, encodeResource(LISTENER_TYPE, inbound)) as Record<
    string,
    unknown
  >;
  return LocalView.build(wire, MeshState.empty());
}

test('a pod UID and QoS class reach the agent in the inbound listener metadata', () => {
  const view = localView(MANIFESTS);
  const api = view.byIp('10.244.1.10');
  assert.equal(api?.uid, UID);
  assert.equal(api?.qosClass, 'Burstable');
  const plain = view.byIp('10.244.1.11');
  assert.equal(plain?.name, 'plain-1');
  assert.equal(plain?.uid, undefined);
  assert.equal(plain?.qosClass, undefined);
});

test('a malformed UID or QoS class is a manifest error with its field', () => {
  const bad = MANIFESTS.replace(UID, 'not/a-uid').replace('qosClass: Burstable', 'qosClass: Gold');
  const parsed = parseManifestText('m.yaml', bad);
  const built = buildModel(parsed.objects, {});
  assert.equal(built.ok, false);
  const fields = built.ok ? [] : built.errors.map((e) => e.path);
  assert.ok(
    fields.some((f) => String(f).includes('metadata.uid')),
    JSON.stringify(fields),
  );
  assert.ok(
    fields.some((f) => String(f).includes('status.qosClass')),
    JSON.stringify(fields),
  );
});
