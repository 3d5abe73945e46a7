/**
 * Everything observable about one agent process, behind one object: metrics
 * (OTel SDK, Prometheus pull on port 15020), health/readiness, the JSON access
 * log and tracing. The proxy calls the recording methods; the agent registers
 * the callbacks read at scrape time (xDS state, SVIDs, BPF counters).
 */
import { type DiagLogger, DiagLogLevel, diag, type SpanContext } from '@opentelemetry/api';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, InstrumentType, MeterProvider } from '@opentelemetry/sdk-metrics';
import { createLogger, type Logger } from '../../lib/log.js';
import { AccessLog, type AccessLogSink } from './access-log.js';
import { AdminServer, METRICS_PORT } from './admin-server.js';
import { toPrometheusText } from './exposition.js';
import { MeshMetrics } from './metrics.js';
import { DURATION_BUCKETS_MS, RequestMetrics } from './request-metrics.js';
import { fromSnapshot, type MetricsSnapshot, mergeSnapshots, toSnapshot } from './snapshot.js';
import { tcpHealthReport } from './tcp-health.js';
import { TcpMetrics } from './tcp-metrics.js';
import { type MeshSpanKind, MeshTracer, type SpanHandle } from './tracer.js';
import type {
  AuthzDenial,
  BpfCounters,
  BreakerKind,
  IdentityRejection,
  KernelPolicyCount,
  OutlierEventLike,
  RequestEvent,
  SvidInfo,
  TcpCloseEvent,
  TcpEvent,
  TcpHealthPair,
  XdsState,
} from './types.js';
import { type SnapshotSource, WorkerMetrics } from './workers.js';

export interface MeshTelemetryOptions {
  nodeName: string;
  /** Port for metrics and health. Default 15020; 0 picks a free port. */
  metricsPort?: number;
  /** Address to bind (the node's address). Default 127.0.0.1. */
  metricsHost?: string;
  /** Where JSON access log lines go; null or absent disables the access log. */
  accessLog?: AccessLog | AccessLogSink | null;
  /** OTLP/HTTP endpoint for spans; absent = propagate trace context only. */
  otlpEndpoint?: string;
  /** Fraction of new traces sampled when exporting. Default 1. */
  traceSampleRatio?: number;
  /** Span batch export delay in ms. Default 5000. */
  traceExportDelayMs?: number;
  /** Time one span export may take, retries included, in ms. Default 10000. */
  traceExportTimeoutMs?: number;
  /**
   * Bound on distinct label sets per request/TCP metric (default 20 000); the
   * excess is counted in one `otel_metric_overflow="true"` series.
   */
  maxSeries?: number;
  /** How long close() waits for span export and the access log before giving up (ms). Default 5000. */
  closeTimeoutMs?: number;
  /** sockmesh version, shown in target_info. */
  version?: string;
  logger?: Logger;
}

/**
 * Prometheus wants cumulative counters, but a cumulative gauge keeps every
 * label set it ever saw: an xDS version or SVID that is gone would be served
 * forever. Gauges are therefore collected as delta, which for a last-value
 * gauge means "only what the callback observed this time".
 */
class MeshPrometheusExporter extends PrometheusExporter {
  override selectAggregationTemporality(type: InstrumentType): AggregationTemporality {
    return type === InstrumentType.OBSERVABLE_GAUGE || type === InstrumentType.GAUGE
      ? AggregationTemporality.DELTA
      : AggregationTemporality.CUMULATIVE;
  }
}

let diagInstalled = false;

