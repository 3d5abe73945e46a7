// The DiscoveryResponse envelope as the agent's xDS client reads it: resources stay raw Any, other
// fields are skipped by wire type, a broken envelope throws, a broken Any is marked (to be NACKed).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRawResponse, wireProblem } from '../../../xds/client/raw-response.js';
import { encodeResource } from '../../../xds/codec.js';
import { CLUSTER_TYPE, encodeMessage } from '../../../xds/protos.js';

const RESPONSE = 'envoy.service.discovery.v3.DiscoveryResponse';
const cluster = encodeResource(CLUSTER_TYPE, { name: 'c1', type: 'EDS' });

test('the envelope is read, resources kept as bytes, other fields skipped', () => {
  const bytes = encodeMessage(RESPONSE, {
    version_info: '7',
    type_url: CLUSTER_TYPE,
    nonce: 'n1',
    canary: true,
    control_plane: { identifier: 'cp' },
    resources: [{ type_url: CLUSTER_TYPE, value: cluster }],
  });
  const r = decodeRawResponse(bytes);
  assert.equal(r.version_info, '7');
  assert.equal(r.type_url, CLUSTER_TYPE);
  assert.equal(r.nonce, 'n1');
  assert.equal(r.resources.length, 1);
  assert.equal(r.resources[0]?.type_url, CLUSTER_TYPE);
  assert.deepEqual(Buffer.from(r.resources[0]!.value), cluster);
  assert.equal(r.resources[0]?.malformed, undefined);
});

test('a broken envelope throws; a broken Any inside a sound envelope is marked', () => {
  const good = encodeMessage(RESPONSE, { version_info: '7', type_url: CLUSTER_TYPE, nonce: 'n1' });
  assert.throws(() => decodeRawResponse(good.subarray(0, good.length - 1)), /past the end/);
  assert.throws(() => decodeRawResponse(Buffer.from([0x0f])), /wire type 7/);
  // field 2 (resources), length 3, holding a tag with wire type 7
  const r = decodeRawResponse(Buffer.concat([good, Buffer.from([0x12, 0x03, 0x0f, 0x00, 0x00])]));
  assert.equal(r.nonce, 'n1');
  assert.match(r.resources[0]?.malformed ?? '', /wire type 7/);
});

test('wireProblem finds a resource cut inside its last field', () => {
  assert.equal(wireProblem(cluster), undefined);
  assert.match(wireProblem(cluster.subarray(0, 3)) ?? '', /past the end/);
  assert.equal(wireProblem(Buffer.alloc(0)), undefined);
});
