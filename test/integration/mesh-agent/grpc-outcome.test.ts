import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import grpc from '@grpc/grpc-js';
import { reportTo } from '../../../mesh-agent/agent/proxy-runtime.js';
import { clusterOutcomes } from '../../../mesh-agent/telemetry/cluster-load.js';
import { MeshTelemetry } from '../../../mesh-agent/telemetry/mesh-telemetry.js';
import { REQUESTS_TOTAL } from '../../../mesh-agent/telemetry/request-metrics.js';
import {
  type Harness,
  localCluster,
  type MeshResources,
  reviewsRoutes,
  startOutbound,
} from './fixtures/outbound-harness.js';

/**
 * A gRPC call's outcome is its grpc-status, not its HTTP status (200 for every call that got an
 * answer): a real @grpc/grpc-js server and client through the outbound proxy, one client channel
 * (one HTTP/2 connection) for every call, as applications keep it. The status is read from a
 * trailers-only answer (errors before any message) and from trailers after messages, and every
 * consumer sees it: the request record, metrics, the load canary guards read, outlier detection.
 */
const WATCH_MESSAGES = 3;

interface OtlpSpan {
  name: string;
  status?: { code?: number };
  attributes?: Array<{ key: string; value: { stringValue?: string } }>;
}

/** An OTLP/HTTP (JSON) receiver on loopback that keeps the spans it is sent. */
async function otlpCollector() {
  const spans: OtlpSpan[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }>;
    };
    for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    spans,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const raw = {
  serialize: (b: Buffer) => b,
  deserialize: (b: Buffer) => b,
};

