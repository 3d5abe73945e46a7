import { nodeOf } from '../balancer/candidates.js';
import { createLoadBalancer } from '../balancer/create.js';
import type { InFlight } from '../balancer/least-request.js';
import { InFlight as InFlightCounter } from '../balancer/least-request.js';
import type { Endpoint as LbEndpoint, LoadBalancer } from '../balancer/types.js';
import { type BreakerResource, CircuitBreaker } from '../breaker/circuit-breaker.js';
import type { BreakerKind, Endpoint, Outcome, UpstreamCluster } from '../outbound/plan.js';
import type { OutlierOutcome } from '../outlier/detector.js';
import type { ClusterSettings } from '../state/cluster.js';
import { type OutlierChannel, shareOf } from './outliers.js';

const RESOURCE: Record<BreakerKind, BreakerResource> = {
  connection: 'connections',
  pending: 'pending',
  request: 'requests',
  retry: 'retries',
};

/** How this process takes part in agent-wide state: outlier detection, and its share of breaker limits. */
export interface ClusterContext {
  outliers: OutlierChannel;
  /** This proxy process's index among `workers` (breaker limits are split between them). */
  worker: { index: number; count: number };
}

/** `outbound|9080||reviews-v1.shop.svc.cluster.local` -> `reviews-v1.shop`. */
export function serviceOfCluster(name: string): string {
  const fqdn = name.split('|')[3] ?? name;
  return fqdn.split('.').slice(0, 2).join('.');
}

/** The proxy's view of a balancer endpoint: where it is and who it must prove to be. */
export function planEndpoint(e: LbEndpoint, localNode: string): Endpoint {
  const node = nodeOf(e);
  return {
    key: e.key,
    ip: e.address,
    port: e.port,
    node: node ?? '',
    local: node === localNode,
    tunnelAddress: e.meta.tunnelAddress,
    spiffeId: e.meta.spiffeId,
    version: e.meta.version,
    workload: e.meta.pod,
    namespace: e.meta.namespace,
  };
}

function toOutlier(o: Outcome): OutlierOutcome {
  switch (o.kind) {
    case 'status':
      return { kind: 'http', status: o.status };
    case 'success':
      return { kind: 'connect-success' };
    default:
      return o;
  }
}

/**
 * One upstream cluster at run time: its endpoints behind the configured
 * balancer, its circuit breaker, outlier detector and in-flight counts. Breaker,
 * outlier and in-flight state survive config updates; so does the balancer
 * (round-robin position, ring) unless its endpoints or its settings changed.
 */
export class ClusterRuntime implements UpstreamCluster {
  readonly breaker: CircuitBreaker;
  private readonly inFlight: InFlight = new InFlightCounter();
  private lb!: LoadBalancer;
  /** What the balancer was built from: a config update that leaves it the same keeps the balancer. */
  private lbInput = '';
  private settings!: ClusterSettings;
  private endpoints: readonly LbEndpoint[] = [];
  private readonly byKey = new Map<string, Endpoint>();
  readonly service: string;

  constructor(
    readonly name: string,
    settings: ClusterSettings,
    endpoints: readonly LbEndpoint[],
    private readonly localNode: string,
    private readonly ctx: ClusterContext,
  ) {
    this.service = serviceOfCluster(name);
    this.breaker = new CircuitBreaker(this.thresholds(settings));
    this.update(settings, endpoints);
  }

  private thresholds(settings: ClusterSettings): ClusterSettings['breaker'] {
    const { index, count } = this.ctx.worker;
    const b = settings.breaker;
    return {
      maxConnections: shareOf(b.maxConnections, index, count),
      maxPendingRequests: shareOf(b.maxPendingRequests, index, count),
      maxRequests: shareOf(b.maxRequests, index, count),
      maxRetries: shareOf(b.maxRetries, index, count),
    };
  }

  get connectTimeoutMs(): number {
    return this.settings.connectTimeoutMs;
  }

  get version(): string | undefined {
    return this.endpoints[0]?.meta.version;
  }

  update(settings: ClusterSettings, endpoints: readonly LbEndpoint[]): void {
    this.settings = settings;
    this.endpoints = endpoints;
    this.breaker.setThresholds(this.thresholds(settings));
    const input = JSON.stringify([settings.balancer, endpoints]);
    if (input === this.lbInput) return;
    this.lbInput = input;
    // Read at pick time, so turning outlier detection on or off needs no new balancer.
    const ejections = {
      isEjected: (k: string) =>
        this.settings.outlier !== undefined && this.ctx.outliers.isEjected(this.name, k),
    };
    this.lb = createLoadBalancer(settings.balancer, endpoints, {
      localNode: this.localNode,
      ejections,
      inFlight: this.inFlight,
    });
    this.byKey.clear();
    for (const e of endpoints) this.byKey.set(e.key, planEndpoint(e, this.localNode));
  }

  /** The balancer in use (kept across updates that do not change it). */
  get balancer(): LoadBalancer {
    return this.lb;
  }

  /** Endpoint keys of the cluster now (what pools and per-endpoint state may keep). */
  endpointKeys(): ReadonlySet<string> {
    return new Set(this.byKey.keys());
  }

  /** The cluster left the config: agent-wide state about it goes too. */
  close(): void {
    this.ctx.outliers.forget?.(this.name);
  }

  pick(hashKey?: string): Endpoint | null {
    const e = this.lb.pick(hashKey === undefined ? undefined : { hashKey });
    return e ? (this.byKey.get(e.key) ?? null) : null;
  }

  tryAcquire(kind: BreakerKind): (() => void) | null {
    const got = this.breaker.tryAcquire(RESOURCE[kind]);
    return got.ok ? got.release : null;
  }

  report(ep: Endpoint, outcome: Outcome): void {
    if (this.settings.outlier) this.ctx.outliers.report(this.name, ep.key, toOutlier(outcome));
  }

  track(ep: Endpoint): () => void {
    return this.inFlight.start(ep.key);
  }
}
