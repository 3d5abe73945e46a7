import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { isSockmeshError } from '../../../../lib/errors.js';
import { nullLogger } from '../../../../lib/log.js';
import {
  extractTraceContext,
  injectTraceContext,
  MeshTelemetry,
  otlpTracesUrl,
  parseTraceparent,
} from '../../../../mesh-agent/telemetry/index.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  status?: { code?: number; message?: string };
  attributes?: Array<{ key: string; value: Record<string, unknown> }>;
}

/** A tiny OTLP/HTTP collector on loopback that keeps every span it is sent. */
async function collector(t: import('node:test').TestContext) {
  const spans: OtlpSpan[] = [];
  const requests: Array<{ path: string; contentType: string }> = [];
  const server = createServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    requests.push({ path: req.url ?? '', contentType: String(req.headers['content-type']) });
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }>;
    };
    for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { spans, requests, url: `http://127.0.0.1:${port}` };
}

const PARENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN = '00f067aa0ba902b7';

test('spans are exported over OTLP/HTTP as children of the caller', async (t) => {
  const col = await collector(t);
  const tel = new MeshTelemetry({
    nodeName: 'node-a',
    metricsPort: 0,
    otlpEndpoint: col.url,
    traceExportDelayMs: 60_000, // only the explicit flush exports
    logger: nullLogger,
  });
  t.after(() => tel.close());

  const span = tel.startSpan('outbound reviews', `00-${PARENT_TRACE}-${PARENT_SPAN}-01`, {
    'sockmesh.cluster': 'reviews-v2',
  });
  assert.equal(span.recording, true);
  assert.equal(span.traceId, PARENT_TRACE);
  const tp = parseTraceparent(span.traceparent);
  assert.equal(tp?.traceId, PARENT_TRACE);
  assert.equal(tp?.spanId, span.spanId);
  assert.notEqual(span.spanId, PARENT_SPAN);
  span.setAttribute('http.response.status_code', 503);
  span.end('error', 'overflow');

  const root = tel.startSpan('inbound db', undefined, undefined, 'server');
  root.end('ok');
  await tel.flush();

  assert.equal(col.requests[0]?.path, '/v1/traces');
  assert.match(col.requests[0]?.contentType ?? '', /application\/json/);
  const got = col.spans.find((s) => s.name === 'outbound reviews');
  assert.ok(got, `spans: ${JSON.stringify(col.spans.map((s) => s.name))}`);
  assert.equal(got.traceId, PARENT_TRACE);
  assert.equal(got.spanId, span.spanId);
  assert.equal(got.parentSpanId, PARENT_SPAN);
  assert.equal(got.kind, 3 /* CLIENT in OTLP's enum */);
  assert.equal(got.status?.code, 2 /* ERROR */);
  assert.equal(got.status?.message, 'overflow');
  const attrs = Object.fromEntries((got.attributes ?? []).map((a) => [a.key, Object.values(a.value)[0]]));
  assert.equal(attrs['sockmesh.cluster'], 'reviews-v2');
  assert.equal(Number(attrs['http.response.status_code']), 503);

  const r = col.spans.find((s) => s.name === 'inbound db');
  assert.ok(r);
  assert.equal(r.traceId, root.traceId);
  assert.notEqual(r.traceId, PARENT_TRACE);
  assert.ok(!r.parentSpanId);
  assert.equal(r.kind, 2 /* SERVER */);
});

test('tracestate from extracted headers is carried to the next hop, exporting or not', async (t) => {
  const col = await collector(t);
  for (const otlpEndpoint of [undefined, col.url]) {
    const tel = new MeshTelemetry({ nodeName: 'n', metricsPort: 0, otlpEndpoint, logger: nullLogger });
    t.after(() => tel.close());
    const parent = extractTraceContext({
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
      tracestate: 'vnd=x',
    });
    const span = tel.startSpan('hop', parent, undefined, 'server');
    const out: Record<string, string> = {};
    injectTraceContext(span.spanContext, out);
    assert.equal(out.traceparent, span.traceparent);
    assert.equal(out.tracestate, 'vnd=x', String(otlpEndpoint));
    span.end();
    await tel.flush();
  }
  assert.equal(col.spans.length, 1);
});

test('an unsampled caller is followed: nothing is exported, context still propagates', async (t) => {
  const col = await collector(t);
  const tel = new MeshTelemetry({ nodeName: 'n', metricsPort: 0, otlpEndpoint: col.url, logger: nullLogger });
  t.after(() => tel.close());
  const span = tel.startSpan('hop', `00-${PARENT_TRACE}-${PARENT_SPAN}-00`);
  assert.equal(span.recording, false);
  assert.equal(span.traceId, PARENT_TRACE);
  assert.match(span.traceparent, new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-00$`));
  span.end('ok');
  await tel.flush();
  assert.equal(col.spans.length, 0);
});

test('without an OTLP endpoint spans only propagate context', async (t) => {
  const tel = new MeshTelemetry({ nodeName: 'n', metricsPort: 0, logger: nullLogger });
  t.after(() => tel.close());
  assert.equal(tel.tracer.exporting, false);
  const child = tel.startSpan('hop', `00-${PARENT_TRACE}-${PARENT_SPAN}-01`);
  assert.equal(child.recording, false);
  assert.equal(child.traceId, PARENT_TRACE);
  assert.match(child.traceparent, new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-01$`));
  const fromArray = tel.startSpan('hop', [`00-${PARENT_TRACE}-${PARENT_SPAN}-01`, 'ignored']);
  assert.equal(fromArray.traceId, PARENT_TRACE);
  const fresh = tel.startSpan('hop', 'garbage');
  assert.match(fresh.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  child.end('error');
  await tel.flush();
});

test('close does not hang on an unreachable collector', async () => {
  // A port that was free a moment ago: nothing listens, exports are refused and retried.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const tel = new MeshTelemetry({
    nodeName: 'n',
    metricsPort: 0,
    otlpEndpoint: `http://127.0.0.1:${port}`,
    closeTimeoutMs: 300,
    traceExportTimeoutMs: 500, // so the exporter's own retries end soon after the test
    logger: nullLogger,
  });
  tel.startSpan('hop', undefined).end();
  const t0 = Date.now();
  await tel.close();
  // Generous bound: only proves close gave up instead of retrying for seconds.
  assert.ok(Date.now() - t0 < 3000, `close took ${Date.now() - t0} ms`);
});

test('OTLP endpoint validation', () => {
  assert.equal(otlpTracesUrl('http://127.0.0.1:4318'), 'http://127.0.0.1:4318/v1/traces');
  assert.equal(otlpTracesUrl('http://127.0.0.1:4318/custom/traces'), 'http://127.0.0.1:4318/custom/traces');
  for (const bad of ['not a url', 'grpc://127.0.0.1:4317']) {
    assert.throws(
      () => new MeshTelemetry({ nodeName: 'n', otlpEndpoint: bad, logger: nullLogger }),
      (err) => isSockmeshError(err, 'SOCKMESH_E_CONFIG'),
    );
  }
  assert.throws(
    () =>
      new MeshTelemetry({
        nodeName: 'n',
        otlpEndpoint: 'http://127.0.0.1:1',
        traceSampleRatio: 2,
        logger: nullLogger,
      }),
    (err) => isSockmeshError(err, 'SOCKMESH_E_CONFIG'),
  );
});
