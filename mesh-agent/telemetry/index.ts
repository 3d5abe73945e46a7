/** The agent's observability: metrics + health on 15020, access log, trace context and spans. */
export {
  AccessLog,
  type AccessLogOptions,
  type AccessLogRecord,
  type AccessLogSink,
  connectionRecord,
  requestRecord,
} from './access-log.js';
export { METRICS_PORT } from './admin-server.js';
export { BAGGAGE, BAGGAGE_KEYS, decodeBaggage, encodeBaggage, type PeerMetadata } from './baggage.js';
export { toPrometheusText } from './exposition.js';
export { MeshTelemetry, type MeshTelemetryOptions } from './mesh-telemetry.js';
export { METRIC, MeshMetrics } from './metrics.js';
export { DEFAULT_MAX_SERIES, DURATION_BUCKETS_MS, RequestMetrics, requestLabels } from './request-metrics.js';
export {
  fromSnapshot,
  type MetricsSnapshot,
  mergeSnapshots,
  type SnapshotHistogram,
  type SnapshotLabels,
  type SnapshotMetric,
  toSnapshot,
} from './snapshot.js';
export { TCP_CLOSED, TCP_OPENED, TCP_RECEIVED, TCP_SENT, TcpMetrics, tcpLabels } from './tcp-metrics.js';
export {
  childSpanContext,
  extractTraceContext,
  formatTraceparent,
  type HeaderCarrier,
  injectTraceContext,
  parseTraceparent,
  parseTracestate,
  type SpanContext,
  TRACEPARENT,
  TRACESTATE,
  TraceState,
} from './trace-context.js';
export {
  type MeshSpanKind,
  MeshTracer,
  type MeshTracerOptions,
  otlpTracesUrl,
  type SpanHandle,
  type SpanStatus,
} from './tracer.js';
export * from './types.js';
export { type SnapshotSource, WorkerMetrics } from './workers.js';
