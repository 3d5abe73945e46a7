// Malformed and huge xDS responses into the agent's xDS input: a real gRPC ADS server (this test's,
// so it can send any bytes) streams them to the AdsClient, validated as the agent validates
// (MeshState over the new set) and applied to a MeshStateStore on every update, as the agent does.
// Each bad response must be NACKed with a reason (error_detail), on the same stream, and the last
// good config must stay in the client and in the store; a good response afterwards is ACKed.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Server, ServerCredentials, type ServerDuplexStream, type sendUnaryData } from '@grpc/grpc-js';
import { nullLogger } from '../../../lib/log.js';
import { snapshotOf } from '../../../mesh-agent/agent/proxy-runtime.js';
import { MeshStateStore } from '../../../mesh-agent/state/index.js';
import { mulberry32 } from '../../../scripts/fuzz/manifest-fuzz.js';
import { AdsClient, type XdsConfig } from '../../../xds/client/ads-client.js';
import { encodeResource } from '../../../xds/codec.js';
import {
  CLUSTER_TYPE,
  decodeMessage,
  ENDPOINT_TYPE,
  encodeMessage,
  LISTENER_TYPE,
  type ProtoObject,
  ROUTE_TYPE,
  TCP_PROXY_TYPE,
} from '../../../xds/protos.js';
import {
  assignment,
  clusters,
  endpoints,
  inboundListener,
  outboundListener,
  ratingsRoutes,
  reviewsRoutes,
} from '../../unit/mesh-agent/fixtures/envoy.js';

/** Damaged resources per run (small: each is a round trip); SOCKMESH_ADS_FUZZ_COUNT for a longer run. */
const MUTANTS = Number(process.env.SOCKMESH_ADS_FUZZ_COUNT ?? 200);
const ADS_PATH = '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources';
const RESPONSE = 'envoy.service.discovery.v3.DiscoveryResponse';
const REQUEST = 'envoy.service.discovery.v3.DiscoveryRequest';

interface Request {
  type_url: string;
  version_info?: string;
  response_nonce?: string;
  error_detail?: { message?: string };
}

/** An ADS server that sends whatever bytes the test gives it and records every request. */
class RawAdsServer {
  private readonly server = new Server();
  private call: ServerDuplexStream<Request, Buffer> | undefined;
  readonly requests: Request[] = [];
  streams = 0;
  private waiters: { pred: (r: Request) => boolean; resolve: (r: Request) => void }[] = [];
  private nonce = 0;

