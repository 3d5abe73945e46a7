import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import grpc from '@grpc/grpc-js';
import { reportTo } from '../../../mesh-agent/agent/proxy-runtime.js';
import { clusterOutcomes } from '../../../mesh-agent/telemetry/cluster-load.js';
import { MeshTelemetry } from '../../../mesh-agent/telemetry/mesh-telemetry.js';
import { REQUESTS_TOTAL } from '../../../mesh-agent/telemetry/request-metrics.js';
import { type Harness, localCluster, reviewsRoutes, startOutbound } from './fixtures/outbound-harness.js';

/**
 * A gRPC call's outcome is its grpc-status, not its HTTP status (200 for every call that got an
 * answer): a real @grpc/grpc-js server and client through the outbound proxy. The status is read
 * from a trailers-only answer (errors before any message) and from trailers after messages.
 */
const raw = {
  serialize: (b: Buffer) => b,
  deserialize: (b: Buffer) => b,
};

describe('gRPC outcomes: grpc-status is the result the mesh records and reports', () => {
  let server: grpc.Server;
  let harness: Harness;
  let client: grpc.Client;
  let telemetry: MeshTelemetry;

  before(async () => {
    server = new grpc.Server();
    server.register(
      '/shop.Reviews/Get',
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const want = call.request.toString();
        if (want === 'ok') cb(null, Buffer.from('fine'));
        else if (want === 'unavailable') cb({ code: grpc.status.UNAVAILABLE, details: 'draining' });
        else cb({ code: grpc.status.NOT_FOUND, details: 'no such review' });
      },
      raw.serialize,
      raw.deserialize,
      'unary',
    );
    server.register(
      '/shop.Reviews/List',
      (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        // Messages first, then a failure: grpc-status comes in the trailers.
        call.write(Buffer.from('one'));
        call.write(Buffer.from('two'));
        call.emit('error', { code: grpc.status.INTERNAL, details: 'lost the rest' });
      },
      raw.serialize,
      raw.deserialize,
      'serverStream',
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    harness = await startOutbound({
      vip: { http: true },
      routes: reviewsRoutes([{ match: { prefix: '/' }, route: { cluster: 'reviews-grpc' } }]),
      clusters: [localCluster('reviews-grpc', [port])],
    });
    client = new grpc.Client(`127.0.0.1:${harness.port}`, grpc.credentials.createInsecure(), {
      'grpc.service_config_disable_resolution': 1,
    });
    telemetry = new MeshTelemetry({ nodeName: 'node-grpc-outcome', metricsPort: 0 });
  });

  after(async () => {
    client?.close();
    await harness?.close();
    await new Promise<void>((r) => (server ? server.tryShutdown(() => r()) : r()));
    await telemetry?.close();
  });

  const unary = (arg: string) =>
    new Promise<grpc.status>((resolve) =>
      client.makeUnaryRequest('/shop.Reviews/Get', raw.serialize, raw.deserialize, Buffer.from(arg), (err) =>
        resolve(err ? (err.code as grpc.status) : grpc.status.OK),
      ),
    );

  it('records grpc-status from a trailers-only answer, beside HTTP 200', async () => {
    const before = harness.records.length;
    assert.equal(await unary('ok'), grpc.status.OK);
    assert.equal(await unary('unavailable'), grpc.status.UNAVAILABLE);
    assert.equal(await unary('missing'), grpc.status.NOT_FOUND);
    const got = harness.records.slice(before).map((r) => [r.status, r.grpcStatus]);
    assert.deepEqual(got, [
      [200, grpc.status.OK],
      [200, grpc.status.UNAVAILABLE],
      [200, grpc.status.NOT_FOUND],
    ]);
  });

  it('records grpc-status sent in trailers after messages', async () => {
    const before = harness.records.length;
    const stream = client.makeServerStreamRequest(
      '/shop.Reviews/List',
      raw.serialize,
      raw.deserialize,
      Buffer.from(''),
    );
    const messages: string[] = [];
    stream.on('data', (b: Buffer) => messages.push(b.toString()));
    const code = await new Promise<grpc.status>((resolve) => {
      stream.on('error', (e: grpc.ServiceError) => resolve(e.code));
      stream.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) resolve(s.code);
      });
    });
    assert.equal(code, grpc.status.INTERNAL);
    assert.deepEqual(messages, ['one', 'two']);
    // The record is written once the relay is over, which can be just after the client saw the status.
    for (let i = 0; i < 50 && harness.records.length === before; i++)
      await new Promise((r) => setTimeout(r, 10));
    const rec = harness.records.at(-1)!;
    assert.equal(rec.status, 200);
    assert.equal(rec.grpcStatus, grpc.status.INTERNAL);
  });

  it('counts server-side gRPC failures as errors in what canary guards receive, and labels the metric', async () => {
    for (const r of harness.records) reportTo(telemetry, r);
    const outcome = clusterOutcomes(await telemetry.mergedSnapshot()).find(
      (o) => o.cluster === 'reviews-grpc',
    );
    assert.ok(outcome, 'the cluster is reported');
    // OK and NOT_FOUND (a client-side outcome, HTTP 404 in Envoy's mapping) succeed;
    // UNAVAILABLE (503) and INTERNAL (500) are errors.
    assert.equal(outcome.errors, 2);
    assert.equal(outcome.successes, 2);
    const requests = (await telemetry.mergedSnapshot()).metrics.find((m) => m.name === REQUESTS_TOTAL);
    const byGrpc = new Map<string, number>();
    for (const [labels, v] of requests?.points ?? [])
      byGrpc.set(
        String(labels.grpc_response_status),
        (byGrpc.get(String(labels.grpc_response_status)) ?? 0) + Number(v),
      );
    assert.deepEqual(Object.fromEntries(byGrpc), { '0': 1, '5': 1, '13': 1, '14': 1 });
  });
});
