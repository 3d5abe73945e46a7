import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { request } from 'undici';
import type { TcpLeg } from '../../../../bpf-sockops/tcp-health.js';
import { isSockmeshError } from '../../../../lib/errors.js';
import { nullLogger } from '../../../../lib/log.js';
import {
  DURATION_BUCKETS_MS,
  MeshTelemetry,
  type RequestEvent,
  type TcpEvent,
} from '../../../../mesh-agent/telemetry/index.js';

const source = { workload: 'web', namespace: 'shop', version: 'v1', principal: 'spiffe://td/ns/shop/sa/web' };
const destination = {
  service: 'reviews.shop.svc.cluster.local',
  workload: 'reviews-v2',
  namespace: 'shop',
  version: 'v2',
  cluster: 'reviews-v2',
};

function req(code: number, flags: string, durationMs: number): RequestEvent {
  return { source, destination, protocol: 'http', reporter: 'source', code, flags, durationMs };
}

async function start(t: import('node:test').TestContext) {
  const tel = new MeshTelemetry({
    nodeName: 'node-a',
    metricsHost: '127.0.0.1',
    metricsPort: 0,
    logger: nullLogger,
  });
  t.after(() => tel.close());
  const { port } = await tel.start();
  const base = `http://127.0.0.1:${port}`;
  const get = async (path: string) => {
    const r = await request(`${base}${path}`);
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
  };
  const scrape = async () => {
    const r = await get('/metrics');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    return r.body;
  };
  return { tel, base, get, scrape };
}