  async start(socket: string): Promise<void> {
    this.server.addService(
      {
        StreamAggregatedResources: {
          path: ADS_PATH,
          requestStream: true,
          responseStream: true,
          requestSerialize: (v: object) => encodeMessage(REQUEST, v),
          requestDeserialize: (b: Buffer) => decodeMessage(REQUEST, b) as unknown as Request,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      {
        StreamAggregatedResources: (call: ServerDuplexStream<Request, Buffer>) => {
          this.streams++;
          this.call = call;
          call.on('data', (r: Request) => {
            this.requests.push(r);
            this.waiters = this.waiters.filter((w) => {
              if (!w.pred(r)) return true;
              w.resolve(r);
              return false;
            });
          });
          call.on('error', () => {});
        },
      } as unknown as Record<string, (call: unknown, cb?: sendUnaryData<unknown>) => void>,
    );
    await new Promise<void>((resolve, reject) =>
      this.server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }

  /** Sends a response and resolves with the client's answer to it (its request carrying this nonce). */
  send(body: (nonce: string) => Buffer): Promise<Request> {
    const nonce = `n${++this.nonce}`;
    const answer = this.next((r) => r.response_nonce === nonce);
    assert.ok(this.call, 'no stream');
    this.call.write(body(nonce));
    return answer;
  }

  /** Generous bound: a loaded machine is slow, and a wait that ends means the client never answered. */
  next(pred: (r: Request) => boolean, ms = 120_000): Promise<Request> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer from the client')), ms);
      this.waiters.push({
        pred,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
    });
  }

  close(): void {
    this.server.forceShutdown();
  }
}

/** A DiscoveryResponse: resources given decoded (`@type` + fields) or as raw Any {type_url, value}. */
function response(typeUrl: string, version: string, resources: object[]): (nonce: string) => Buffer {
  return (nonce) => encodeMessage(RESPONSE, { version_info: version, type_url: typeUrl, nonce, resources });
}

const rawAny = (typeUrl: string, value: Buffer) => ({ type_url: typeUrl, value });
/** A resource as a control plane encodes it (filter_metadata as Struct). */
const any = (typeUrl: string, msg: object) => rawAny(typeUrl, encodeResource(typeUrl, msg));

function agentValidator(ads: () => AdsClient | undefined) {
  return (typeUrl: string, resources: ReadonlyMap<string, ProtoObject>): string | undefined => {
    const cfg = ads()?.config();
    if (!cfg) return undefined;
    const key =
      typeUrl === LISTENER_TYPE
        ? 'listeners'
        : typeUrl === ROUTE_TYPE
          ? 'routes'
          : typeUrl === CLUSTER_TYPE
            ? 'clusters'
            : 'endpoints';
    try {
      new MeshStateStore().apply({ ...snapshotOf(cfg), [key]: resources });
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  };
}

test('malformed and huge xDS responses are NACKed with a reason; the agent keeps its last good config', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sockmesh-adsfuzz-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const server = new RawAdsServer();
  t.after(() => server.close());
  await server.start(path.join(dir, 'ads.sock'));

  let client: AdsClient | undefined;
  client = new AdsClient({
    target: `unix:${path.join(dir, 'ads.sock')}`,
    node: { id: 'node1' },
    logger: nullLogger,
    backoff: { initialMs: 50, maxMs: 200 },
    validate: agentValidator(() => client),
  });
  const store = new MeshStateStore();
  const applyErrors: string[] = [];
  client.on('update', (cfg: XdsConfig) => {
    try {
      store.apply(snapshotOf(cfg));
    } catch (err) {
      applyErrors.push((err as Error).message);
    }
  });
  t.after(() => client?.close());
  const subscribed = server.next((r) => r.type_url === LISTENER_TYPE);
  client.start();
  await subscribed;

  // The good config, type by type as a control plane sends it.
  const ack = async (typeUrl: string, version: string, resources: object[]) => {
    const r = await server.send(response(typeUrl, version, resources));
    assert.equal(r.error_detail, undefined, `good ${typeUrl} NACKed: ${r.error_detail?.message}`);
    assert.equal(r.version_info, version);
  };
  await ack(
    CLUSTER_TYPE,
    '1',
    clusters.map((c) => any(CLUSTER_TYPE, c)),
  );
  await ack(
    ENDPOINT_TYPE,
    '1',
    endpoints.map((e) => any(ENDPOINT_TYPE, e)),
  );
  await ack(LISTENER_TYPE, '1', [
    any(LISTENER_TYPE, outboundListener),
    any(LISTENER_TYPE, inboundListener([])),
  ]);
  await ack(ROUTE_TYPE, '1', [any(ROUTE_TYPE, reviewsRoutes), any(ROUTE_TYPE, ratingsRoutes)]);
  const good = JSON.stringify(client.config());
  const goodState = store.current;
  assert.ok(goodState.listener('outbound'), 'the good config is applied');

  const garbage = (n: number, seed: number) => {
    const r = mulberry32(seed);
    return Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
  };
  const bigName = 'x'.repeat(10 * 1024 * 1024);
  const cases: [string, string, object[]][] = [
    ['an undecodable Any', LISTENER_TYPE, [rawAny(LISTENER_TYPE, garbage(64, 1))]],
    [
      'a truncated resource',
      CLUSTER_TYPE,
      [rawAny(CLUSTER_TYPE, encodeResource(CLUSTER_TYPE, clusters[0]!).subarray(0, 7))],
    ],
    [
      'a Cluster in a Listener response',
      LISTENER_TYPE,
      [any(CLUSTER_TYPE, clusters[0]!), any(LISTENER_TYPE, outboundListener)],
    ],
    [
      'a resource of an unknown type',
      CLUSTER_TYPE,
      [rawAny('type.googleapis.com/not.a.Type', garbage(16, 2))],
    ],
    [
      'a resource without a name',
      CLUSTER_TYPE,
      [
        any(CLUSTER_TYPE, { ...clusters[0]!, name: '' }),
        ...clusters.slice(1).map((c) => any(CLUSTER_TYPE, c)),
      ],
    ],
    [
      'two clusters with one name',
      CLUSTER_TYPE,
      [...clusters, clusters[0]!].map((c) => any(CLUSTER_TYPE, c)),
    ],
    [
      'a filter chain without filters',
      LISTENER_TYPE,
      [any(LISTENER_TYPE, { name: 'outbound', filter_chains: [{}] })],
    ],
    ['a 10 MB resource name', CLUSTER_TYPE, [any(CLUSTER_TYPE, { ...clusters[0]!, name: bigName })]],
    ['10 MB of garbage', ENDPOINT_TYPE, [rawAny(ENDPOINT_TYPE, garbage(10 * 1024 * 1024, 3))]],
    [
      'a filter whose typed_config cannot be decoded',
      LISTENER_TYPE,
      [
        any(LISTENER_TYPE, {
          ...outboundListener,
          filter_chains: [{ filters: [{ name: 'f', typed_config: rawAny(TCP_PROXY_TYPE, garbage(32, 5)) }] }],
        }),
      ],
    ],
    [
      'a tcp_proxy without a cluster',
      LISTENER_TYPE,
      [
        any(LISTENER_TYPE, {
          ...outboundListener,
          filter_chains: [
            { filters: [{ name: 'f', typed_config: { '@type': TCP_PROXY_TYPE, stat_prefix: 1 } }] },
          ],
        }),
      ],
    ],
  ];
  const reasons: Record<string, string> = {};
  for (const [name, typeUrl, resources] of cases) {
    const r = await server.send(response(typeUrl, `bad-${name}`, resources));
    assert.ok(r.error_detail?.message, `${name}: not NACKed (answer: ${JSON.stringify(r).slice(0, 300)})`);
    assert.ok(
      r.error_detail.message.length < 2000,
      `${name}: a reason of ${r.error_detail.message.length} characters`,
    );
    reasons[name] = r.error_detail.message;
    assert.equal(JSON.stringify(client.config()), good, `${name}: the client's config changed`);
    assert.equal(store.current, goodState, `${name}: the applied state changed`);
  }
  t.diagnostic(JSON.stringify(reasons, null, 1));
  assert.equal(server.streams, 1, 'every NACK went on the first stream (no reconnect)');
  assert.deepEqual(applyErrors, []);

  // Seeded byte-level damage to the good resources: each answer is an ACK or a NACK with a
  // reason, on the same stream; a NACK leaves everything as it was.
  const good4: [string, { type_url: string; value: Buffer }[]][] = [
    [CLUSTER_TYPE, clusters.map((c) => any(CLUSTER_TYPE, c))],
    [ENDPOINT_TYPE, endpoints.map((e) => any(ENDPOINT_TYPE, e))],
    [LISTENER_TYPE, [any(LISTENER_TYPE, outboundListener), any(LISTENER_TYPE, inboundListener([]))]],
    [ROUTE_TYPE, [any(ROUTE_TYPE, reviewsRoutes), any(ROUTE_TYPE, ratingsRoutes)]],
  ];
  const rand = mulberry32(1717);
  let acked = 0;
  let nacked = 0;
  for (let i = 0; i < MUTANTS; i++) {
    const [typeUrl, list] = good4[Math.floor(rand() * good4.length)]!;
    const k = Math.floor(rand() * list.length);
    const victim = list[k]!;
    const bytes = Buffer.from(victim.value);
    const how = Math.floor(rand() * 3);
    let damaged: Buffer;
    if (how === 0) {
      const flips = 1 + Math.floor(rand() * 4);
      for (let f = 0; f < flips; f++) {
        const at = Math.floor(rand() * bytes.length);
        bytes[at] = bytes[at]! ^ (1 << Math.floor(rand() * 8));
      }
      damaged = bytes;
    } else if (how === 1) damaged = bytes.subarray(0, Math.floor(rand() * bytes.length));
    else {
      const at = Math.floor(rand() * bytes.length);
      damaged = Buffer.concat([
        bytes.subarray(0, at),
        garbage(1 + Math.floor(rand() * 16), i),
        bytes.subarray(at),
      ]);
    }
    const configBefore: string = JSON.stringify(client.config());
    const stateBefore = store.current;
    const r = await server.send(
      response(
        typeUrl,
        `mutant-${i}`,
        list.map((x, j) => (j === k ? rawAny(victim.type_url, damaged) : x)),
      ),
    );
    if (r.error_detail) {
      nacked++;
      assert.ok(r.error_detail.message, `mutant ${i}: NACK without a reason`);
      assert.equal(
        JSON.stringify(client.config()),
        configBefore,
        `mutant ${i}: NACKed but the config changed`,
      );
      assert.equal(store.current, stateBefore, `mutant ${i}: NACKed but the state changed`);
    } else {
      acked++;
      await ack(typeUrl, `restore-${i}`, list); // back to the good set for the next mutant
    }
  }
  t.diagnostic(`${MUTANTS} damaged resources: ${acked} ACKed (still valid), ${nacked} NACKed`);
  assert.ok(nacked > MUTANTS / 4, `only ${nacked} NACKs: the damage does not bite`);
  assert.equal(server.streams, 1, 'no mutant broke the stream');
  assert.deepEqual(applyErrors, []);

  // Huge but valid (a 10 MB endpoint set) is taken: big is not wrong.
  const pods = Array.from({ length: 60_000 }, (_, i) => ({
    ip: `10.${2 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    port: 9080,
    node: i % 2 === 0 ? 'node-1' : 'node-2',
    pod: `reviews-v1-${i}`,
  }));
  const huge = any(ENDPOINT_TYPE, assignment('reviews-v1', pods));
  assert.ok(huge.value.length > 10 * 1024 * 1024, `${huge.value.length} bytes`);
  const hugeStarted = performance.now();
  const big = await server.send(response(ENDPOINT_TYPE, 'huge', [huge]));
  t.diagnostic(
    `a ${(huge.value.length / 1048576).toFixed(1)} MiB assignment answered in ${Math.round(performance.now() - hugeStarted)} ms`,
  );
  assert.equal(big.error_detail, undefined, big.error_detail?.message);
  assert.equal(store.current.endpoints('reviews-v1').length, 60_000);

  // Still alive: the next good change is ACKed and applied.
  const moved = assignment('reviews-v1', [
    { ip: '10.1.1.99', port: 9080, node: 'node-1', pod: 'reviews-v1-a' },
  ]);
  await ack(ENDPOINT_TYPE, '2', [
    any(ENDPOINT_TYPE, moved),
    ...endpoints.slice(1).map((e) => any(ENDPOINT_TYPE, e)),
  ]);
  assert.notEqual(store.current, goodState);
});
