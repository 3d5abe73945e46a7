// Resource naming (what a gRPC target may be called) and the metadata codec.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeResource, encodeResource, jsonToStruct, structToJson } from '../../../xds/codec.js';
import { buildModel } from '../../../xds/model/build.js';
import { CLUSTER_TYPE } from '../../../xds/protos.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';
import {
  clusterName,
  resolveApiListenerName,
  routeConfigName,
  spiffeId,
} from '../../../xds/translate/names.js';

const MESH = `apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: shop }
spec:
  selector: { app: reviews }
  ports: [{ name: http, port: 9080, appProtocol: http }, { name: grpc, port: 9090, appProtocol: grpc }, { name: tcp, port: 5000 }]
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports: [{ name: http, port: 80 }]
`;

test('API listener names: canonical and short forms', () => {
  const r = buildModel(parseManifestText('m.yaml', MESH).objects, { clusterDomain: 'example.org' });
  assert.ok(r.ok);
  const resolve = (n: string) => {
    const hit = resolveApiListenerName(r.model, n);
    return hit ? `${hit.service.namespace}/${hit.service.name}:${hit.port.port}` : undefined;
  };
  assert.equal(resolve('reviews.shop.svc.example.org:9080'), 'shop/reviews:9080');
  assert.equal(resolve('reviews.shop.svc:9090'), 'shop/reviews:9090');
  assert.equal(resolve('reviews.shop:9080'), 'shop/reviews:9080');
  assert.equal(resolve('reviews.shop.svc.cluster.local:9080'), undefined, 'wrong cluster domain');
  assert.equal(resolve('reviews.shop:5000'), undefined, 'TCP port');
  assert.equal(resolve('reviews.shop'), undefined, 'two HTTP ports: the port is required');
  assert.equal(resolve('web'), 'default/web:80');
  assert.equal(resolve('web:80'), 'default/web:80');
  assert.equal(resolve('web.default'), 'default/web:80');
  assert.equal(resolve('nope.shop:1'), undefined);
  assert.equal(
    routeConfigName(r.model, { namespace: 'shop', name: 'reviews' }, 9080),
    'reviews.shop.svc.example.org:9080',
  );
  assert.equal(
    clusterName(r.model, { namespace: 'shop', name: 'reviews' }, 9080),
    'outbound|9080||reviews.shop.svc.example.org',
  );
  assert.equal(spiffeId('td.example', 'shop', 'reviews'), 'spiffe://td.example/ns/shop/sa/reviews');
});

test('filter_metadata is plain JSON on both sides of the wire', () => {
  const md = { s: 'x', n: 1.5, b: false, nil: null, list: [1, 'a'], nested: { k: 'v' } };
  assert.deepEqual(structToJson(jsonToStruct(md)), md);
  const bytes = encodeResource(CLUSTER_TYPE, { name: 'c', metadata: { filter_metadata: { sockmesh: md } } });
  assert.deepEqual(decodeResource(CLUSTER_TYPE, bytes), {
    name: 'c',
    metadata: { filter_metadata: { sockmesh: md } },
  });
});
