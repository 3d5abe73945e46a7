/**
 * Metric snapshots: what OTel collected, as plain data that survives JSON and
 * structured clone, so proxy workers can hand their metrics to the primary.
 * Merging sums counters and histograms and takes the maximum of gauges.
 */
import { type Attributes, ValueType } from '@opentelemetry/api';
import { hrTime } from '@opentelemetry/core';
import {
  AggregationTemporality,
  DataPointType,
  type GaugeMetricData,
  type HistogramMetricData,
  type MetricData,
  type ResourceMetrics,
  type SumMetricData,
} from '@opentelemetry/sdk-metrics';

export type SnapshotLabels = Record<string, string | number | boolean>;

export interface SnapshotHistogram {
  boundaries: number[];
  counts: number[];
  sum: number;
  count: number;
  min?: number;
  max?: number;
}

export type SnapshotMetric =
  | {
      name: string;
      description: string;
      unit: string;
      type: 'counter' | 'gauge';
      points: Array<[SnapshotLabels, number]>;
    }
  | {
      name: string;
      description: string;
      unit: string;
      type: 'histogram';
      points: Array<[SnapshotLabels, SnapshotHistogram]>;
    };

export interface MetricsSnapshot {
  metrics: SnapshotMetric[];
}

function plainLabels(a: Attributes): SnapshotLabels {
  const out: SnapshotLabels = {};
  for (const [k, v] of Object.entries(a)) {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  return out;
}

/** Turns collected OTel metrics into a snapshot (what a worker sends). */
export function toSnapshot(rm: ResourceMetrics): MetricsSnapshot {
  const metrics: SnapshotMetric[] = [];
  for (const scope of rm.scopeMetrics) {
    for (const m of scope.metrics) {
      const { name, description, unit } = m.descriptor;
      if (m.dataPointType === DataPointType.HISTOGRAM) {
        metrics.push({
          name,
          description,
          unit,
          type: 'histogram',
          points: m.dataPoints.map((p) => {
            const h: SnapshotHistogram = {
              boundaries: [...p.value.buckets.boundaries],
              counts: [...p.value.buckets.counts],
              sum: p.value.sum ?? 0,
              count: p.value.count,
            };
            if (Number.isFinite(p.value.min)) h.min = p.value.min!;
            if (Number.isFinite(p.value.max)) h.max = p.value.max!;
            return [plainLabels(p.attributes), h];
          }),
        });
      } else if (m.dataPointType === DataPointType.SUM || m.dataPointType === DataPointType.GAUGE) {
        const counter = m.dataPointType === DataPointType.SUM && m.isMonotonic;
        metrics.push({
          name,
          description,
          unit,
          type: counter ? 'counter' : 'gauge',
          points: m.dataPoints.map((p) => [plainLabels(p.attributes), p.value]),
        });
      }
    }
  }
  return { metrics };
}

interface Family {
  name: string;
  description: string;
  unit: string;
  type: SnapshotMetric['type'];
  points: Map<string, [SnapshotLabels, number | SnapshotHistogram]>;
}

/** Stable key of a label set (scrape time only, so JSON is fine). */
function labelKey(l: SnapshotLabels): string {
  return JSON.stringify(
    Object.keys(l)
      .sort()
      .map((k) => [k, l[k]]),
  );
}

function mergeHistogram(into: SnapshotHistogram, h: SnapshotHistogram): SnapshotHistogram {
  if (
    into.boundaries.length !== h.boundaries.length ||
    into.boundaries.some((b, i) => b !== h.boundaries[i])
  ) {
    return into; // different buckets cannot be added; keep the first
  }
  const out: SnapshotHistogram = {
    boundaries: into.boundaries,
    counts: into.counts.map((c, i) => c + (h.counts[i] ?? 0)),
    sum: into.sum + h.sum,
    count: into.count + h.count,
  };
  const min = Math.min(into.min ?? Number.POSITIVE_INFINITY, h.min ?? Number.POSITIVE_INFINITY);
  const max = Math.max(into.max ?? Number.NEGATIVE_INFINITY, h.max ?? Number.NEGATIVE_INFINITY);
  if (Number.isFinite(min)) out.min = min;
  if (Number.isFinite(max)) out.max = max;
  return out;
}

/** Sums counters and histograms, takes the max of gauges, by name and label set. */
export function mergeSnapshots(snapshots: readonly MetricsSnapshot[]): MetricsSnapshot {
  const families = new Map<string, Family>();
  for (const snap of snapshots) {
    for (const m of snap.metrics) {
      let f = families.get(m.name);
      if (!f) {
        f = { name: m.name, description: m.description, unit: m.unit, type: m.type, points: new Map() };
        families.set(m.name, f);
      }
      if (f.type !== m.type) continue; // same name, different kind: keep the first
      for (const [labels, value] of m.points as Array<[SnapshotLabels, number | SnapshotHistogram]>) {
        const key = labelKey(labels);
        const prev = f.points.get(key);
        if (!prev) {
          f.points.set(key, [
            labels,
            typeof value === 'number' ? value : { ...value, counts: [...value.counts] },
          ]);
        } else if (typeof value === 'number' && typeof prev[1] === 'number') {
          prev[1] = f.type === 'gauge' ? Math.max(prev[1], value) : prev[1] + value;
        } else if (typeof value !== 'number' && typeof prev[1] !== 'number') {
          prev[1] = mergeHistogram(prev[1], value);
        }
      }
    }
  }
  const metrics: SnapshotMetric[] = [];
  for (const f of families.values()) {
    const base = { name: f.name, description: f.description, unit: f.unit };
    if (f.type === 'histogram') {
      metrics.push({
        ...base,
        type: 'histogram',
        points: [...f.points.values()] as Array<[SnapshotLabels, SnapshotHistogram]>,
      });
    } else {
      metrics.push({
        ...base,
        type: f.type,
        points: [...f.points.values()] as Array<[SnapshotLabels, number]>,
      });
    }
  }
  return { metrics };
}

/** Only what must survive a worker's exit: counters and histograms. */
export function cumulativeOnly(s: MetricsSnapshot): MetricsSnapshot {
  return { metrics: s.metrics.filter((m) => m.type !== 'gauge') };
}

/** Back to OTel MetricData, for the Prometheus serializer. */
export function fromSnapshot(s: MetricsSnapshot): MetricData[] {
  const now = hrTime();
  const out: MetricData[] = [];
  for (const m of s.metrics) {
    const descriptor = {
      name: m.name,
      description: m.description,
      unit: m.unit,
      valueType: ValueType.DOUBLE,
    };
    if (m.type === 'histogram') {
      const data: HistogramMetricData = {
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: m.points.map(([attributes, h]) => ({
          startTime: now,
          endTime: now,
          attributes,
          value: {
            buckets: { boundaries: h.boundaries, counts: h.counts },
            sum: h.sum,
            count: h.count,
            ...(h.min === undefined ? {} : { min: h.min }),
            ...(h.max === undefined ? {} : { max: h.max }),
          },
        })),
      };
      out.push(data);
    } else if (m.type === 'counter') {
      const data: SumMetricData = {
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.SUM,
        isMonotonic: true,
        dataPoints: m.points.map(([attributes, value]) => ({
          startTime: now,
          endTime: now,
          attributes,
          value,
        })),
      };
      out.push(data);
    } else {
      const data: GaugeMetricData = {
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.GAUGE,
        dataPoints: m.points.map(([attributes, value]) => ({
          startTime: now,
          endTime: now,
          attributes,
          value,
        })),
      };
      out.push(data);
    }
  }
  return out;
}
