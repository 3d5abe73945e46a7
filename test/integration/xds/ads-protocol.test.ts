// ADS protocol rules against the real server over real gRPC (unix socket and loopback TCP).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../../../xds/protos.js';
import { MESH, RawAds, startControlPlane } from './helpers.js';

const names = (r: { resources: { name?: unknown; cluster_name?: unknown }[] }) =>
  r.resources.map((x) => String(x.name ?? x.cluster_name)).sort();

test('wildcard CDS: version, nonce, ACK recorded; nothing resent after ACK', async (t) => {
  const fx = await startControlPlane(t);
  const ads = new RawAds(fx.unix);
  t.after(() => ads.close());
  ads.send({ node: 'node1', type: CLUSTER_TYPE });
  const r1 = await ads.next();
  assert.equal(r1.type_url, CLUSTER_TYPE);
  assert.equal(r1.version_info, '1');
  assert.ok(r1.nonce.length > 0);
  assert.deepEqual(names(r1), ['outbound|9080||reviews.shop.svc.cluster.local', 'sockmesh-passthrough']);
  const acked = once(fx.cp.ads, 'ack');
  ads.send({ type: CLUSTER_TYPE, version: r1.version_info, nonce: r1.nonce });
  const [ack] = await acked;
  assert.deepEqual(ack, { node: 'node1', typeUrl: CLUSTER_TYPE, version: '1' });
  assert.equal(await ads.quiet(300), true);
  assert.deepEqual(fx.cp.ads.clients(), [{ node: 'node1', acked: { CDS: '1' } }]);
});

test('NACK is reported with error_detail, not resent; the next change is pushed with a new version and nonce', async (t) => {
  const fx = await startControlPlane(t);
  const ads = new RawAds(fx.tcp);
  t.after(() => ads.close());
  ads.send({ node: 'node1', type: ENDPOINT_TYPE, names: ['outbound|9080||reviews.shop.svc.cluster.local'] });
  const r1 = await ads.next();
  assert.equal(r1.resources.length, 1);
  const nacked = once(fx.cp.ads, 'nack');
  ads.send({
    type: ENDPOINT_TYPE,
    names: ['outbound|9080||reviews.shop.svc.cluster.local'],
    nonce: r1.nonce,
    error: 'endpoint 10.1.1.10 unreachable',
  });
  const [nack] = await nacked;
  assert.deepEqual(nack, {
    node: 'node1',
    typeUrl: ENDPOINT_TYPE,
    version: '1',
    errorDetail: 'endpoint 10.1.1.10 unreachable',
  });
  assert.equal(await ads.quiet(300), true, 'a NACKed version must not be resent');
  assert.deepEqual(fx.cp.ads.clients()[0]?.acked, { EDS: undefined });
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.11'));
  const r2 = await ads.next();
  assert.equal(r2.version_info, '2');
  assert.notEqual(r2.nonce, r1.nonce);
  const addrs = JSON.stringify(r2.resources);
  assert.ok(addrs.includes('10.1.1.11') && !addrs.includes('10.1.1.10'));
});

test('a request with a stale nonce is ignored', async (t) => {
  const fx = await startControlPlane(t);
  const ads = new RawAds(fx.unix);
  t.after(() => ads.close());
  ads.send({ node: 'node1', type: CLUSTER_TYPE });
  const r1 = await ads.next();
  await fx.write('mesh.yaml', MESH.replace('port: 9080', 'port: 9081'));
  const r2 = await ads.next();
  assert.notEqual(r2.nonce, r1.nonce);
  let acks = 0;
  fx.cp.ads.on('ack', () => acks++);
  ads.send({ type: CLUSTER_TYPE, version: '1', nonce: r1.nonce }); // answers r1: superseded
  assert.equal(await ads.quiet(200), true);
  assert.equal(acks, 0);
  ads.send({ type: CLUSTER_TYPE, version: r2.version_info, nonce: r2.nonce });
  await once(fx.cp.ads, 'ack');
});

test('named RDS subscriptions get only those resources; changing the names pushes the new set', async (t) => {
  const fx = await startControlPlane(t);
  const ads = new RawAds(fx.unix);
  t.after(() => ads.close());
  ads.send({ node: 'node1', type: ROUTE_TYPE, names: ['nope:1'] });
  assert.equal(await ads.quiet(200), true, 'no response for names that do not exist');
  ads.send({ type: ROUTE_TYPE, names: ['reviews.shop.svc.cluster.local:9080'] });
  const r = await ads.next();
  assert.deepEqual(names(r), ['reviews.shop.svc.cluster.local:9080']);
});

