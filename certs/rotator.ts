/**
 * Keeps one SVID fresh: renews it at half its lifetime, tells subscribers about
 * every new one, and on failure keeps serving the current SVID while it is still
 * valid, retrying with capped exponential backoff. An expired SVID is never served:
 * current() turns null and subscribers get null at the moment it expires.
 */
import { createLogger, type Logger } from '../lib/log.js';
import type { SvidListener, SvidSource } from './source.js';
import { isExpired, type X509Svid } from './svid.js';

export type { SvidListener } from './source.js';
export type SvidFetcher = () => Promise<X509Svid>;

export interface RotatorOptions {
  fetch: SvidFetcher;
  /** First retry delay after a failed renewal (default 250 ms), doubled up to maxMs (default 30 s). */
  backoff?: { initialMs?: number; maxMs?: number };
  logger?: Logger;
  /** Shown in logs, e.g. the SPIFFE ID being rotated. */
  name?: string;
}

/** When to renew: the midpoint of the validity window, never in the past. */
export function renewalDelayMs(svid: Pick<X509Svid, 'notBefore' | 'notAfter'>, now: number): number {
  const start = svid.notBefore.getTime();
  const end = svid.notAfter.getTime();
  return Math.max(0, start + (end - start) / 2 - now);
}

/** Exponential backoff with +/-20% jitter, capped. `attempt` counts from 0. */
export function backoffDelayMs(
  attempt: number,
  initialMs: number,
  maxMs: number,
  rand = Math.random,
): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.round(Math.min(maxMs, base * (0.8 + 0.4 * rand())));
}

/** setTimeout fires at once for delays above 2^31-1 ms; long waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class SvidRotator implements SvidSource {
  private svid: X509Svid | null = null;
  private readonly listeners = new Set<SvidListener>();
  private renewTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private stopped = false;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly log: Logger;
  private firstWaiters: Array<{ resolve: (s: X509Svid) => void; reject: (e: Error) => void }> = [];

  constructor(private readonly opts: RotatorOptions) {
    this.initialMs = opts.backoff?.initialMs ?? 250;
    this.maxMs = opts.backoff?.maxMs ?? 30_000;
    this.log = (opts.logger ?? createLogger('certs')).child({ rotator: opts.name ?? 'svid' });
  }

  /** Fetches the first SVID (retrying with backoff) and starts the renewal schedule. */
  start(): Promise<X509Svid> {
    const ready = new Promise<X509Svid>((resolve, reject) => this.firstWaiters.push({ resolve, reject }));
    if (this.svid === null && this.renewTimer === undefined) void this.renew();
    else if (this.svid) return Promise.resolve(this.svid);
    return ready;
  }

  /** The SVID to present now, or null if there is none that is still valid. */
  current(now: number = Date.now()): X509Svid | null {
    if (this.svid && !isExpired(this.svid, now)) return this.svid;
    return null;
  }

  /** Listens for rotations (not called for the SVID current at subscription time). Returns unsubscribe. */
  subscribe(listener: SvidListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Renews now, outside the schedule (e.g. after a CA change). */
  async rotateNow(): Promise<void> {
    clearTimeout(this.renewTimer);
    await this.renew();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.expiryTimer);
    this.listeners.clear();
    for (const w of this.firstWaiters) w.reject(new Error('rotator stopped before the first SVID arrived'));
    this.firstWaiters = [];
  }

  private async renew(): Promise<void> {
    if (this.stopped) return;
    let next: X509Svid;
    try {
      next = await this.opts.fetch();
      if (isExpired(next)) throw new Error(`fetched SVID already expired at ${next.notAfter.toISOString()}`);
    } catch (err) {
      if (this.stopped) return;
      const delay = backoffDelayMs(this.attempt++, this.initialMs, this.maxMs);
      this.log.warn('SVID renewal failed; keeping the current one and retrying', {
        err,
        retryInMs: delay,
        attempt: this.attempt,
        currentValidUntil: this.current()?.notAfter.toISOString() ?? null,
      });
      this.schedule(delay);
      return;
    }
    if (this.stopped) return;
    this.attempt = 0;
    this.svid = next;
    this.log.info('SVID rotated', {
      spiffeId: next.spiffeId.uri,
      serial: next.serial,
      notAfter: next.notAfter.toISOString(),
    });
    for (const w of this.firstWaiters) w.resolve(next);
    this.firstWaiters = [];
    this.armExpiry(next);
    this.schedule(renewalDelayMs(next, Date.now()));
    this.emit(next);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), Math.min(delayMs, MAX_TIMER_MS));
    // Someone awaiting start() needs the loop alive; afterwards the SVID's users keep it alive.
    if (this.firstWaiters.length === 0) this.renewTimer.unref();
  }

  private armExpiry(svid: X509Svid): void {
    clearTimeout(this.expiryTimer);
    const ms = Math.max(0, svid.notAfter.getTime() - Date.now());
    this.expiryTimer = setTimeout(
      () => {
        if (this.svid !== svid) return;
        if (!isExpired(svid)) return this.armExpiry(svid);
        this.log.error('SVID expired without a replacement; no identity is served until renewal succeeds', {
          spiffeId: svid.spiffeId.uri,
          serial: svid.serial,
        });
        this.emit(null);
      },
      Math.min(ms, MAX_TIMER_MS),
    );
    this.expiryTimer.unref();
  }

  private emit(svid: X509Svid | null): void {
    for (const l of [...this.listeners]) {
      try {
        l(svid);
      } catch (err) {
        this.log.error('SVID listener threw', { err });
      }
    }
  }
}

/** Issues SVIDs for one SPIFFE ID; ca/authority's CertificateAuthority is one. */
export interface SvidIssuer {
  issueSvid(spiffeId: string, opts: { ttlMs?: number }): Promise<X509Svid>;
}

/**
 * A rotator for one SPIFFE ID whose SVIDs `ca` issues; `onIssued` hears of each
 * (the agent and `identity serve` record them for `sockmesh identity ls`), and
 * failing to record never fails the renewal.
 */
export function caRotator(
  ca: SvidIssuer,
  spiffeId: string,
  opts: { ttlMs?: number; logger: Logger; onIssued?: (svid: X509Svid) => Promise<unknown> },
): SvidRotator {
  return new SvidRotator({
    name: spiffeId,
    logger: opts.logger,
    fetch: async () => {
      const svid = await ca.issueSvid(spiffeId, opts.ttlMs === undefined ? {} : { ttlMs: opts.ttlMs });
      await opts
        .onIssued?.(svid)
        .catch((err: Error) => opts.logger.warn('could not record issued SVID', { err }));
      return svid;
    },
  });
}
