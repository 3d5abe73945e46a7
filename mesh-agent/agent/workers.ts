import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { type SvidWire, svidToWire, type X509Svid } from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import type { XdsConfig } from '../../xds/client/ads-client.js';
import type { OutlierOutcome } from '../outlier/detector.js';
import type { MeshTelemetry } from '../telemetry/mesh-telemetry.js';
import type { MetricsSnapshot } from '../telemetry/snapshot.js';
import type { OutlierRegistry } from './outliers.js';
import type { ProxyPorts } from './proxy-runtime.js';

/** What a worker needs to serve: where to listen and where the kernel's original-destination map is pinned. */
export interface WorkerSettings {
  nodeName: string;
  proxyIp: string;
  tunnelIp: string;
  ports: ProxyPorts;
  trustTunnelSenders?: boolean;
  bpffsDir: string;
  /** Workers tag their connections for kernel TCP health. */
  tcpHealth?: boolean;
  /** Where workers export their spans (OTLP/HTTP), if anywhere. */
  otlpEndpoint?: string;
  /** Which of the workers this is: breaker limits are split by it. */
  index: number;
  count: number;
}

export type ToWorker =
  | { type: 'config'; config: XdsConfig }
  | { type: 'ejections'; cluster: string; endpoints: string[] }
  | { type: 'svids'; svids: SvidWire[] }
  | { type: 'snapshot'; id: number };

export type FromWorker =
  /** Sent once the worker listens for messages: anything sent before that would be lost. */
  | { type: 'hello' }
  | { type: 'ready' }
  | { type: 'outcome'; cluster: string; endpoint: string; outcome: OutlierOutcome }
  | { type: 'snapshot'; id: number; snapshot: MetricsSnapshot }
  | { type: 'config-error'; error: string };

export const WORKER_ENV = 'SOCKMESH_WORKER';

const WORKER_MAIN = fileURLToPath(
  new URL(`./worker-main.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url),
);

/**
 * N proxy worker processes sharing the capture and tunnel listeners (the
 * kernel spreads accepts across them). The primary feeds each one the current
 * config and SVIDs; a worker that dies is replaced and fed again, and its
 * counters stay in the merged metrics.
 */
export class ProxyWorkers {
  private config: XdsConfig | undefined;
  private svids: SvidWire[] | undefined;
  private readonly pending = new Map<number, (s: MetricsSnapshot) => void>();
  private nextId = 1;
  private stopping = false;
  readonly restarts: number[] = [];

  constructor(
    private readonly count: number,
    private readonly settings: Omit<WorkerSettings, 'index' | 'count'>,
    private readonly telemetry: MeshTelemetry,
    private readonly outliers: OutlierRegistry,
    private readonly log: Logger,
  ) {}

  private readonly indexOf = new Map<number, number>();
  private readonly ejections = new Map<string, string[]>();

  /** Tells every worker which endpoints of a cluster are ejected now. */
  setEjections(cluster: string, endpoints: string[]): void {
    this.ejections.set(cluster, endpoints);
    this.broadcast({ type: 'ejections', cluster, endpoints });
  }

  /** Forks the workers; resolves once each listens (it needs config and SVIDs first). */
  async start(): Promise<void> {
    // Each worker accepts on its own: no hop through the primary for every connection.
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({
      exec: WORKER_MAIN,
      execArgv: process.execArgv,
      serialization: 'advanced',
      silent: false,
    });
    cluster.on('exit', (worker, code, signal) => this.onExit(worker, code, signal));
    await Promise.all(Array.from({ length: this.count }, (_, i) => this.fork(i)));
  }

  get pids(): number[] {
    return Object.values(cluster.workers ?? {})
      .map((w) => w?.process.pid)
      .filter((p): p is number => p !== undefined);
  }

  setConfig(config: XdsConfig): void {
    this.config = config;
    this.broadcast({ type: 'config', config });
  }

  setSvids(svids: readonly X509Svid[]): void {
    this.svids = svids.map(svidToWire);
    this.broadcast({ type: 'svids', svids: this.svids });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      Object.values(cluster.workers ?? {}).map(
        (w) =>
          new Promise<void>((resolve) => {
            if (!w || w.isDead()) return resolve();
            w.once('exit', () => resolve());
            w.kill('SIGTERM');
          }),
      ),
    );
  }

  private fork(index: number): Promise<void> {
    const settings: WorkerSettings = { ...this.settings, index, count: this.count };
    const worker = cluster.fork({ [WORKER_ENV]: JSON.stringify(settings) });
    this.indexOf.set(worker.id, index);
    const id = `worker-${worker.id}`;
    this.telemetry.addWorker(id, () => this.snapshotOf(worker));
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'snapshot') {
        this.pending.get(m.id)?.(m.snapshot);
        this.pending.delete(m.id);
      } else if (m.type === 'outcome') {
        this.outliers.report(m.cluster, m.endpoint, m.outcome);
      } else if (m.type === 'config-error') {
        this.log.error('worker refused a config the primary accepted', { worker: id, error: m.error });
      }
    });
    worker.on('message', (m: FromWorker) => {
      if (m.type !== 'hello') return;
      if (this.config) worker.send({ type: 'config', config: this.config } satisfies ToWorker);
      if (this.svids) worker.send({ type: 'svids', svids: this.svids } satisfies ToWorker);
      for (const [c, endpoints] of this.ejections)
        worker.send({ type: 'ejections', cluster: c, endpoints } satisfies ToWorker);
    });
    return new Promise<void>((resolve) => {
      const onMsg = (m: FromWorker) => {
        if (m.type !== 'ready') return;
        worker.off('message', onMsg);
        this.log.info('proxy worker ready', { worker: id, pid: worker.process.pid });
        resolve();
      };
      worker.on('message', onMsg);
    });
  }

  private onExit(worker: Worker, code: number | null, signal: string | null): void {
    this.telemetry.removeWorker(`worker-${worker.id}`);
    if (this.stopping) return;
    this.log.error('proxy worker died; starting a new one', {
      worker: worker.id,
      pid: worker.process.pid,
      code,
      signal,
    });
    this.restarts.push(Date.now());
    void this.fork(this.indexOf.get(worker.id) ?? 0);
    this.indexOf.delete(worker.id);
  }

  private snapshotOf(worker: Worker): Promise<MetricsSnapshot> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (worker.isDead()) return reject(new Error('worker gone'));
      this.pending.set(id, resolve);
      worker.send({ type: 'snapshot', id } satisfies ToWorker);
      setTimeout(() => {
        if (this.pending.delete(id)) reject(new Error('worker did not answer'));
      }, 1000).unref();
    });
  }

  private broadcast(msg: ToWorker): void {
    for (const w of Object.values(cluster.workers ?? {})) if (w && !w.isDead()) w.send(msg);
  }
}
