/**
 * Envoy's LoadReportingService client: the agent tells the control plane, for
 * the clusters it asks about, how many requests succeeded and failed since the
 * last report, and how many finished within each duration bound (as named load
 * metrics `sockmesh.request_duration_ms.le.<ms>`, LRS's extension point).
 * The agent's counters are cumulative; this client reports their deltas.
 */
import { type ChannelCredentials, type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../lib/log.js';
import { lrsClientConstructor, type ProtoObject } from '../protos.js';
import { FAST_METRIC_PREFIX } from '../server/canary.js';

/** Cumulative outcome of one cluster's requests (as the callers' side counted them). */
export interface ClusterLoad {
  cluster: string;
  successes: number;
  errors: number;
  /** Duration bound (ms) -> requests that took at most that long, cumulative. */
  fast: ReadonlyMap<number, number>;
}

export interface LrsClientOptions {
  target: string;
  node: { id: string; locality?: { zone?: string }; metadata?: Record<string, unknown> };
  credentials?: ChannelCredentials;
  /** The agent's cumulative counters, per cluster. */
  collect: () => Promise<readonly ClusterLoad[]>;
  logger?: Logger;
  backoff?: { initialMs?: number; maxMs?: number };
}

type Stream = ClientDuplexStream<ProtoObject, ProtoObject>;

export class LrsClient {
  private readonly log: Logger;
  private readonly client: InstanceType<ReturnType<typeof lrsClientConstructor>>;
  private stream: Stream | undefined;
  private closed = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private wanted = new Set<string>();
  private last = new Map<string, ClusterLoad>();
  private lastAt = 0;

  constructor(private readonly opts: LrsClientOptions) {
    this.log = opts.logger ?? createLogger('lrs-client');
    const Ctor = lrsClientConstructor();
    this.client = new Ctor(opts.target, opts.credentials ?? credentials.createInsecure(), {
      'grpc.keepalive_time_ms': 30_000,
    });
    this.retryMs = opts.backoff?.initialMs ?? 500;
  }

  start(): void {
    this.closed = false;
    this.open();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.reportTimer);
    this.stream?.cancel();
    this.stream = undefined;
    this.client.close();
  }

  private open(): void {
    if (this.closed) return;
    const stream = (this.client as unknown as { StreamLoadStats(): Stream }).StreamLoadStats();
    this.stream = stream;
    stream.on('data', (res: ProtoObject) => void this.configure(res));
    const lost = (why: string) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      clearInterval(this.reportTimer);
      if (this.closed) return;
      this.log.debug('load reporting stream lost; retrying', { reason: why, retryMs: this.retryMs });
      this.retryTimer = setTimeout(() => this.open(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, this.opts.backoff?.maxMs ?? 5000);
    };
    stream.on('error', (err: Error) => lost(err.message));
    stream.on('end', () => lost('ended'));
    stream.write({ node: this.opts.node });
  }

  /** A LoadStatsResponse: which clusters to report, how often. Reporting restarts from now. */
  private async configure(res: ProtoObject): Promise<void> {
    this.retryMs = this.opts.backoff?.initialMs ?? 500;
    this.wanted = new Set(((res.clusters as string[] | undefined) ?? []).map(String));
    const iv = res.load_reporting_interval as { seconds?: string | number; nanos?: number } | undefined;
    const ms = Math.max(200, Number(iv?.seconds ?? 1) * 1000 + Math.round(Number(iv?.nanos ?? 0) / 1e6));
    clearInterval(this.reportTimer);
    await this.baseline();
    this.log.info('load reporting', { clusters: [...this.wanted], intervalMs: ms });
    if (this.wanted.size === 0) return;
    this.reportTimer = setInterval(() => void this.report(), ms);
    this.reportTimer.unref();
  }

  private async baseline(): Promise<void> {
    this.last = new Map((await this.opts.collect()).map((c) => [c.cluster, c]));
    this.lastAt = Date.now();
  }

  private async report(): Promise<void> {
    const stream = this.stream;
    if (!stream) return;
    let loads: readonly ClusterLoad[];
    try {
      loads = await this.opts.collect();
    } catch (err) {
      this.log.warn('cannot collect load for LRS', { error: err });
      return;
    }
    const now = Date.now();
    const elapsed = now - this.lastAt;
    const stats: ProtoObject[] = [];
    for (const c of loads) {
      if (!this.wanted.has(c.cluster)) continue;
      const before = this.last.get(c.cluster);
      const ok = Math.max(0, c.successes - (before?.successes ?? 0));
      const bad = Math.max(0, c.errors - (before?.errors ?? 0));
      if (ok + bad === 0) continue;
      stats.push({
        cluster_name: c.cluster,
        upstream_locality_stats: [
          {
            locality: { zone: this.opts.node.locality?.zone ?? '' },
            total_successful_requests: ok,
            total_error_requests: bad,
            total_issued_requests: ok + bad,
            total_requests_in_progress: 0,
            load_metric_stats: [...c.fast].map(([le, n]) => ({
              metric_name: `${FAST_METRIC_PREFIX}${le}`,
              num_requests_finished_with_metric: Math.max(0, n - (before?.fast.get(le) ?? 0)),
              total_metric_value: 0,
            })),
          },
        ],
        load_report_interval: { seconds: Math.floor(elapsed / 1000), nanos: (elapsed % 1000) * 1e6 },
      });
    }
    this.last = new Map(loads.map((c) => [c.cluster, c]));
    this.lastAt = now;
    if (stats.length > 0 && this.stream === stream)
      stream.write({ node: this.opts.node, cluster_stats: stats });
  }
}