/** The value of the one sample whose name and labels all match, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

test('request counters and duration histogram in Prometheus text', async (t) => {
  const { tel, scrape } = await start(t);
  tel.requestCompleted(req(200, '-', 0.3));
  tel.requestCompleted(req(200, '-', 7));
  tel.requestCompleted(req(503, 'UO', 0.05));
  let text = await scrape();

  assert.match(text, /# TYPE sockmesh_requests_total counter/);
  assert.match(text, /# TYPE sockmesh_request_duration_milliseconds histogram/);
  const ok = {
    reporter: 'source',
    source_workload: 'web',
    source_namespace: 'shop',
    source_version: 'v1',
    source_principal: 'spiffe://td/ns/shop/sa/web',
    destination_service: 'reviews.shop.svc.cluster.local',
    destination_workload: 'reviews-v2',
    destination_namespace: 'shop',
    destination_version: 'v2',
    destination_cluster: 'reviews-v2',
    request_protocol: 'http',
    response_code: '200',
    response_flags: '-',
  };
  assert.equal(sample(text, 'sockmesh_requests_total', ok), 2);
  assert.equal(sample(text, 'sockmesh_requests_total', { response_code: '503', response_flags: 'UO' }), 1);
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_count', ok), 2);
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_sum', ok), 7.3);
  // Cumulative buckets: 0.3 falls in le=0.5, 7 in le=10.
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_bucket', { ...ok, le: '0.25' }), 0);
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_bucket', { ...ok, le: '0.5' }), 1);
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_bucket', { ...ok, le: '5' }), 1);
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_bucket', { ...ok, le: '10' }), 2);
  assert.equal(sample(text, 'sockmesh_request_duration_milliseconds_bucket', { ...ok, le: '+Inf' }), 2);
  for (const b of DURATION_BUCKETS_MS) {
    assert.ok(
      sample(text, 'sockmesh_request_duration_milliseconds_bucket', { ...ok, le: String(b) }) !== undefined,
      `bucket le=${b}`,
    );
  }
  assert.match(text, /target_info\{[^}]*k8s_node_name="node-a"/);

  // Counters keep counting across scrapes (cumulative).
  tel.requestCompleted(req(200, '-', 1));
  text = await scrape();
  assert.equal(sample(text, 'sockmesh_requests_total', ok), 3);
});

test('unknown peers are labelled unknown', async (t) => {
  const { tel, scrape } = await start(t);
  tel.requestCompleted({
    source: { workload: '', namespace: '', version: '', principal: '' },
    destination: { service: 'passthrough', workload: '', namespace: '', version: '', cluster: '' },
    protocol: 'tcp',
    reporter: 'source',
    code: 0,
    flags: 'UF',
    durationMs: 3,
  });
  const text = await scrape();
  assert.equal(
    sample(text, 'sockmesh_requests_total', {
      source_workload: 'unknown',
      destination_service: 'passthrough',
      destination_cluster: 'unknown',
      response_code: '0',
      response_flags: 'UF',
      request_protocol: 'tcp',
    }),
    1,
  );
});

test('tcp, breaker, outlier and authz metrics', async (t) => {
  const { tel, scrape } = await start(t);
  const conn: TcpEvent = { source, destination, reporter: 'destination' };
  tel.tcpOpened(conn);
  tel.tcpOpened(conn);
  tel.tcpBytes(conn, 100, 10);
  tel.tcpClosed({ ...conn, bytesSent: 50, bytesReceived: 5 });
  tel.breakerOverflow('reviews-v2', 'requests');
  tel.breakerOverflow('reviews-v2', 'requests');
  tel.breakerOverflow('reviews-v2', 'pending');
  tel.outlierEjection('reviews-v2', '10.0.0.1:9080');
  tel.outlierEvent('reviews-v2', { kind: 'ejected', endpoint: '10.0.0.2:9080', type: 'consecutive_5xx' });
  tel.outlierEvent('reviews-v2', {
    kind: 'not-ejected',
    endpoint: '10.0.0.3:9080',
    type: 'consecutive_5xx',
    reason: 'max-ejection-percent',
  });
  tel.outlierEvent('reviews-v2', { kind: 'restored', endpoint: '10.0.0.1:9080' });
  tel.authzDenied({
    sourcePrincipal: 'spiffe://td/ns/evil/sa/x',
    destinationWorkload: 'db',
    destinationNamespace: 'shop',
    policy: 'shop/deny-evil',
  });
  const text = await scrape();
  const l = { reporter: 'destination', source_workload: 'web', destination_workload: 'reviews-v2' };
  assert.equal(sample(text, 'sockmesh_tcp_connections_opened_total', l), 2);
  assert.equal(sample(text, 'sockmesh_tcp_connections_closed_total', { ...l, response_flags: '-' }), 1);
  assert.equal(sample(text, 'sockmesh_tcp_sent_bytes_total', l), 150);
  assert.equal(sample(text, 'sockmesh_tcp_received_bytes_total', l), 15);
  assert.equal(
    sample(text, 'sockmesh_breaker_overflows_total', { cluster: 'reviews-v2', kind: 'requests' }),
    2,
  );
  assert.equal(
    sample(text, 'sockmesh_breaker_overflows_total', { cluster: 'reviews-v2', kind: 'pending' }),
    1,
  );
  assert.equal(
    sample(text, 'sockmesh_outlier_ejections_total', { cluster: 'reviews-v2', type: 'consecutive_5xx' }),
    2,
  );
  assert.equal(
    sample(text, 'sockmesh_outlier_ejections_skipped_total', {
      cluster: 'reviews-v2',
      reason: 'max-ejection-percent',
    }),
    1,
  );
  assert.equal(sample(text, 'sockmesh_outlier_ejected_endpoints', { cluster: 'reviews-v2' }), 1);
  tel.outlierRestored('reviews-v2', '10.0.0.2:9080');
  tel.outlierRestored('nope', '10.0.0.2:9080');
  const after = await scrape();
  assert.equal(sample(after, 'sockmesh_outlier_ejected_endpoints', { cluster: 'reviews-v2' }), 0);
  assert.equal(sample(after, 'sockmesh_outlier_ejections_total', { cluster: 'reviews-v2' }), 2);
  assert.equal(
    sample(text, 'sockmesh_authz_denials_total', {
      source_principal: 'spiffe://td/ns/evil/sa/x',
      destination_workload: 'db',
      policy: 'shop/deny-evil',
    }),
    1,
  );
});

test('scrape-time gauges: xDS state and versions, SVID expiry, BPF counters', async (t) => {
  const { tel, scrape } = await start(t);
  let text = await scrape();
  assert.equal(sample(text, 'sockmesh_xds_connected'), undefined, 'nothing before the agent registers');

  const LDS = 'type.googleapis.com/envoy.config.listener.v3.Listener';
  const xds = { connected: true, versions: { [LDS]: '7' } as Record<string, string> };
  tel.observeXds(() => xds);
  const notAfter = new Date(Date.now() + 3600_000);
  let svids = [{ spiffeId: 'spiffe://td/ns/shop/sa/web', notAfter }];
  tel.observeSvids(() => svids);
  const bpf: Record<string, number | bigint> = { redirected: 5, passthrough: 2n };
  tel.observeBpfCounters(() => bpf);

  text = await scrape();
  assert.equal(sample(text, 'sockmesh_xds_connected'), 1);
  assert.equal(sample(text, 'sockmesh_xds_config_version_info', { type_url: LDS, version: '7' }), 1);
  const exp = sample(text, 'sockmesh_svid_expiry_seconds', { spiffe_id: 'spiffe://td/ns/shop/sa/web' });
  assert.ok(exp !== undefined && exp > 3590 && exp <= 3600, String(exp));
  assert.match(text, /# TYPE sockmesh_bpf_counter_total counter/);
  assert.equal(sample(text, 'sockmesh_bpf_counter_total', { counter: 'redirected' }), 5);
  assert.equal(sample(text, 'sockmesh_bpf_counter_total', { counter: 'passthrough' }), 2);

  // A new version replaces the old series; disconnection shows as 0.
  xds.connected = false;
  xds.versions = { [LDS]: '8' };
  bpf.redirected = 9;
  svids = [{ spiffeId: 'spiffe://td/ns/shop/sa/db', notAfter: new Date(Date.now() - 10_000) }];
  text = await scrape();
  assert.equal(
    sample(text, 'sockmesh_svid_expiry_seconds', { spiffe_id: 'spiffe://td/ns/shop/sa/web' }),
    undefined,
  );
  const expired = sample(text, 'sockmesh_svid_expiry_seconds', { spiffe_id: 'spiffe://td/ns/shop/sa/db' });
  assert.ok(expired !== undefined && expired < -9, String(expired));
  assert.equal(sample(text, 'sockmesh_xds_connected'), 0);
  assert.equal(sample(text, 'sockmesh_xds_config_version_info', { type_url: LDS, version: '8' }), 1);
  assert.equal(sample(text, 'sockmesh_xds_config_version_info', { type_url: LDS, version: '7' }), undefined);
  assert.equal(sample(text, 'sockmesh_bpf_counter_total', { counter: 'redirected' }), 9);
});

test('kernel TCP health per workload pair: metrics with the mesh labels, JSON on /stats/tcp', async (t) => {
  const { tel, scrape, get } = await start(t);
  assert.deepEqual(JSON.parse((await get('/stats/tcp')).body), { measured: false, pairs: [] });
  const frontend = { namespace: 'shop', workload: 'frontend-1' };
  const pair = (destination: typeof frontend | undefined, leg: TcpLeg, retransmits: number) => ({
    source: frontend,
    destination,
    leg,
    connections: 3,
    failures: 1,
    retransmits,
    rtos: 2,
    rttSamples: 10,
    srttMeanUs: 150,
    srttUs: 180,
    rttvarMeanUs: 40,
    rttvarUs: 55,
    srttSumUs: 1500,
    rttvarSumUs: 400,
  });
  const pairs = [
    pair({ namespace: 'shop', workload: 'reviews-v2-1' }, 'tunnel', 42),
    pair(undefined, 'pod_proxy', 0),
  ];
  tel.observeTcpHealth(() => pairs);
  const text = await scrape();
  const lossy = {
    leg: 'tunnel',
    source_workload: 'frontend-1',
    source_namespace: 'shop',
    destination_workload: 'reviews-v2-1',
    destination_namespace: 'shop',
  };
  assert.match(text, /# TYPE sockmesh_tcp_health_retransmits_total counter/);
  assert.match(text, /# TYPE sockmesh_tcp_health_srtt_microseconds gauge/);
  assert.equal(sample(text, 'sockmesh_tcp_health_retransmits_total', lossy), 42);
  assert.equal(sample(text, 'sockmesh_tcp_health_connections_total', lossy), 3);
  assert.equal(sample(text, 'sockmesh_tcp_health_failures_total', lossy), 1);
  assert.equal(sample(text, 'sockmesh_tcp_health_rtos_total', lossy), 2);
  assert.equal(sample(text, 'sockmesh_tcp_health_rtt_samples_total', lossy), 10);
  assert.equal(sample(text, 'sockmesh_tcp_health_srtt_microseconds_total', lossy), 1500);
  assert.equal(sample(text, 'sockmesh_tcp_health_rttvar_microseconds_total', lossy), 400);
  assert.equal(sample(text, 'sockmesh_tcp_health_srtt_microseconds', lossy), 180);
  assert.equal(sample(text, 'sockmesh_tcp_health_rttvar_microseconds', lossy), 55);
  assert.equal(
    sample(text, 'sockmesh_tcp_health_retransmits_total', {
      leg: 'pod_proxy',
      destination_workload: 'unknown',
      destination_namespace: 'unknown',
    }),
    0,
  );
  const json = JSON.parse((await get('/stats/tcp')).body);
  assert.equal(json.measured, true);
  assert.deepEqual(
    json.pairs.map((p: { leg: string; retransmits: number }) => [p.leg, p.retransmits]),
    [
      ['tunnel', 42],
      ['pod_proxy', 0],
    ],
  );
  tel.observeTcpHealth(() => {
    throw new Error('map gone');
  });
  assert.equal((await get('/stats/tcp')).status, 500);
  await scrape(); // a failing kernel read does not break the scrape
});

test('a throwing scrape-time source does not break the scrape', async (t) => {
  const { tel, scrape } = await start(t);
  tel.observeBpfCounters(() => {
    throw new Error('map gone');
  });
  tel.requestCompleted(req(200, '-', 1));
  const text = await scrape();
  assert.ok(sample(text, 'sockmesh_requests_total') === 1);
});

test('health, readiness, config dump and unknown paths', async (t) => {
  const { tel, get, base } = await start(t);
  assert.equal((await get('/healthz')).status, 200);
  let ready = await get('/ready');
  assert.equal(ready.status, 503);
  assert.deepEqual(JSON.parse(ready.body), { ready: false, reason: 'starting' });
  tel.setReady(true);
  ready = await get('/ready');
  assert.equal(ready.status, 200);
  assert.equal(JSON.parse(ready.body).ready, true);
  tel.setReady(false, 'xds disconnected');
  ready = await get('/healthz/ready');
  assert.equal(ready.status, 503);
  assert.equal(JSON.parse(ready.body).reason, 'xds disconnected');

  assert.deepEqual(JSON.parse((await get('/stats/config')).body), {});
  tel.setConfigDump(() => ({ versions: { lds: '3' }, big: 2n ** 70n }));
  assert.deepEqual(JSON.parse((await get('/stats/config')).body), {
    versions: { lds: '3' },
    big: (2n ** 70n).toString(),
  });

  assert.equal((await get('/nope')).status, 404);
  assert.equal((await get('/metrics?x=1')).status, 200);
  const post = await request(`${base}/metrics`, { method: 'POST', body: 'x' });
  await post.body.dump();
  assert.equal(post.statusCode, 405);
});

test('port in use is a SockmeshError with a hint; close is idempotent', async (t) => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = (blocker.address() as import('node:net').AddressInfo).port;
  const tel = new MeshTelemetry({
    nodeName: 'n',
    metricsHost: '127.0.0.1',
    metricsPort: port,
    logger: nullLogger,
  });
  t.after(() => tel.close());
  await assert.rejects(tel.start(), (err) => {
    assert.ok(isSockmeshError(err, 'SOCKMESH_E_CONFIG'));
    assert.match(err.message, /EADDRINUSE/);
    assert.match(err.hint ?? '', /another process/);
    return true;
  });
  await tel.close();
  await tel.close();
});
