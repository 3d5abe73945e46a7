// The agent's AdsClient against the real server: full config, live edits, invalid edits,
// validator NACKs and a server restart on the same unix socket.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { nullLogger } from '../../../lib/log.js';
import { AdsClient, type XdsConfig } from '../../../xds/client/ads-client.js';
import { ENDPOINT_TYPE } from '../../../xds/protos.js';
import { ControlPlane } from '../../../xds/server/control-plane.js';
import { DirectorySource } from '../../../xds/sources/directory.js';
import { MESH, startControlPlane } from './helpers.js';

const CLUSTER = 'outbound|9080||reviews.shop.svc.cluster.local';

function waitFor(client: AdsClient, pred: (c: XdsConfig) => boolean, ms = 5000): Promise<XdsConfig> {
  if (pred(client.config())) return Promise.resolve(client.config());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('update', on);
      reject(
        new Error(`condition not met within ${ms} ms; versions ${JSON.stringify(client.config().versions)}`),
      );
    }, ms);
    const on = (c: XdsConfig) => {
      if (!pred(c)) return;
      clearTimeout(timer);
      client.off('update', on);
      resolve(c);
    };
    client.on('update', on);
  });
}

const endpointIps = (c: XdsConfig): string[] =>
  JSON.stringify(c.endpoints.get(CLUSTER) ?? {}).match(/"address":"[\d.]+"/g) ?? [];

test('AdsClient receives LDS/RDS/CDS/EDS, decoded, with sockmesh endpoint metadata', async (t) => {
  const fx = await startControlPlane(t);
  const client = new AdsClient({
    target: fx.unix,
    node: { id: 'node1', metadata: { underlayIp: '10.99.0.1' } },
    logger: nullLogger,
  });
  t.after(() => client.close());
  client.start();
  const c = await waitFor(client, (x) => x.endpoints.has(CLUSTER) && x.routes.size > 0);
  assert.equal(client.isConnected, true);
  assert.deepEqual([...c.listeners.keys()].sort(), ['sockmesh-inbound', 'sockmesh-outbound']);
  assert.deepEqual([...c.routes.keys()], ['reviews.shop.svc.cluster.local:9080']);
  const cla = c.endpoints.get(CLUSTER) as {
    endpoints: {
      locality: { zone: string };
      lb_endpoints: { metadata: { filter_metadata: { sockmesh: unknown } } }[];
    }[];
  };
  assert.equal(cla.endpoints[0]?.locality.zone, 'node1');
  assert.deepEqual(cla.endpoints[0]?.lb_endpoints[0]?.metadata.filter_metadata.sockmesh, {
    pod: 'reviews-1',
    namespace: 'shop',
    node: 'node1',
    podIp: '10.1.1.10',
    tunnelAddress: '10.99.0.1:15008',
    spiffeId: 'spiffe://cluster.local/ns/shop/sa/default',
    serviceAccount: 'default',
    meshed: true,
  });
  const hcm = (
    c.listeners.get('sockmesh-outbound') as {
      filter_chains: { filters: { typed_config: Record<string, unknown> }[] }[];
    }
  ).filter_chains[0]?.filters[0]?.typed_config;
  assert.equal(
    hcm?.['@type'],
    'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  );
});

test('a file edit reaches a connected client quickly; an invalid edit is rejected with file:line and the old config stays', async (t) => {
  const fx = await startControlPlane(t);
  const client = new AdsClient({ target: fx.tcp, node: { id: 'node1' }, logger: nullLogger });
  t.after(() => client.close());
  client.start();
  await waitFor(client, (c) => endpointIps(c).length === 2);
  const started = performance.now();
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.77'));
  await waitFor(client, (c) => endpointIps(c).includes('"address":"10.1.1.77"'));
  const ms = performance.now() - started;
  assert.ok(ms < 1000, `edit took ${ms.toFixed(0)} ms to reach the client`);
  const version = client.config().versions.EDS;

  const rejected = fx.nextReload();
  await fx.write(
    'bad.yaml',
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n  namespace: shop\nspec:\n  ports:\n    - port: 99999\n',
  );
  const r = await rejected;
  assert.equal(r.applied, false);
  assert.deepEqual(!r.applied && r.errors, [
    { file: 'bad.yaml', line: 8, path: 'spec.ports[0].port', reason: 'must be <= 65535, got 99999' },
  ]);
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.88')); // valid edit, but bad.yaml still poisons the set
  const r2 = await fx.nextReload();
  assert.equal(r2.applied, false);
  assert.equal(fx.cp.snapshot?.version, r.version);
  assert.equal(client.config().versions.EDS, version);
  assert.ok(endpointIps(client.config()).includes('"address":"10.1.1.77"'));
});

test('a validator rejection is NACKed with its message; the client keeps the last accepted config', async (t) => {
  const fx = await startControlPlane(t);
  const client = new AdsClient({
    target: fx.unix,
    node: { id: 'node1' },
    logger: nullLogger,
    validate: (typeUrl, resources) =>
      typeUrl === ENDPOINT_TYPE && JSON.stringify([...resources.values()]).includes('10.1.1.66')
        ? 'pod IP 10.1.1.66 is banned'
        : undefined,
  });
  t.after(() => client.close());
  client.start();
  await waitFor(client, (c) => endpointIps(c).length === 2);
  const before = client.config().versions.EDS;
  const nack = once(fx.cp.ads, 'nack');
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.66'));
  const [e] = await nack;
  assert.equal(e.errorDetail, 'pod IP 10.1.1.66 is banned');
  assert.equal(client.config().versions.EDS, before);
  assert.ok(endpointIps(client.config()).includes('"address":"10.1.1.10"'));
  assert.equal(fx.cp.ads.clients()[0]?.acked.EDS, before);
});

test('the client survives a server restart: keeps its config while down, reconnects and resyncs', async (t) => {
  const fx = await startControlPlane(t);
  const client = new AdsClient({
    target: fx.unix,
    node: { id: 'node1' },
    logger: nullLogger,
    backoff: { initialMs: 50, maxMs: 200 },
  });
  t.after(() => client.close());
  client.start();
  await waitFor(client, (c) => endpointIps(c).length === 2);
  const down = once(client, 'disconnected');
  await fx.cp.close();
  await down;
  assert.equal(client.config().clusters.has(CLUSTER), true, 'config kept while disconnected');
  await fx.write('mesh.yaml', MESH.replace('10.1.1.10', '10.1.1.99'));
  const cp2 = new ControlPlane({
    source: new DirectorySource(fx.dir),
    listen: [{ address: fx.unix }],
    logger: nullLogger,
  });
  t.after(() => cp2.close());
  const up = once(client, 'connected');
  await cp2.start();
  await up;
  await waitFor(client, (c) => endpointIps(c).includes('"address":"10.1.1.99"'));
  assert.ok(client.config().clusters.has(CLUSTER));
});