/** OTel reports its own failures (e.g. OTLP export errors) through the global diag logger. */
function installDiag(log: Logger): void {
  if (diagInstalled) return;
  diagInstalled = true;
  const sink: DiagLogger = {
    error: (msg, ...args) => log.error(msg, args.length ? { args } : undefined),
    warn: (msg, ...args) => log.warn(msg, args.length ? { args } : undefined),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  };
  diag.setLogger(sink, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
}

export class MeshTelemetry {
  readonly nodeName: string;
  readonly metrics: MeshMetrics;
  readonly tracer: MeshTracer;
  readonly accessLog: AccessLog | null;

  private readonly log: Logger;
  private readonly exporter: MeshPrometheusExporter;
  private readonly workers = new WorkerMetrics();
  private readonly meterProvider: MeterProvider;
  private readonly server: AdminServer;
  private readonly port: number;
  private readonly host: string;
  private ready = { ready: false, reason: 'starting' };
  private configDumpSource: (() => unknown) | null = null;
  private readonly views = new Map<string, (query: URLSearchParams) => unknown>();
  private tcpHealthSource: (() => readonly TcpHealthPair[]) | null = null;
  private boundPort: number | null = null;
  private closed = false;
  private readonly closeTimeoutMs: number;

  constructor(opts: MeshTelemetryOptions) {
    this.nodeName = opts.nodeName;
    this.log = opts.logger ?? createLogger('telemetry');
    installDiag(this.log.child({ from: 'otel' }));
    this.port = opts.metricsPort ?? METRICS_PORT;
    this.host = opts.metricsHost ?? '127.0.0.1';
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 5000;

    const resource = resourceFromAttributes({
      'service.name': 'sockmesh-agent',
      'service.version': opts.version ?? '0.0.0',
      'k8s.node.name': opts.nodeName,
    });
    const requests = new RequestMetrics(DURATION_BUCKETS_MS, opts.maxSeries);
    const tcp = new TcpMetrics(opts.maxSeries);
    this.exporter = new MeshPrometheusExporter({
      preventServerStart: true,
      withoutScopeInfo: true,
      metricProducers: [requests, tcp],
    });
    this.meterProvider = new MeterProvider({ resource, readers: [this.exporter] });
    this.metrics = new MeshMetrics(this.meterProvider.getMeter('sockmesh-agent'), requests, tcp);
    this.tracer = new MeshTracer({
      ...(opts.otlpEndpoint ? { otlpEndpoint: opts.otlpEndpoint } : {}),
      ...(opts.traceSampleRatio === undefined ? {} : { sampleRatio: opts.traceSampleRatio }),
      ...(opts.traceExportDelayMs === undefined ? {} : { exportDelayMs: opts.traceExportDelayMs }),
      ...(opts.traceExportTimeoutMs === undefined ? {} : { exportTimeoutMs: opts.traceExportTimeoutMs }),
      resource,
    });

    const al = opts.accessLog ?? null;
    this.accessLog = al === null || al instanceof AccessLog ? al : new AccessLog(al, { node: opts.nodeName });
    const accessLog = this.accessLog;
    if (accessLog) this.metrics.observeAccessLogDrops(() => accessLog.droppedLines);

    this.server = new AdminServer(
      {
        metrics: () => this.render(),
        readiness: () => this.ready,
        configDump: () => this.configDumpSource?.() ?? {},
        view: (path) => this.views.get(path),
        tcpHealth: () => tcpHealthReport(this.tcpHealthSource),
      },
      this.log,
    );
  }

  /** Starts serving /metrics, /healthz, /ready and /stats/config. */
  async start(listenFd?: number): Promise<{ host: string; port: number }> {
    const addr = await this.server.listen(this.port, this.host, listenFd);
    this.boundPort = addr.port;
    this.log.info('telemetry listening', {
      address: `${addr.address}:${addr.port}`,
      accessLog: this.accessLog !== null,
      otlp: this.tracer.exportUrl,
    });
    return { host: addr.address, port: addr.port };
  }

  /** Bound port once started (useful with port 0). */
  get listenPort(): number | null {
    return this.boundPort;
  }

  /** Readiness as served on /ready (503 until the agent says it is ready). */
  setReady(ready: boolean, reason = ready ? 'ok' : 'not ready'): void {
    this.ready = { ready, reason };
  }

  /** JSON served on /stats/config (e.g. xDS versions and resource names). */
  setConfigDump(source: (() => unknown) | null): void {
    this.configDumpSource = source;
  }

  /** A read-only JSON view on the admin port at `path` (query string in, JSON out; SOCKMESH_E_USAGE -> 400). */
  setView(path: string, view: ((query: URLSearchParams) => unknown) | null): void {
    if (view) this.views.set(path, view);
    else this.views.delete(path);
  }

  // ---- hot path ----

  /** One finished HTTP request (or L4 connection summarised as one). */
  requestCompleted(ev: RequestEvent): void {
    this.metrics.requestCompleted(ev);
    this.accessLog?.request(ev);
  }

  tcpOpened(ev: TcpEvent): void {
    this.metrics.tcpOpened(ev);
  }

  tcpBytes(ev: TcpEvent, bytesSent: number, bytesReceived: number): void {
    this.metrics.tcpBytes(ev, bytesSent, bytesReceived);
  }

  tcpClosed(ev: TcpCloseEvent): void {
    this.metrics.tcpClosed(ev);
    this.accessLog?.connection(ev);
  }

  breakerOverflow(cluster: string, kind: BreakerKind): void {
    this.metrics.breakerOverflow(cluster, kind);
  }

  outlierEjection(cluster: string, endpoint: string, type?: string): void {
    this.metrics.outlierEjection(cluster, endpoint, type);
    this.log.info('outlier ejected', { cluster, endpoint, type });
  }

  outlierRestored(cluster: string, endpoint: string): void {
    this.metrics.outlierRestored(cluster, endpoint);
    this.log.info('outlier restored', { cluster, endpoint });
  }

  /** Takes the outlier detector's events as they are (ejected, not-ejected, restored). */
  outlierEvent(cluster: string, ev: OutlierEventLike): void {
    switch (ev.kind) {
      case 'ejected':
        this.outlierEjection(cluster, ev.endpoint, ev.type);
        return;
      case 'restored':
        this.outlierRestored(cluster, ev.endpoint);
        return;
      case 'not-ejected':
        this.metrics.outlierSkipped(cluster, ev.type, ev.reason);
        this.log.info('outlier not ejected', {
          cluster,
          endpoint: ev.endpoint,
          type: ev.type,
          reason: ev.reason,
        });
        return;
    }
  }

  authzDenied(d: AuthzDenial): void {
    this.metrics.authzDenied(d);
  }

  identityRejected(r: IdentityRejection): void {
    this.metrics.identityRejected(r);
  }

  /** Starts a span for a proxy hop; see {@link MeshTracer.startSpan}. */
  startSpan(
    name: string,
    parent: string | readonly string[] | SpanContext | null | undefined,
    attributes?: Record<string, string | number | boolean>,
    kind?: MeshSpanKind,
  ): SpanHandle {
    return this.tracer.startSpan(name, parent, attributes, kind);
  }

  // ---- workers ----

  /**
   * This process's metrics as plain data, for a worker to hand to the primary
   * (postMessage or IPC). A worker never calls start().
   */
  async snapshot(): Promise<MetricsSnapshot> {
    return toSnapshot((await this.exporter.collect()).resourceMetrics);
  }

  /** This process merged with its workers (what /metrics shows), as plain data. */
  async mergedSnapshot(): Promise<MetricsSnapshot> {
    const own = toSnapshot((await this.exporter.collect()).resourceMetrics);
    return this.workers.active ? mergeSnapshots([own, ...(await this.workers.collect())]) : own;
  }

  /**
   * Primary: adds a worker whose snapshot is pulled at every scrape and merged
   * into /metrics. A slow (over 1 s) or failing worker contributes its last
   * snapshot. Re-adding an id retires the previous one.
   */
  addWorker(id: string, fetch: SnapshotSource): void {
    this.workers.add(id, fetch);
  }

  /** Primary: the worker exited. Its counters stay in the totals; its gauges go. */
  removeWorker(id: string): void {
    this.workers.remove(id);
  }

  /** The /metrics body: this process, merged with its workers when it has any. */
  private async render(): Promise<string> {
    const { resourceMetrics } = await this.exporter.collect();
    if (!this.workers.active) return toPrometheusText(resourceMetrics);
    const merged = mergeSnapshots([toSnapshot(resourceMetrics), ...(await this.workers.collect())]);
    return toPrometheusText({
      resource: resourceMetrics.resource,
      scopeMetrics: [{ scope: { name: 'sockmesh-agent' }, metrics: fromSnapshot(merged) }],
    });
  }

  // ---- scrape-time sources ----

  observeXds(source: (() => XdsState) | null): void {
    this.metrics.observeXds(source);
  }

  observeSvids(source: (() => readonly SvidInfo[]) | null): void {
    this.metrics.observeSvids(source);
  }

  observeBpfCounters(source: (() => BpfCounters) | null): void {
    this.metrics.observeBpfCounters(source);
  }

  /** Kernel TCP health per workload pair: metrics at scrape time and JSON on /stats/tcp. */
  observeTcpHealth(source: (() => readonly TcpHealthPair[]) | null): void {
    this.tcpHealthSource = source;
    this.metrics.observeTcpHealth(source);
  }

  observeKernelPolicy(source: (() => readonly KernelPolicyCount[]) | null): void {
    this.metrics.observeKernelPolicy(source);
  }

  /** Exports pending spans and hands pending access log lines to the sink. */
  async flush(): Promise<void> {
    this.accessLog?.flush();
    await this.tracer.flush();
  }

  /** Stops serving, flushes spans and the access log. Idempotent. */
  /** Stops answering on the admin port (an agent that handed it over); metrics keep counting. */
  async stopServing(): Promise<void> {
    await this.server.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = { ready: false, reason: 'shutting down' };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`gave up after ${this.closeTimeoutMs} ms`)),
        this.closeTimeoutMs,
      );
    });
    const bounded = (p: Promise<unknown> | undefined) => Promise.race([p, timeout]);
    const results = await Promise.allSettled([
      bounded(this.server.close()),
      bounded(this.tracer.shutdown()),
      bounded(this.accessLog?.close()),
      bounded(this.meterProvider.shutdown()),
    ]);
    clearTimeout(timer);
    for (const r of results) if (r.status === 'rejected') this.log.warn('telemetry close', { err: r.reason });
  }
}
