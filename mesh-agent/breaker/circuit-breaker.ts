/**
 * Per-cluster resource counting, as Envoy's circuit breakers do it: each kind
 * of resource has a ceiling, and an acquire over the ceiling fails at once
 * (the proxy answers 503 with response flag UO) instead of queueing.
 */
import { type BreakerThresholds, DEFAULT_THRESHOLDS } from './thresholds.js';

export type BreakerResource = 'connections' | 'pending' | 'requests' | 'retries';

export const BREAKER_RESOURCES: readonly BreakerResource[] = [
  'connections',
  'pending',
  'requests',
  'retries',
];

export type Acquired =
  | { ok: true; release: () => void }
  | {
      ok: false;
      resource: BreakerResource;
      /** Envoy's overflow stat name for logs and metrics. */
      reason: 'cx_overflow' | 'rq_pending_overflow' | 'rq_overflow' | 'rq_retry_overflow';
      /** Envoy's access log response flag: upstream overflow. */
      responseFlag: 'UO';
    };

const REASON = {
  connections: 'cx_overflow',
  pending: 'rq_pending_overflow',
  requests: 'rq_overflow',
  retries: 'rq_retry_overflow',
} as const;

const LIMIT_OF: Record<BreakerResource, keyof BreakerThresholds> = {
  connections: 'maxConnections',
  pending: 'maxPendingRequests',
  requests: 'maxRequests',
  retries: 'maxRetries',
};

export class CircuitBreaker {
  private thresholds: BreakerThresholds;
  private readonly active: Record<BreakerResource, number> = {
    connections: 0,
    pending: 0,
    requests: 0,
    retries: 0,
  };
  private readonly overflows: Record<BreakerResource, number> = {
    connections: 0,
    pending: 0,
    requests: 0,
    retries: 0,
  };

  constructor(thresholds: Partial<BreakerThresholds> = {}) {
    this.thresholds = { ...DEFAULT_THRESHOLDS, ...thresholds };
  }

  /** New limits from a config update; resources already held stay counted. */
  setThresholds(thresholds: Partial<BreakerThresholds>): void {
    this.thresholds = { ...DEFAULT_THRESHOLDS, ...thresholds };
  }

  limit(resource: BreakerResource): number {
    return this.thresholds[LIMIT_OF[resource]];
  }

  inUse(resource: BreakerResource): number {
    return this.active[resource];
  }

  remaining(resource: BreakerResource): number {
    return Math.max(0, this.limit(resource) - this.active[resource]);
  }

  /** True when the next acquire of this resource would overflow (Envoy's cx_open / rq_open gauges). */
  isOpen(resource: BreakerResource): boolean {
    return this.active[resource] >= this.limit(resource);
  }

  overflowCount(resource: BreakerResource): number {
    return this.overflows[resource];
  }

  /** Takes one unit of `resource`; the release function is idempotent. */
  tryAcquire(resource: BreakerResource): Acquired {
    if (this.active[resource] >= this.limit(resource)) {
      this.overflows[resource]++;
      return { ok: false, resource, reason: REASON[resource], responseFlag: 'UO' };
    }
    this.active[resource]++;
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        this.active[resource]--;
      },
    };
  }
}