describe('gRPC outcomes: grpc-status is the result the mesh records and reports', () => {
  let server: grpc.Server;
  let harness: Harness;
  let client: grpc.Client;
  let telemetry: MeshTelemetry;
  let spans: Awaited<ReturnType<typeof otlpCollector>>;
  /** Calls per request payload, for the answer-once-then-succeed cases. */
  const calls = new Map<string, number>();

  before(async () => {
    server = new grpc.Server();
    server.register(
      '/shop.Reviews/Get',
      (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const want = call.request.toString();
        const n = (calls.get(want) ?? 0) + 1;
        calls.set(want, n);
        if (want === 'ok') cb(null, Buffer.from('fine'));
        else if (want === 'unavailable') cb({ code: grpc.status.UNAVAILABLE, details: 'draining' });
        else if (want.startsWith('unavailable-once/'))
          cb(n === 1 ? { code: grpc.status.UNAVAILABLE, details: 'draining' } : null, Buffer.from('fine'));
        else if (want.startsWith('internal-once/'))
          cb(n === 1 ? { code: grpc.status.INTERNAL, details: 'bug' } : null, Buffer.from('fine'));
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
    // A server stream that fails midway: messages, then UNAVAILABLE in the trailers.
    server.register(
      '/shop.Reviews/Watch',
      (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 1; i <= WATCH_MESSAGES; i++) call.write(Buffer.from(`update ${i}`));
        call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'backend going away' });
      },
      raw.serialize,
      raw.deserialize,
      'serverStream',
    );
    // A unary call answered with its message, then INTERNAL in the trailers (what a handler that
    // sends and then fails puts on the wire; the client calls it as unary).
    server.register(
      '/shop.Reviews/Rate',
      (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        call.write(Buffer.from('rated'));
        call.emit('error', { code: grpc.status.INTERNAL, details: 'lost the rating after answering' });
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
    spans = await otlpCollector();
    telemetry = new MeshTelemetry({
      nodeName: 'node-grpc-outcome',
      metricsPort: 0,
      otlpEndpoint: spans.url,
      traceExportDelayMs: 60_000, // only the explicit flush exports
    });
    harness = await startOutbound(meshWith(port, undefined), { tracer: telemetry });
    grpcPort = port;
    client = new grpc.Client(`127.0.0.1:${harness.port}`, grpc.credentials.createInsecure(), {
      'grpc.service_config_disable_resolution': 1,
    });
  });

  after(async () => {
    client?.close();
    await harness?.close();
    await new Promise<void>((r) => (server ? server.tryShutdown(() => r()) : r()));
    await telemetry?.close();
    await spans?.close();
  });

  let grpcPort = 0;
  /**
   * One route to the gRPC server, with this retry_on (none: no retry policy), and outlier
   * detection; a new cluster name starts the endpoint with clean outlier counts. The default
   * consecutive_5xx (5) stays above the failures in a row the recording tests make.
   */
  function meshWith(
    port: number,
    retryOn: string | undefined,
    cluster = 'reviews-grpc',
    consecutive5xx = 5,
  ): MeshResources {
    const route: Record<string, unknown> = { cluster };
    if (retryOn)
      route.retry_policy = {
        retry_on: retryOn,
        num_retries: { value: 2 },
        retry_back_off: { base_interval: { seconds: 0, nanos: 1_000_000 } },
      };
    return {
      vip: { http: true },
      routes: reviewsRoutes([{ match: { prefix: '/' }, route }]),
      clusters: [
        localCluster(cluster, [port], {
          outlier_detection: {
            consecutive_5xx: { value: consecutive5xx },
            consecutive_gateway_failure: { value: 3 },
            enforcing_consecutive_gateway_failure: { value: 100 },
            interval: { seconds: 60 },
            base_ejection_time: { seconds: 30 },
            max_ejection_percent: { value: 100 },
          },
        }),
      ],
    };
  }

  const unary = (arg: string, method = '/shop.Reviews/Get') =>
    new Promise<grpc.status>((resolve) =>
      client.makeUnaryRequest(method, raw.serialize, raw.deserialize, Buffer.from(arg), (err) =>
        resolve(err ? (err.code as grpc.status) : grpc.status.OK),
      ),
    );

  /** A server-streaming call: the messages received and the status it ended with. */
  const serverStream = (method: string) =>
    new Promise<{ messages: string[]; code: grpc.status }>((resolve) => {
      const stream = client.makeServerStreamRequest(method, raw.serialize, raw.deserialize, Buffer.from(''));
      const messages: string[] = [];
      stream.on('data', (b: Buffer) => messages.push(b.toString()));
      stream.on('error', (e: grpc.ServiceError) => resolve({ messages, code: e.code }));
      stream.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) resolve({ messages, code: s.code });
      });
    });

  /** The record of the last call, written once the relay is over (just after the client saw the status). */
  async function lastRecord(before: number) {
    for (let i = 0; i < 100 && harness.records.length === before; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(harness.records.length, before + 1, 'one record per call');
    return harness.records.at(-1)!;
  }

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

  it("records UNAVAILABLE sent in trailers after a server stream's messages", async () => {
    const before = harness.records.length;
    const got = await serverStream('/shop.Reviews/Watch');
    assert.equal(got.code, grpc.status.UNAVAILABLE);
    assert.equal(got.messages.length, WATCH_MESSAGES);
    const rec = await lastRecord(before);
    assert.deepEqual([rec.status, rec.grpcStatus], [200, grpc.status.UNAVAILABLE]);
  });

  it("records INTERNAL sent in trailers after a unary answer's message", async () => {
    const before = harness.records.length;
    assert.equal(await unary('', '/shop.Reviews/Rate'), grpc.status.INTERNAL);
    const rec = await lastRecord(before);
    assert.deepEqual([rec.status, rec.grpcStatus], [200, grpc.status.INTERNAL]);
  });

  it('ends the client span of a call failing in trailers after messages as an error, and of OK as ok', async () => {
    await telemetry.flush();
    const statusOf = (path: string) =>
      spans.spans
        .filter((s) => s.attributes?.some((a) => a.key === 'url.path' && a.value.stringValue === path))
        .map((s) => s.status?.code);
    // OTLP status codes: 1 OK, 2 ERROR.
    assert.deepEqual(statusOf('/shop.Reviews/Watch'), [2]);
    assert.deepEqual(statusOf('/shop.Reviews/Rate'), [2]);
    assert.deepEqual(statusOf('/shop.Reviews/List'), [2]);
    assert.ok(statusOf('/shop.Reviews/Get').includes(1), 'the OK call');
  });

  it('counts server-side gRPC failures as errors in what canary guards receive, and labels the metric', async () => {
    for (const r of harness.records) reportTo(telemetry, r);
    const outcome = clusterOutcomes(await telemetry.mergedSnapshot()).find(
      (o) => o.cluster === 'reviews-grpc',
    );
    assert.ok(outcome, 'the cluster is reported');
    // OK and NOT_FOUND (a client-side outcome, HTTP 404 in Envoy's mapping) succeed;
    // UNAVAILABLE (503) and INTERNAL (500) are errors, trailers-only or after messages.
    assert.equal(outcome.errors, 4);
    assert.equal(outcome.successes, 2);
    const requests = (await telemetry.mergedSnapshot()).metrics.find((m) => m.name === REQUESTS_TOTAL);
    const byGrpc = new Map<string, number>();
    for (const [labels, v] of requests?.points ?? [])
      byGrpc.set(
        String(labels.grpc_response_status),
        (byGrpc.get(String(labels.grpc_response_status)) ?? 0) + Number(v),
      );
    assert.deepEqual(Object.fromEntries(byGrpc), { '0': 1, '5': 1, '13': 2, '14': 2 });
  });

  it('retries a trailers-only UNAVAILABLE when retry_on names it (Envoy retry_grpc_on), not INTERNAL', async () => {
    harness.apply(meshWith(grpcPort, 'unavailable'));
    const before = harness.records.length;
    assert.equal(await unary('unavailable-once/a'), grpc.status.OK);
    assert.equal(await unary('internal-once/a'), grpc.status.INTERNAL);
    const got = harness.records.slice(before).map((r) => [r.grpcStatus, r.attempts]);
    assert.deepEqual(got, [
      [grpc.status.OK, 2],
      [grpc.status.INTERNAL, 1],
    ]);
    // `5xx` looks at the HTTP status (200 for gRPC) and leaves gRPC failures alone, as in Envoy.
    harness.apply(meshWith(grpcPort, '5xx'));
    assert.equal(await unary('unavailable-once/b'), grpc.status.UNAVAILABLE);
    assert.equal(harness.records.at(-1)?.attempts, 1);
  });

  it('ejects an endpoint whose server streams fail with UNAVAILABLE after their messages (gateway failure)', async () => {
    // consecutive_5xx out of reach: only consecutive_gateway_failure (503 in Envoy's mapping) can eject.
    harness.apply(meshWith(grpcPort, undefined, 'reviews-grpc-watch', 100));
    assert.equal(await unary('ok'), grpc.status.OK);
    const before = harness.outlierEvents.length;
    for (let i = 0; i < 3; i++) {
      const got = await serverStream('/shop.Reviews/Watch');
      assert.deepEqual([got.code, got.messages.length], [grpc.status.UNAVAILABLE, WATCH_MESSAGES]);
    }
    const events = harness.outlierEvents.slice(before);
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.equal(events[0]![0], 'reviews-grpc-watch');
    assert.deepEqual(
      [events[0]![1].kind, (events[0]![1] as { type?: string }).type],
      ['ejected', 'consecutive_gateway_failure'],
    );
    // Ejected: the only endpoint is out, the next call is not sent to it.
    const records = harness.records.length;
    assert.equal(await unary('ok'), grpc.status.UNAVAILABLE);
    assert.equal((await lastRecord(records)).flags, 'UH');
  });

  it('ejects an endpoint whose unary answers carry INTERNAL in trailers after the message (consecutive 5xx)', async () => {
    harness.apply(meshWith(grpcPort, undefined, 'reviews-grpc-rate', 3));
    assert.equal(await unary('ok'), grpc.status.OK);
    const before = harness.outlierEvents.length;
    for (let i = 0; i < 2; i++) assert.equal(await unary('', '/shop.Reviews/Rate'), grpc.status.INTERNAL);
    // A call that succeeds after its message resets the count, as a 200 does.
    assert.equal(await unary('ok'), grpc.status.OK);
    for (let i = 0; i < 2; i++) assert.equal(await unary('', '/shop.Reviews/Rate'), grpc.status.INTERNAL);
    assert.equal(harness.outlierEvents.length, before, 'two in a row do not eject');
    assert.equal(await unary('', '/shop.Reviews/Rate'), grpc.status.INTERNAL);
    const events = harness.outlierEvents.slice(before);
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.equal(events[0]![0], 'reviews-grpc-rate');
    assert.deepEqual(
      [events[0]![1].kind, (events[0]![1] as { type?: string }).type],
      ['ejected', 'consecutive_5xx'],
    );
  });

  it("ejects an endpoint answering UNAVAILABLE in a row (a gateway failure in Envoy's mapping)", async () => {
    harness.apply(meshWith(grpcPort, undefined));
    assert.equal(await unary('ok'), grpc.status.OK); // a success resets the counts
    const before = harness.outlierEvents.length;
    for (let i = 0; i < 3; i++) assert.equal(await unary('unavailable'), grpc.status.UNAVAILABLE);
    const events = harness.outlierEvents.slice(before);
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.equal(events[0]![0], 'reviews-grpc');
    assert.equal(events[0]![1].kind, 'ejected');
  });
});
