import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ValueType } from '@opentelemetry/api';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  type MetricData,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import {
  type RequestEvent,
  RequestMetrics,
  toPrometheusText,
} from '../../../../mesh-agent/telemetry/index.js';

const t0: [number, number] = [1, 0];
const point = <T>(attributes: Record<string, string | number | boolean>, value: T) => ({
  startTime: t0,
  endTime: t0,
  attributes,
  value,
});
const desc = (name: string, unit = '', description = `help for ${name}`) => ({
  name,
  description,
  unit,
  valueType: ValueType.DOUBLE,
});

async function sample(): Promise<ResourceMetrics> {
  const req = new RequestMetrics([0.5, 1, 10]);
  const ev: RequestEvent = {
    source: { workload: 'web', namespace: 'shop', version: 'v1', principal: 'spiffe://td/ns/shop/sa/web' },
    destination: {
      service: 'reviews',
      workload: 'r"ev\\iews\nx',
      namespace: 'shop',
      version: 'v1',
      cluster: 'c',
    },
    protocol: 'http',
    reporter: 'source',
    code: 503,
    flags: 'UO',
    durationMs: 0.7,
  };
  req.record(ev);
  req.record({ ...ev, durationMs: 100 });
  req.record({ ...ev, code: 200, flags: '-' });
  const produced = (await req.collect()).resourceMetrics.scopeMetrics;
  const extra: MetricData[] = [
    {
      descriptor: desc('counter.without-suffix'),
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.SUM,
      isMonotonic: true,
      dataPoints: [point({ 'odd.key-name': true }, 3)],
    },
    {
      descriptor: desc('updown', '', 'multi\nline \\ help'),
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.SUM,
      isMonotonic: false,
      dataPoints: [point({}, -2)],
    },
    {
      descriptor: desc('expiry', 's'),
      aggregationTemporality: AggregationTemporality.DELTA,
      dataPointType: DataPointType.GAUGE,
      dataPoints: [point({ id: 'a' }, 1.25), point({ id: 'b' }, Number.POSITIVE_INFINITY)],
    },
    {
      descriptor: desc('nolabels_hist', 'ms'),
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: [point({}, { buckets: { boundaries: [1, 2], counts: [1, 0, 4] }, sum: 12, count: 5 })],
    },
  ];
  return {
    resource: resourceFromAttributes({ 'service.name': 'sockmesh-agent', 'k8s.node.name': 'n"1' }),
    scopeMetrics: [...produced, { scope: { name: 'x' }, metrics: extra }],
  };
}

/** Lines, without blank ones (the two differ only in blank-line placement). */
const lines = (s: string) => s.split('\n').filter((l) => l !== '');

test('same exposition as the OTel Prometheus serializer (scope labels off)', async () => {
  const rm = await sample();
  const ours = toPrometheusText(rm);
  const theirs = new PrometheusSerializer(undefined, false, undefined, false, true).serialize(rm);
  assert.deepEqual(lines(ours), lines(theirs));
  assert.match(ours, /^sockmesh_request_duration_milliseconds_bucket\{.*le="\+Inf"\} 2$/m);
  assert.match(ours, /destination_workload="r\\"ev\\\\iews\\nx"/);
  assert.match(ours, /^counter_without_suffix_total\{odd_key_name="true"\} 3$/m);
  assert.match(ours, /^expiry\{id="b"\} \+Inf$/m);
});

test('nothing collected', () => {
  const rm: ResourceMetrics = { resource: resourceFromAttributes({}), scopeMetrics: [] };
  assert.deepEqual(
    lines(toPrometheusText(rm)),
    lines(new PrometheusSerializer(undefined, false, undefined, false, true).serialize(rm)),
  );
});
