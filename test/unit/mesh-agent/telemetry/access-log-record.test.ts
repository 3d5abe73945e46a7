import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type AccessLogRecord,
  connectionRecord,
  type RequestEvent,
  requestRecord,
  type TcpCloseEvent,
} from '../../../../mesh-agent/telemetry/index.js';

const source = { workload: 'web', namespace: 'shop', version: 'v1', principal: 'spiffe://td/ns/shop/sa/web' };
const destination = {
  service: 'reviews.shop.svc.cluster.local',
  workload: 'reviews-v2',
  namespace: 'shop',
  version: 'v2',
  cluster: 'outbound|9080|v2|reviews.shop',
};

const KEYS: Array<keyof AccessLogRecord> = [
  'start_time',
  'duration_ms',
  'kind',
  'node',
  'reporter',
  'protocol',
  'method',
  'path',
  'authority',
  'response_code',
  'response_flags',
  'bytes_received',
  'bytes_sent',
  'source_workload',
  'source_namespace',
  'source_version',
  'source_principal',
  'downstream_address',
  'destination_service',
  'destination_workload',
  'destination_namespace',
  'destination_version',
  'route_name',
  'upstream_cluster',
  'upstream_host',
  'trace_id',
  'span_id',
  'connection_id',
];

test('request record carries every field, in a stable key order', () => {
  const ev: RequestEvent = {
    source,
    destination,
    protocol: 'http',
    reporter: 'source',
    code: 503,
    flags: 'UO',
    durationMs: 1.5,
    startTime: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    method: 'GET',
    path: '/reviews/1',
    authority: 'reviews:9080',
    route: 'reviews-route',
    upstreamHost: '10.1.0.5:9080',
    downstreamAddress: '10.1.0.9:41000',
    bytesSent: 19,
    bytesReceived: 0,
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
  };
  const rec = requestRecord(ev, 'node-1');
  assert.deepEqual(Object.keys(rec), KEYS);
  assert.equal(rec.start_time, '2026-01-02T03:04:05.006Z');
  assert.equal(rec.kind, 'request');
  assert.equal(rec.node, 'node-1');
  assert.equal(rec.response_code, 503);
  assert.equal(rec.response_flags, 'UO');
  assert.equal(rec.upstream_cluster, destination.cluster);
  assert.equal(rec.upstream_host, '10.1.0.5:9080');
  assert.equal(rec.trace_id, ev.traceId);
  assert.equal(rec.source_principal, source.principal);
  assert.equal(rec.connection_id, null);
  // One line of JSON, parseable back to the same record.
  const line = JSON.stringify(rec);
  assert.doesNotMatch(line, /\n/);
  assert.deepEqual(JSON.parse(line), rec);
});

test('missing optional fields are null, flags default to -, start derives from duration', () => {
  const before = Date.now();
  const rec = requestRecord({
    source,
    destination,
    protocol: 'http',
    reporter: 'destination',
    code: 200,
    flags: '',
    durationMs: 1000,
  });
  assert.equal(rec.response_flags, '-');
  assert.equal(rec.method, null);
  assert.equal(rec.trace_id, null);
  const start = Date.parse(rec.start_time);
  assert.ok(start >= before - 1000 - 5 && start <= Date.now() - 1000 + 5, rec.start_time);
});

test('connection record', () => {
  const ev: TcpCloseEvent = {
    source,
    destination,
    reporter: 'source',
    bytesSent: 10,
    bytesReceived: 20,
    durationMs: 42,
    connectionId: 7,
    upstreamHost: '10.2.0.3:5432',
  };
  const rec = connectionRecord(ev, 'n');
  assert.deepEqual(Object.keys(rec), KEYS);
  assert.equal(rec.kind, 'connection');
  assert.equal(rec.protocol, 'tcp');
  assert.equal(rec.response_code, null);
  assert.equal(rec.response_flags, '-');
  assert.equal(rec.bytes_sent, 10);
  assert.equal(rec.bytes_received, 20);
  assert.equal(rec.connection_id, '7');
  assert.equal(rec.duration_ms, 42);
});
