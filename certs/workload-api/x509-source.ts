/**
 * The latest X509SVIDResponse of a Workload API, kept current: every SVID the
 * caller is entitled to, their bundles and the federated bundles. The stream is
 * re-opened with backoff when it breaks (a restarted SPIRE agent), and the last
 * good SVIDs keep being served until each expires. Only an explicit
 * PERMISSION_DENIED (the server says this process has no identity) drops them.
 */
import * as grpc from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../lib/log.js';
import { backoffDelayMs } from '../rotator.js';
import type { SvidListener, SvidSource } from '../source.js';
import { isExpired, type TrustBundle, type X509Svid } from '../svid.js';
import type { WatchHandle, WorkloadApiClient, X509Context, X509ContextWatcher } from './client.js';

export interface X509SourceStatus {
  /** The stream is open and has delivered a response since it last broke. */
  connected: boolean;
  lastUpdate: Date | null;
  lastError: string | null;
  /** SPIFFE IDs of the SVIDs served now (unexpired). */
  spiffeIds: string[];
}

const MAX_TIMER_MS = 2 ** 31 - 1;

export class WorkloadApiX509Source {
  private latest: X509Context | null = null;
  private readonly listeners = new Set<() => void>();
  private watch: WatchHandle | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private stopped = false;
  private connected = false;
  private lastUpdate: Date | null = null;
  private lastError: string | null = null;
  private readonly log: Logger;
  private firstWaiters: Array<{ resolve: (c: X509Context) => void; reject: (e: Error) => void }> = [];

  constructor(
    private readonly client: X509ContextWatcher,
    private readonly opts: { logger?: Logger; backoff?: { initialMs?: number; maxMs?: number } } = {},
  ) {
    this.log = (opts.logger ?? createLogger('certs')).child({
      sub: 'workload-api-client',
      address: client.address,
    });
  }

  /** Opens the stream; resolves with the first response (it keeps retrying until then). */
  start(): Promise<X509Context> {
    if (!this.watch && !this.retryTimer && !this.stopped) this.connect();
    if (this.latest) return Promise.resolve(this.context());
    return new Promise((resolve, reject) => this.firstWaiters.push({ resolve, reject }));
  }

  /** The unexpired SVIDs of the last response (default first) and its federated bundles. */
  context(now = Date.now()): X509Context {
    return {
      svids: (this.latest?.svids ?? []).filter((s) => !isExpired(s, now)),
      federatedBundles: this.latest?.federatedBundles ?? [],
    };
  }

  /** The SVID for this SPIFFE ID, if the Workload API grants it and it has not expired. */
  svidFor(spiffeId: string): X509Svid | null {
    return this.context().svids.find((s) => s.spiffeId.uri === spiffeId) ?? null;
  }

  /** The response's default (first) SVID, or null once it expired. */
  defaultSvid(): X509Svid | null {
    const first = this.latest?.svids[0];
    return first && !isExpired(first) ? first : null;
  }

  /** The bundle for a trust domain: from the SVIDs (own trust domain) or the federated ones. */
  bundleFor(trustDomain: string): TrustBundle | null {
    const own = this.latest?.svids.find((s) => s.bundle.trustDomain === trustDomain)?.bundle;
    return own ?? this.latest?.federatedBundles.find((b) => b.trustDomain === trustDomain) ?? null;
  }

  federatedBundles(): TrustBundle[] {
    return this.latest?.federatedBundles ?? [];
  }

  /** Called after every response and whenever an SVID expires. Returns unsubscribe. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** One identity as an SvidSource: told when its SVID changes or goes away (null). */
  sourceFor(spiffeId: string): SvidSource {
    return {
      current: () => this.svidFor(spiffeId),
      subscribe: (listener: SvidListener) => this.subscribeTo(() => this.svidFor(spiffeId), listener),
    };
  }

  /** Tells the listener whenever what `get` returns changes (another serial, or none). */
  subscribeTo(get: () => X509Svid | null, listener: SvidListener): () => void {
    let last = get()?.serial ?? null;
    return this.subscribe(() => {
      const now = get();
      if ((now?.serial ?? null) === last) return;
      last = now?.serial ?? null;
      listener(now);
    });
  }

  status(): X509SourceStatus {
    return {
      connected: this.connected,
      lastUpdate: this.lastUpdate,
      lastError: this.lastError,
      spiffeIds: this.context().svids.map((s) => s.spiffeId.uri),
    };
  }

