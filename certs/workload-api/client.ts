/**
 * A SPIFFE Workload API client for any conforming server (the embedded one or a
 * SPIRE agent). WorkloadApiSvidSource follows the FetchX509SVID stream, reconnects
 * with backoff, and serves the default (first) SVID as an SvidSource.
 */
import * as grpc from '@grpc/grpc-js';
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import { splitDerCertificates } from '../pem.js';
import { backoffDelayMs } from '../rotator.js';
import type { SvidListener, SvidSource } from '../source.js';
import { parseSpiffeId } from '../spiffe-id.js';
import { isExpired, svidFromDer, type TrustBundle, type X509Svid } from '../svid.js';
import { endpointTarget, resolveEndpoint } from './endpoint.js';
import {
  WORKLOAD_HEADER,
  workloadClientConstructor,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';

export interface X509Context {
  /** The first is the default identity. */
  svids: X509Svid[];
  federatedBundles: TrustBundle[];
}

function bundlesFromMap(map: Record<string, Buffer>): TrustBundle[] {
  return Object.entries(map).map(([td, der]) => ({
    trustDomain: parseSpiffeId(td).trustDomain,
    certs: splitDerCertificates(Buffer.from(der)),
  }));
}

/** Decodes one FetchX509SVID message; mandatory fields must be present (spec 4.5). */
export function decodeX509SvidResponse(msg: X509SvidResponse): X509Context {
  if (!msg.svids || msg.svids.length === 0) {
    throw new SockmeshError('SOCKMESH_E_SVID', 'Workload API response carries no SVID');
  }
  const svids = msg.svids.map((s) => {
    if (!s.spiffe_id || !s.x509_svid?.length || !s.x509_svid_key?.length || !s.bundle?.length) {
      throw new SockmeshError('SOCKMESH_E_SVID', 'Workload API X509SVID entry misses a mandatory field');
    }
    return svidFromDer({
      spiffeId: s.spiffe_id,
      chainDer: Buffer.from(s.x509_svid),
      keyPkcs8Der: Buffer.from(s.x509_svid_key),
      bundleDer: Buffer.from(s.bundle),
      ...(s.hint ? { hint: s.hint } : {}),
    });
  });
  return { svids, federatedBundles: bundlesFromMap(msg.federated_bundles ?? {}) };
}

export interface WatchHandle {
  cancel(): void;
}

export class WorkloadApiClient {
  readonly address: string;
  private readonly client: grpc.Client;

  constructor(opts: { address?: string } = {}) {
    this.address = resolveEndpoint(opts.address);
    const Ctor = workloadClientConstructor();
    this.client = new Ctor(endpointTarget(this.address), grpc.credentials.createInsecure());
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(WORKLOAD_HEADER, 'true');
    return md;
  }

  private openStream<T>(method: string): grpc.ClientReadableStream<T> {
    const fn = (
      this.client as unknown as Record<
        string,
        (req: object, md: grpc.Metadata) => grpc.ClientReadableStream<T>
      >
    )[method]!;
    return fn.call(this.client, {}, this.metadata());
  }

  /** Follows FetchX509SVID: every message is a complete update. */
  watchX509Context(onUpdate: (ctx: X509Context) => void, onError: (err: Error) => void): WatchHandle {
    const stream = this.openStream<X509SvidResponse>('FetchX509SVID');
    let cancelled = false;
    stream.on('data', (msg: X509SvidResponse) => {
      let ctx: X509Context;
      try {
        ctx = decodeX509SvidResponse(msg);
      } catch (err) {
        return onError(err as Error);
      }
      onUpdate(ctx);
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (!cancelled || err.code !== grpc.status.CANCELLED) onError(err);
    });
    stream.on('end', () => {
      if (!cancelled) onError(new SockmeshError('SOCKMESH_E_SVID', 'Workload API stream ended'));
    });
    return {
      cancel: () => {
        cancelled = true;
        stream.cancel();
      },
    };
  }

  /** The first FetchX509SVID message. */
  fetchX509Context(): Promise<X509Context> {
    return new Promise((resolve, reject) => {
      const h = this.watchX509Context(
        (ctx) => {
          h.cancel();
          resolve(ctx);
        },
        (err) => {
          h.cancel();
          reject(err);
        },
      );
    });
  }

  /** The first FetchX509Bundles message, as trust bundles. */
  fetchX509Bundles(): Promise<TrustBundle[]> {
    return new Promise((resolve, reject) => {
      const stream = this.openStream<X509BundlesResponse>('FetchX509Bundles');
      let settled = false;
      stream.on('data', (msg: X509BundlesResponse) => {
        if (settled) return;
        settled = true;
        stream.cancel();
        try {
          resolve(bundlesFromMap(msg.bundles ?? {}));
        } catch (err) {
          reject(err);
        }
      });
      stream.on('error', (err) => {
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
    });
  }

  close(): void {
    this.client.close();
  }
}

/**
 * The default SVID from a Workload API, kept current by its stream. A broken
 * stream is re-opened with backoff; the last SVID is served until it expires.
 */
export class WorkloadApiSvidSource implements SvidSource {
  private svid: X509Svid | null = null;
  private federated: TrustBundle[] = [];
  private readonly listeners = new Set<SvidListener>();
  private watch: WatchHandle | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private stopped = false;
  private readonly log: Logger;
  private firstWaiters: Array<{ resolve: (s: X509Svid) => void; reject: (e: Error) => void }> = [];

  constructor(
    private readonly client: WorkloadApiClient,
    private readonly opts: { logger?: Logger; backoff?: { initialMs?: number; maxMs?: number } } = {},
  ) {
    this.log = (opts.logger ?? createLogger('certs')).child({
      sub: 'workload-api-client',
      address: client.address,
    });
  }

  /** Opens the stream; resolves with the first SVID. */
  start(): Promise<X509Svid> {
    const first = new Promise<X509Svid>((resolve, reject) => this.firstWaiters.push({ resolve, reject }));
    if (!this.watch) this.connect();
    return this.svid ? Promise.resolve(this.svid) : first;
  }

  current(): X509Svid | null {
    return this.svid && !isExpired(this.svid) ? this.svid : null;
  }

  /** Bundles of foreign trust domains from the last update. */
  federatedBundles(): TrustBundle[] {
    return this.federated;
  }

  subscribe(listener: SvidListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stop(): void {
    this.stopped = true;
    this.watch?.cancel();
    clearTimeout(this.retryTimer);
    clearTimeout(this.expiryTimer);
    this.listeners.clear();
    for (const w of this.firstWaiters) w.reject(new Error('Workload API source stopped'));
    this.firstWaiters = [];
  }

  private connect(): void {
    if (this.stopped) return;
    this.watch = this.client.watchX509Context(
      (ctx) => this.update(ctx),
      (err) => this.retry(err),
    );
  }

  private update(ctx: X509Context): void {
    const next = ctx.svids[0]!;
    this.attempt = 0;
    this.federated = ctx.federatedBundles;
    if (isExpired(next)) {
      this.log.warn('Workload API sent an expired SVID; ignoring it', { serial: next.serial });
      return;
    }
    this.svid = next;
    clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(
      () => {
        if (this.svid === next) this.emit(null);
      },
      Math.min(2 ** 31 - 1, next.notAfter.getTime() - Date.now()),
    );
    this.expiryTimer.unref();
    for (const w of this.firstWaiters) w.resolve(next);
    this.firstWaiters = [];
    this.emit(next);
  }

  private retry(err: Error): void {
    if (this.stopped) return;
    this.watch?.cancel();
    this.watch = undefined;
    const delay = backoffDelayMs(
      this.attempt++,
      this.opts.backoff?.initialMs ?? 250,
      this.opts.backoff?.maxMs ?? 30_000,
    );
    this.log.warn('Workload API stream failed; reconnecting', { err, retryInMs: delay });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    if (this.firstWaiters.length === 0) this.retryTimer.unref();
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
