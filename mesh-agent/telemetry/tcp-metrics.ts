/**
 * TCP connection metrics (opened, closed, bytes each way), aggregated in place
 * like the request metrics (see request-metrics.ts for why) and exported as
 * an OTel MetricProducer.
 */
import { type Attributes, type HrTime, ValueType } from '@opentelemetry/api';
import { hrTime } from '@opentelemetry/core';
import { emptyResource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  type CollectionResult,
  DataPointType,
  type MetricProducer,
  type SumMetricData,
} from '@opentelemetry/sdk-metrics';
import { DEFAULT_MAX_SERIES } from './request-metrics.js';
import type { TcpEvent } from './types.js';

export const TCP_OPENED = 'sockmesh_tcp_connections_opened_total';
export const TCP_CLOSED = 'sockmesh_tcp_connections_closed_total';
export const TCP_SENT = 'sockmesh_tcp_sent_bytes_total';
export const TCP_RECEIVED = 'sockmesh_tcp_received_bytes_total';

const UNKNOWN = 'unknown';
const OVERFLOW_KEY = '\u0000overflow';

export function tcpLabels(ev: TcpEvent): Attributes {
  const s = ev.source;
  const d = ev.destination;
  return {
    reporter: ev.reporter,
    source_workload: s.workload || UNKNOWN,
    source_namespace: s.namespace || UNKNOWN,
    source_version: s.version || UNKNOWN,
    source_principal: s.principal || UNKNOWN,
    destination_service: d.service || UNKNOWN,
    destination_workload: d.workload || UNKNOWN,
    destination_namespace: d.namespace || UNKNOWN,
    destination_version: d.version || UNKNOWN,
    destination_cluster: d.cluster || UNKNOWN,
  };
}

function tcpKey(ev: TcpEvent): string {
  const s = ev.source;
  const d = ev.destination;
  return `${ev.reporter}\u0001${s.workload || UNKNOWN}\u0001${s.namespace || UNKNOWN}\u0001${s.version || UNKNOWN}\u0001${s.principal || UNKNOWN}\u0001${d.service || UNKNOWN}\u0001${d.workload || UNKNOWN}\u0001${d.namespace || UNKNOWN}\u0001${d.version || UNKNOWN}\u0001${d.cluster || UNKNOWN}`;
}

interface Point {
  readonly attributes: Attributes;
  readonly startTime: HrTime;
  value: number;
}

/** One monotonic counter keyed by a caller-built string. */
class LocalSum {
  private readonly points = new Map<string, Point>();

  constructor(
    private readonly name: string,
    private readonly description: string,
    private readonly unit: string,
    private readonly maxSeries: number,
  ) {}

  add(key: string, labels: () => Attributes, value: number): void {
    let p = this.points.get(key);
    if (p === undefined) {
      if (this.points.size >= this.maxSeries) {
        key = OVERFLOW_KEY;
        p = this.points.get(key);
      }
      if (p === undefined) {
        p = {
          attributes: key === OVERFLOW_KEY ? { otel_metric_overflow: 'true' } : labels(),
          startTime: hrTime(),
          value: 0,
        };
        this.points.set(key, p);
      }
    }
    p.value += value;
  }

  collect(endTime: HrTime): SumMetricData | null {
    if (this.points.size === 0) return null;
    const data: SumMetricData = {
      descriptor: {
        name: this.name,
        description: this.description,
        unit: this.unit,
        valueType: ValueType.INT,
      },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.SUM,
      isMonotonic: true,
      dataPoints: [],
    };
    for (const p of this.points.values()) {
      data.dataPoints.push({ startTime: p.startTime, endTime, attributes: p.attributes, value: p.value });
    }
    return data;
  }
}

export class TcpMetrics implements MetricProducer {
  private readonly opened: LocalSum;
  private readonly closed: LocalSum;
  private readonly sent: LocalSum;
  private readonly received: LocalSum;

  constructor(maxSeries = DEFAULT_MAX_SERIES) {
    this.opened = new LocalSum(TCP_OPENED, 'TCP connections opened', '', maxSeries);
    this.closed = new LocalSum(TCP_CLOSED, 'TCP connections closed, by response flags', '', maxSeries);
    this.sent = new LocalSum(
      TCP_SENT,
      'Bytes sent to the downstream (response direction) on TCP connections',
      'By',
      maxSeries,
    );
    this.received = new LocalSum(
      TCP_RECEIVED,
      'Bytes received from the downstream (request direction) on TCP connections',
      'By',
      maxSeries,
    );
  }

  connectionOpened(ev: TcpEvent): void {
    this.opened.add(tcpKey(ev), () => tcpLabels(ev), 1);
  }

  bytes(ev: TcpEvent, sent: number, received: number): void {
    const key = tcpKey(ev);
    if (sent > 0) this.sent.add(key, () => tcpLabels(ev), sent);
    if (received > 0) this.received.add(key, () => tcpLabels(ev), received);
  }

  connectionClosed(ev: TcpEvent, flags: string): void {
    const f = flags || '-';
    this.closed.add(`${tcpKey(ev)}\u0001${f}`, () => ({ ...tcpLabels(ev), response_flags: f }), 1);
  }

  async collect(): Promise<CollectionResult> {
    const end = hrTime();
    const metrics: SumMetricData[] = [];
    for (const sum of [this.opened, this.closed, this.sent, this.received]) {
      const data = sum.collect(end);
      if (data) metrics.push(data);
    }
    return {
      resourceMetrics: {
        resource: emptyResource(),
        scopeMetrics: [{ scope: { name: 'sockmesh-agent' }, metrics }],
      },
      errors: [],
    };
  }
}
