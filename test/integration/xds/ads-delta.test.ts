// Incremental xDS (DeltaAggregatedResources) against the real server.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { adsClientConstructor, CLUSTER_TYPE } from '../../../xds/protos.js';
import { MESH, NoResponse, quietOn, StreamEnd, startControlPlane } from './helpers.js';

interface DeltaResponse {
  system_version_info: string;
  type_url: string;
  nonce: string;
  resources?: { name: string; version: string; resource: { name?: string } }[];
  removed_resources?: string[];
}

class RawDelta {
  private readonly client;
  private readonly stream: ClientDuplexStream<object, DeltaResponse>;
  private readonly queue: DeltaResponse[] = [];
  private waiter: ((r: DeltaResponse) => void) | undefined;
  private readonly ended = new StreamEnd();

  constructor(target: string) {
    const Ctor = adsClientConstructor();
    this.client = new Ctor(target, credentials.createInsecure());
    this.stream = (
      this.client as unknown as { DeltaAggregatedResources(): ClientDuplexStream<object, DeltaResponse> }
    ).DeltaAggregatedResources();
    this.stream.on('data', (r: DeltaResponse) => {
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(r);
      else this.queue.push(r);
    });
    this.ended.watch(this.stream);
  }

  send(req: Record<string, unknown>): void {
    this.stream.write(req);
  }

  next(ms = 3000): Promise<DeltaResponse> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    this.ended.throwIfEnded();
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        stopWaiting();
        this.waiter = undefined;
      };
      const timer = setTimeout(() => {
        finish();
        reject(new NoResponse(`no DeltaDiscoveryResponse within ${ms} ms`));
      }, ms);
      const stopWaiting = this.ended.onEnd((err) => {
        finish();
        reject(err);
      });
      this.waiter = (r) => {
        finish();
        resolve(r);
      };
    });
  }

  /** true when nothing arrives within `ms` on a live stream; a dead stream rejects. */
  quiet(ms: number): Promise<boolean> {
    return quietOn(this.next(ms), this.ended);
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }
}

const RATINGS =
  '---\napiVersion: v1\nkind: Service\nmetadata: { name: ratings, namespace: shop }\nspec:\n  clusterIP: 10.96.0.11\n  selector: { app: ratings }\n  ports: [{ port: 7000 }]\n';

test('delta CDS: full set first, then only changes and removals; ACK and NACK reported', async (t) => {
  const fx = await startControlPlane(t, { 'mesh.yaml': MESH + RATINGS });
  const d = new RawDelta(fx.unix);
  t.after(() => d.close());
  d.send({ node: { id: 'node1' }, type_url: CLUSTER_TYPE, resource_names_subscribe: ['*'] });
  const r1 = await d.next();
  assert.deepEqual(r1.resources?.map((r) => r.name).sort(), [
    'outbound|7000||ratings.shop.svc.cluster.local',
    'outbound|9080||reviews.shop.svc.cluster.local',
    'sockmesh-passthrough',
  ]);
  assert.equal(r1.system_version_info, '1');
  const acked = once(fx.cp.ads, 'ack');
  d.send({ type_url: CLUSTER_TYPE, response_nonce: r1.nonce });
  assert.deepEqual((await acked)[0], { node: 'node1', typeUrl: CLUSTER_TYPE, version: '1' });

  await fx.write('mesh.yaml', MESH + RATINGS.replace('port: 7000', 'port: 7001'));
  const r2 = await d.next();
  assert.deepEqual(
    r2.resources?.map((r) => r.name),
    ['outbound|7001||ratings.shop.svc.cluster.local'],
  );
  assert.deepEqual(r2.removed_resources, ['outbound|7000||ratings.shop.svc.cluster.local']);
  const nacked = once(fx.cp.ads, 'nack');
  d.send({
    type_url: CLUSTER_TYPE,
    response_nonce: r2.nonce,
    error_detail: { code: 3, message: 'port 7001 is reserved' },
  });
  assert.equal((await nacked)[0].errorDetail, 'port 7001 is reserved');
  assert.equal(await d.quiet(200), true);
});

test('delta reconnect with initial_resource_versions gets only what differs', async (t) => {
  const fx = await startControlPlane(t, { 'mesh.yaml': MESH + RATINGS });
  const a = new RawDelta(fx.unix);
  a.send({ node: { id: 'node1' }, type_url: CLUSTER_TYPE, resource_names_subscribe: ['*'] });
  const r1 = await a.next();
  a.close();
  const held = Object.fromEntries((r1.resources ?? []).map((r) => [r.name, r.version]));
  await fx.write('mesh.yaml', MESH + RATINGS.replace('ratings }\n  ports', 'ratings, tier: x }\n  ports'));
  await fx.nextReload();
  await fx.write('mesh.yaml', MESH);
  await fx.nextReload();
  const b = new RawDelta(fx.unix);
  t.after(() => b.close());
  b.send({
    node: { id: 'node1' },
    type_url: CLUSTER_TYPE,
    resource_names_subscribe: ['*'],
    initial_resource_versions: held,
  });
  const r2 = await b.next();
  assert.deepEqual(r2.resources ?? [], []);
  assert.deepEqual(r2.removed_resources, ['outbound|7000||ratings.shop.svc.cluster.local']);
});

test('delta named subscriptions: subscribe, then unsubscribe silently', async (t) => {
  const fx = await startControlPlane(t);
  const d = new RawDelta(fx.unix);
  t.after(() => d.close());
  d.send({
    node: { id: 'node1' },
    type_url: CLUSTER_TYPE,
    resource_names_subscribe: ['outbound|9080||reviews.shop.svc.cluster.local'],
  });
  const r1 = await d.next();
  assert.deepEqual(
    r1.resources?.map((r) => r.name),
    ['outbound|9080||reviews.shop.svc.cluster.local'],
  );
  d.send({
    type_url: CLUSTER_TYPE,
    response_nonce: r1.nonce,
    resource_names_unsubscribe: ['outbound|9080||reviews.shop.svc.cluster.local'],
  });
  assert.equal(await d.quiet(200), true);
});
