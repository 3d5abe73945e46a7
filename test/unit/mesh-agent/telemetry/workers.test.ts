import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DataPointType } from '@opentelemetry/sdk-metrics';
import {
  fromSnapshot,
  type MetricsSnapshot,
  mergeSnapshots,
  type SnapshotHistogram,
  WorkerMetrics,
} from '../../../../mesh-agent/telemetry/index.js';

const h = (counts: number[], sum: number, min?: number, max?: number): SnapshotHistogram => ({
  boundaries: [1, 10],
  counts,
  sum,
  count: counts.reduce((a, b) => a + b, 0),
  ...(min === undefined ? {} : { min }),
  ...(max === undefined ? {} : { max }),
});

const snap = (n: number, gauge: number, hist: SnapshotHistogram): MetricsSnapshot => ({
  metrics: [
    { name: 'c_total', description: 'c', unit: '', type: 'counter', points: [[{ a: 'x', code: 200 }, n]] },
    { name: 'g', description: 'g', unit: '', type: 'gauge', points: [[{ cluster: 'k' }, gauge]] },
    { name: 'h', description: 'h', unit: 'ms', type: 'histogram', points: [[{ a: 'x' }, hist]] },
  ],
});

test('counters and histograms add up, gauges take the max, label order does not matter', () => {
  const a = snap(3, 2, h([1, 1, 0], 5.5, 0.5, 5));
  const b = snap(4, 1, h([0, 0, 2], 40, 20, 20));
  b.metrics[0]!.points[0]![0] = { code: 200, a: 'x' };
  const m = mergeSnapshots([a, b]);
  assert.deepEqual(m.metrics[0]?.points, [[{ a: 'x', code: 200 }, 7]]);
  assert.deepEqual(m.metrics[1]?.points, [[{ cluster: 'k' }, 2]]);
  assert.deepEqual(m.metrics[2]?.points, [[{ a: 'x' }, h([1, 1, 2], 45.5, 0.5, 20)]]);
  // Inputs are not modified.
  assert.deepEqual(a.metrics[2]?.points[0]?.[1], h([1, 1, 0], 5.5, 0.5, 5));
});

test('histograms with different buckets are not mixed; kinds are not mixed', () => {
  const other: MetricsSnapshot = {
    metrics: [
      {
        name: 'h',
        description: 'h',
        unit: 'ms',
        type: 'histogram',
        points: [[{ a: 'x' }, { ...h([9, 9, 9], 1), boundaries: [1, 5] }]],
      },
      { name: 'c_total', description: 'c', unit: '', type: 'gauge', points: [[{ a: 'x', code: 200 }, 100]] },
    ],
  };
  const m = mergeSnapshots([snap(1, 1, h([1, 0, 0], 0.5)), other]);
  assert.deepEqual(m.metrics.find((x) => x.name === 'h')?.points[0]?.[1], h([1, 0, 0], 0.5));
  assert.deepEqual(m.metrics.find((x) => x.name === 'c_total')?.points[0]?.[1], 1);
});

test('snapshots survive JSON and convert back to OTel metric data', () => {
  const s = JSON.parse(JSON.stringify(snap(2, 1, h([1, 0, 1], 11, 1, 10)))) as MetricsSnapshot;
  const data = fromSnapshot(s);
  assert.deepEqual(
    data.map((d) => [d.descriptor.name, d.dataPointType]),
    [
      ['c_total', DataPointType.SUM],
      ['g', DataPointType.GAUGE],
      ['h', DataPointType.HISTOGRAM],
    ],
  );
  const sum = data[0];
  assert.ok(sum?.dataPointType === DataPointType.SUM);
  assert.equal(sum.isMonotonic, true);
  assert.equal(sum.dataPoints[0]?.value, 2);
});

test('a removed worker keeps its counters but not its gauges; re-adding an id retires the old one', async () => {
  const w = new WorkerMetrics();
  assert.equal(w.active, false);
  let n = 1;
  w.add('a', async () => snap(n, 5, h([n, 0, 0], n)));
  assert.equal(w.active, true);
  let merged = mergeSnapshots(await w.collect());
  assert.equal(merged.metrics[0]?.points[0]?.[1], 1);
  n = 4;
  merged = mergeSnapshots(await w.collect());
  assert.equal(merged.metrics[0]?.points[0]?.[1], 4);
  w.add('a', async () => snap(2, 1, h([2, 0, 0], 2))); // restarted under the same id
  merged = mergeSnapshots(await w.collect());
  assert.equal(merged.metrics.find((m) => m.name === 'c_total')?.points[0]?.[1], 6);
  assert.equal(merged.metrics.find((m) => m.name === 'g')?.points[0]?.[1], 1, 'old gauge gone');
  w.remove('a');
  merged = mergeSnapshots(await w.collect());
  assert.equal(merged.metrics.find((m) => m.name === 'c_total')?.points[0]?.[1], 6);
  assert.equal(
    merged.metrics.find((m) => m.name === 'g'),
    undefined,
  );
  assert.equal(w.active, true, 'retired totals are still served');
});

test('a failing worker contributes its last good snapshot', async () => {
  const w = new WorkerMetrics(50);
  let mode: 'ok' | 'throw' | 'hang' = 'ok';
  w.add('a', async () => {
    if (mode === 'throw') throw new Error('gone');
    if (mode === 'hang') return new Promise<MetricsSnapshot>(() => {});
    return snap(3, 1, h([3, 0, 0], 3));
  });
  await w.collect();
  mode = 'throw';
  assert.equal(mergeSnapshots(await w.collect()).metrics[0]?.points[0]?.[1], 3);
  mode = 'hang';
  assert.equal(mergeSnapshots(await w.collect()).metrics[0]?.points[0]?.[1], 3);
});
