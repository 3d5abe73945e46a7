import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DataPointType, type HistogramMetricData, type SumMetricData } from '@opentelemetry/sdk-metrics';
import { type RequestEvent, RequestMetrics } from '../../../../mesh-agent/telemetry/index.js';

const source = { workload: 'web', namespace: 'shop', version: 'v1', principal: 'spiffe://td/ns/shop/sa/web' };
const destination = {
  service: 'reviews',
  workload: 'reviews-v1',
  namespace: 'shop',
  version: 'v1',
  cluster: 'c1',
};
const ev = (over: Partial<RequestEvent> = {}): RequestEvent => ({
  source,
  destination,
  protocol: 'http',
  reporter: 'source',
  code: 200,
  flags: '-',
  durationMs: 1,
  ...over,
});

async function collect(m: RequestMetrics) {
  const { resourceMetrics, errors } = await m.collect();
  assert.deepEqual(errors, []);
  const metrics = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
  const total = metrics.find((x) => x.descriptor.name === 'sockmesh_requests_total') as
    | SumMetricData
    | undefined;
  const hist = metrics.find((x) => x.descriptor.name === 'sockmesh_request_duration_milliseconds') as
    | HistogramMetricData
    | undefined;
  return { metrics, total, hist };
}

test('nothing recorded, nothing exported', async () => {
  assert.equal((await collect(new RequestMetrics())).metrics.length, 0);
});

test('one series per label set; counter and histogram agree', async () => {
  const m = new RequestMetrics([1, 10, 100]);
  m.record(ev({ durationMs: 0.5 }));
  m.record(ev({ durationMs: 1 })); // bounds are inclusive: le=1
  m.record(ev({ durationMs: 50 }));
  m.record(ev({ durationMs: 1000 }));
  m.record(ev({ code: 503, flags: 'UO', durationMs: 2 }));
  const { total, hist } = await collect(m);
  assert.ok(total && hist);
  assert.equal(total.dataPointType, DataPointType.SUM);
  assert.equal(total.isMonotonic, true);
  assert.equal(total.dataPoints.length, 2);
  const ok = total.dataPoints.find((p) => p.attributes.response_code === 200);
  assert.equal(ok?.value, 4);
  assert.equal(ok?.attributes.destination_cluster, 'c1');
  const h = hist.dataPoints.find((p) => p.attributes.response_code === 200)?.value;
  assert.ok(h);
  assert.deepEqual(h.buckets.boundaries, [1, 10, 100]);
  assert.deepEqual(h.buckets.counts, [2, 0, 1, 1]);
  assert.equal(h.count, 4);
  assert.equal(h.sum, 1051.5);
  assert.equal(h.min, 0.5);
  assert.equal(h.max, 1000);
});

test('empty and normalised values share one series with the labels', async () => {
  const m = new RequestMetrics();
  m.record(ev({ flags: '' }));
  m.record(ev({ flags: '-' }));
  m.record(ev({ source: { ...source, version: '' } }));
  m.record(ev({ source: { ...source, version: 'unknown' } }));
  const { total } = await collect(m);
  assert.equal(m.seriesCount, 2);
  assert.deepEqual(
    total?.dataPoints.map((p) => [p.attributes.source_version, p.attributes.response_flags, p.value]),
    [
      ['v1', '-', 2],
      ['unknown', '-', 2],
    ],
  );
});

test('series beyond the bound go to one overflow series', async () => {
  const m = new RequestMetrics([1], 3);
  for (let i = 0; i < 10; i++) m.record(ev({ destination: { ...destination, workload: `w${i}` } }));
  const { total } = await collect(m);
  assert.equal(m.seriesCount, 4);
  const overflow = total?.dataPoints.find((p) => p.attributes.otel_metric_overflow === 'true');
  assert.equal(overflow?.value, 7);
});

test('collected data is a snapshot', async () => {
  const m = new RequestMetrics([1]);
  m.record(ev());
  const first = await collect(m);
  m.record(ev());
  assert.deepEqual(first.hist?.dataPoints[0]?.value.buckets.counts, [1, 0]);
  assert.equal(first.total?.dataPoints[0]?.value, 1);
  assert.equal((await collect(m)).total?.dataPoints[0]?.value, 2);
});
