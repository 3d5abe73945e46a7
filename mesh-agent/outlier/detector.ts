/**
 * Passive health checking for one cluster (Envoy's consecutive_5xx and
 * consecutive_gateway_failure detectors). Time comes from an injected clock;
 * the agent calls `sweep()` every `intervalMs` to restore endpoints whose
 * ejection time is over, exactly as Envoy's interval timer does.
 */
import type { EjectionView } from '../balancer/types.js';
import { DEFAULT_OUTLIER, type OutlierConfig } from './config.js';

/** How a request or connection to an endpoint ended. */
export type OutlierOutcome =
  | { kind: 'http'; status: number }
  | { kind: 'connect-failure' }
  | { kind: 'timeout' }
  | { kind: 'reset' }
  /** A TCP connection was established and that is all the proxy will learn (L4). */
  | { kind: 'connect-success' };

export type EjectionType = 'consecutive_5xx' | 'consecutive_gateway_failure';

export type OutlierEvent =
  | { kind: 'ejected'; endpoint: string; type: EjectionType; ejections: number; durationMs: number }
  /** Detected, but not ejected: max_ejection_percent reached or enforcement skipped it. */
  | {
      kind: 'not-ejected';
      endpoint: string;
      type: EjectionType;
      reason: 'max-ejection-percent' | 'not-enforced';
    }
  | { kind: 'restored'; endpoint: string };

interface HostState {
  consecutive5xx: number;
  consecutiveGateway: number;
  ejectedAt: number | undefined;
  /** Envoy's ejection time multiplier: +1 per ejection, -1 per healthy interval. */
  backoff: number;
  /** Total ejections, for stats. */
  ejections: number;
}

/** Without split_external_local_origin_errors, Envoy folds local failures into HTTP codes. */
function statusOf(outcome: OutlierOutcome): number {
  switch (outcome.kind) {
    case 'http':
      return outcome.status;
    case 'connect-failure':
    case 'reset':
      return 503;
    case 'timeout':
      return 504;
    case 'connect-success':
      return 200;
  }
}

export class OutlierDetector implements EjectionView {
  private config: OutlierConfig;
  private readonly hosts = new Map<string, HostState>();
  private ejected = 0;

  constructor(
    config: Partial<OutlierConfig>,
    private readonly now: () => number,
    private readonly rand: () => number = Math.random,
  ) {
    this.config = { ...DEFAULT_OUTLIER, ...config };
  }

  get intervalMs(): number {
    return this.config.intervalMs;
  }

  get ejectedCount(): number {
    return this.ejected;
  }

  setConfig(config: Partial<OutlierConfig>): void {
    this.config = { ...DEFAULT_OUTLIER, ...config };
  }

  /** Sync the endpoint set; state of endpoints that stay is kept, removed ones are forgotten. */
  setHosts(keys: Iterable<string>): void {
    const next = new Set(keys);
    for (const [key, h] of this.hosts) {
      if (next.has(key)) continue;
      if (h.ejectedAt !== undefined) this.ejected--;
      this.hosts.delete(key);
    }
    for (const key of next) {
      if (!this.hosts.has(key)) {
        this.hosts.set(key, {
          consecutive5xx: 0,
          consecutiveGateway: 0,
          ejectedAt: undefined,
          backoff: 0,
          ejections: 0,
        });
      }
    }
  }

  isEjected(key: string): boolean {
    return this.hosts.get(key)?.ejectedAt !== undefined;
  }

  /** Times this endpoint was ejected since it joined. */
  ejectionsOf(key: string): number {
    return this.hosts.get(key)?.ejections ?? 0;
  }

  /** Records one outcome; returns what it caused, if anything. Unknown endpoints are ignored. */
  report(key: string, outcome: OutlierOutcome): OutlierEvent | undefined {
    const h = this.hosts.get(key);
    if (!h || h.ejectedAt !== undefined) return undefined;
    const status = statusOf(outcome);
    if (status < 500 || status > 599) {
      h.consecutive5xx = 0;
      h.consecutiveGateway = 0;
      return undefined;
    }
    let event: OutlierEvent | undefined;
    if (status === 502 || status === 503 || status === 504) {
      if (++h.consecutiveGateway === this.config.consecutiveGatewayFailure) {
        h.consecutiveGateway = 0;
        event = this.tryEject(key, h, 'consecutive_gateway_failure');
      }
    } else {
      h.consecutiveGateway = 0;
    }
    if (h.ejectedAt === undefined && ++h.consecutive5xx === this.config.consecutive5xx) {
      h.consecutive5xx = 0;
      const e = this.tryEject(key, h, 'consecutive_5xx');
      if (!event || e.kind === 'ejected') event = e;
    }
    return event;
  }

  private tryEject(key: string, h: HostState, type: EjectionType): OutlierEvent {
    const enforcing =
      type === 'consecutive_5xx'
        ? this.config.enforcingConsecutive5xx
        : this.config.enforcingConsecutiveGatewayFailure;
    if (!(this.rand() * 100 < enforcing))
      return { kind: 'not-ejected', endpoint: key, type, reason: 'not-enforced' };
    // Envoy: never beyond max_ejection_percent, but one host may always be ejected.
    const percentAfter = (100 * (this.ejected + 1)) / this.hosts.size;
    if (percentAfter > this.config.maxEjectionPercent && this.ejected > 0) {
      return { kind: 'not-ejected', endpoint: key, type, reason: 'max-ejection-percent' };
    }
    const { baseEjectionTimeMs: base, maxEjectionTimeMs: max } = this.config;
    if (base * h.backoff < max) h.backoff++;
    h.ejectedAt = this.now();
    h.ejections++;
    this.ejected++;
    return {
      kind: 'ejected',
      endpoint: key,
      type,
      ejections: h.ejections,
      durationMs: this.ejectionDurationMs(h),
    };
  }

  private ejectionDurationMs(h: HostState): number {
    const { baseEjectionTimeMs: base, maxEjectionTimeMs: max } = this.config;
    return Math.min(base * h.backoff, Math.max(base, max));
  }

  /** The interval check: restore endpoints whose time is up, relax the multiplier of healthy ones. */
  sweep(): OutlierEvent[] {
    const now = this.now();
    const events: OutlierEvent[] = [];
    for (const [key, h] of this.hosts) {
      if (h.ejectedAt === undefined) {
        if (h.backoff > 0) h.backoff--;
        continue;
      }
      if (now - h.ejectedAt >= this.ejectionDurationMs(h)) {
        h.ejectedAt = undefined;
        h.consecutive5xx = 0;
        h.consecutiveGateway = 0;
        this.ejected--;
        events.push({ kind: 'restored', endpoint: key });
      }
    }
    return events;
  }
}