  stop(): void {
    this.stopped = true;
    this.watch?.cancel();
    this.watch = undefined;
    clearTimeout(this.retryTimer);
    clearTimeout(this.expiryTimer);
    this.listeners.clear();
    for (const w of this.firstWaiters) w.reject(new Error('Workload API source stopped'));
    this.firstWaiters = [];
  }

  private connect(): void {
    this.retryTimer = undefined;
    if (this.stopped) return;
    this.watch = this.client.watchX509Context(
      (ctx) => this.update(ctx),
      (err) => this.retry(err),
    );
  }

  private update(ctx: X509Context): void {
    if (this.stopped) return;
    this.attempt = 0;
    this.connected = true;
    this.lastError = null;
    this.lastUpdate = new Date();
    const expired = ctx.svids.filter((s) => isExpired(s));
    if (expired.length > 0) {
      this.log.warn('Workload API sent expired SVIDs; they are not served', {
        spiffeIds: expired.map((s) => s.spiffeId.uri),
      });
    }
    // Every response is complete: an identity missing from it has been taken away.
    this.latest = ctx;
    this.log.info('Workload API update', {
      svids: ctx.svids.map((s) => ({ spiffeId: s.spiffeId.uri, serial: s.serial })),
      federated: ctx.federatedBundles.map((b) => b.trustDomain),
    });
    this.armExpiry();
    for (const w of this.firstWaiters) w.resolve(this.context());
    this.firstWaiters = [];
    this.emit();
  }

  private retry(err: Error): void {
    if (this.stopped) return;
    this.watch?.cancel();
    this.watch = undefined;
    this.connected = false;
    this.lastError = err.message;
    const code = (err as Partial<grpc.ServiceError>).code;
    if (code === grpc.status.PERMISSION_DENIED && this.latest && this.latest.svids.length > 0) {
      // Not an outage: the server says this process has no identity any more.
      this.log.error('Workload API denies this process every identity; dropping its SVIDs', { err });
      this.latest = { svids: [], federatedBundles: this.latest.federatedBundles };
      this.emit();
    }
    const delay = backoffDelayMs(
      this.attempt++,
      this.opts.backoff?.initialMs ?? 250,
      this.opts.backoff?.maxMs ?? 30_000,
    );
    this.log.warn('Workload API stream failed; serving the last SVIDs and reconnecting', {
      err,
      retryInMs: delay,
      serving: this.context().svids.map((s) => s.spiffeId.uri),
    });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    if (this.firstWaiters.length === 0) this.retryTimer.unref();
  }

  /** Wakes subscribers when the next SVID expires, so nobody keeps presenting it. */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    const now = Date.now();
    const next = Math.min(
      ...(this.latest?.svids ?? []).map((s) => s.notAfter.getTime()).filter((t) => t > now),
    );
    if (!Number.isFinite(next)) return;
    this.expiryTimer = setTimeout(
      () => {
        const expired = (this.latest?.svids ?? []).filter((s) => isExpired(s));
        if (expired.length > 0) {
          this.log.error('SVIDs expired without a replacement from the Workload API', {
            spiffeIds: expired.map((s) => s.spiffeId.uri),
            lastError: this.lastError,
          });
        }
        this.armExpiry();
        this.emit();
      },
      Math.min(MAX_TIMER_MS, next - now + 1),
    );
    this.expiryTimer.unref();
  }

  private emit(): void {
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch (err) {
        this.log.error('Workload API listener threw', { err });
      }
    }
  }
}

/**
 * The default (first) SVID of a Workload API as an SvidSource: what a workload
 * that has one identity presents.
 */
export class WorkloadApiSvidSource implements SvidSource {
  private readonly x509: WorkloadApiX509Source;

  constructor(
    client: WorkloadApiClient,
    opts: { logger?: Logger; backoff?: { initialMs?: number; maxMs?: number } } = {},
  ) {
    this.x509 = new WorkloadApiX509Source(client, opts);
  }

  /** Opens the stream; resolves with the first default SVID. */
  async start(): Promise<X509Svid> {
    await this.x509.start();
    const svid = this.current();
    if (svid) return svid;
    return new Promise((resolve) => {
      const off = this.x509.subscribe(() => {
        const s = this.current();
        if (!s) return;
        off();
        resolve(s);
      });
    });
  }

  current(): X509Svid | null {
    return this.x509.defaultSvid();
  }

  federatedBundles(): TrustBundle[] {
    return this.x509.federatedBundles();
  }

  subscribe(listener: SvidListener): () => void {
    return this.x509.subscribeTo(() => this.current(), listener);
  }

  stop(): void {
    this.x509.stop();
  }
}