test('two nodes get different per-node listeners; LDS for an API listener name resolves on demand', async (t) => {
  const fx = await startControlPlane(t);
  const a = new RawAds(fx.unix);
  const b = new RawAds(fx.unix);
  t.after(() => {
    a.close();
    b.close();
  });
  a.send({ node: 'node1', type: LISTENER_TYPE });
  b.send({ node: 'node2', type: LISTENER_TYPE });
  const [ra, rb] = await Promise.all([a.next(), b.next()]);
  const inbound = (r: typeof ra) => JSON.stringify(r.resources.find((x) => x.name === 'sockmesh-inbound'));
  assert.deepEqual(names(ra), ['sockmesh-inbound', 'sockmesh-outbound']);
  assert.ok(inbound(ra).includes('10.1.1.10') && !inbound(ra).includes('10.1.2.10'));
  assert.ok(inbound(rb).includes('10.1.2.10') && !inbound(rb).includes('10.1.1.10'));
  const c = new RawAds(fx.unix);
  t.after(() => c.close());
  c.send({ node: 'grpc-client', type: LISTENER_TYPE, names: ['reviews.shop:9080'] });
  const rc = await c.next();
  assert.deepEqual(names(rc), ['reviews.shop:9080']);
  assert.equal(
    (rc.resources[0]!.api_listener as { api_listener: { rds: { route_config_name: string } } }).api_listener
      .rds.route_config_name,
    'reviews.shop.svc.cluster.local:9080',
  );
});

test('a reconnecting client (old version, no nonce) gets the current state at once', async (t) => {
  const fx = await startControlPlane(t);
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.12'));
  await fx.nextReload();
  const ads = new RawAds(fx.unix);
  t.after(() => ads.close());
  ads.send({ node: 'node1', type: CLUSTER_TYPE, version: '1' });
  const r = await ads.next();
  assert.equal(r.version_info, '2');
});

test('node metadata underlayIp fills in an undeclared node address', async (t) => {
  const fx = await startControlPlane(t, {
    'mesh.yaml': MESH.replace(/spec: \{ address: 10\.99\.0\.2 \}/, 'spec: { address: 10.99.0.2 }').replace(
      'nodeName: node2',
      'nodeName: node3',
    ),
  });
  const ads = new RawAds(fx.unix);
  t.after(() => ads.close());
  ads.send({
    node: 'node3',
    type: ENDPOINT_TYPE,
    names: ['outbound|9080||reviews.shop.svc.cluster.local'],
    metadata: { underlayIp: '10.99.0.3' },
  });
  let r = await ads.next();
  while (!JSON.stringify(r.resources).includes('10.99.0.3:15008')) r = await ads.next();
  assert.ok(JSON.stringify(r.resources).includes('"tunnelAddress":"10.99.0.3:15008"'));
});

test('wildcard EDS sends only what changed; wildcard CDS resends the full set when a cluster goes away', async (t) => {
  const extra =
    '---\napiVersion: v1\nkind: Service\nmetadata: { name: ratings, namespace: shop }\nspec:\n  clusterIP: 10.96.0.11\n  selector: { app: ratings }\n  ports: [{ port: 7000 }]\n';
  const fx = await startControlPlane(t, { 'mesh.yaml': MESH + extra });
  const eds = new RawAds(fx.unix);
  const cds = new RawAds(fx.unix);
  t.after(() => {
    eds.close();
    cds.close();
  });
  eds.send({ node: 'node1', type: ENDPOINT_TYPE });
  cds.send({ node: 'node1', type: CLUSTER_TYPE });
  const [e1, c1] = await Promise.all([eds.next(), cds.next()]);
  assert.equal(e1.resources.length, 2);
  assert.equal(c1.resources.length, 3);
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.13') + extra);
  const e2 = await eds.next();
  assert.deepEqual(names(e2), ['outbound|9080||reviews.shop.svc.cluster.local']);
  assert.equal(await cds.quiet(200), true, 'clusters did not change');
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.13'));
  const c2 = await cds.next();
  assert.deepEqual(names(c2), ['outbound|9080||reviews.shop.svc.cluster.local', 'sockmesh-passthrough']);
  assert.equal(await eds.quiet(200), true, 'a removed CLA is not announced in state of the world');
});

test('labelling a namespace out of the mesh removes its pods from the node inbound listener live', async (t) => {
  const fx = await startControlPlane(t);
  const ads = new RawAds(fx.unix);
  t.after(() => ads.close());
  ads.send({ node: 'node1', type: LISTENER_TYPE });
  const chains = (r: { resources: Record<string, unknown>[] }) =>
    (
      (r.resources.find((x) => x.name === 'sockmesh-inbound')?.filter_chains as
        | { name: string }[]
        | undefined) ?? []
    ).map((c) => c.name);
  const r1 = await ads.next();
  assert.deepEqual(chains(r1), ['inbound|shop/reviews-1']);
  await fx.write('mesh.yaml', MESH.replace('labels: { sockmesh.io/mesh: enabled }', 'labels: {}'));
  const r2 = await ads.next();
  assert.deepEqual(chains(r2), []);
  await fx.write('mesh.yaml', MESH);
  assert.deepEqual(chains(await ads.next()), ['inbound|shop/reviews-1']);
});
