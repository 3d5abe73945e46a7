/**
 * A reflector, as client-go's: list a resource (in pages), then watch from the
 * list's resourceVersion; relist when the server says that version is gone
 * (410); on any other failure re-watch from the last version seen, with
 * exponential backoff and jitter. A watchdog restarts a watch that went silent
 * (no event, no bookmark) for longer than the server was asked to keep it
 * open: a half-dead connection (a NAT dropping it, a stalled server) never
 * reports itself otherwise.
 *
 * Consumers are told of each upsert/delete, and of a relist as one
 * replacement of the whole store, so they never see half a list.
 */
import type { Logger } from '../../../lib/log.js';
import { KubeApiError, type KubeClient, type KubeList, type KubeObject } from './client.js';

export interface ResourceType {
  kind: string;
  apiVersion: string;
  /** Collection path across namespaces, e.g. `/api/v1/pods`. */
  path: string;
  namespaced: boolean;
}

export interface ReflectorOptions {
  pageSize?: number;
  /** The server ends each watch after this (client-go: 5-10 min, randomised so watches do not reconnect together). */
  watchTimeoutSeconds?: () => number;
  /** Silence on a watch longer than this restarts it; default the watch timeout + 30 s. */
  idleTimeoutMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
}

export interface ReflectorStats {
  lists: number;
  /** Relists because the watch's resourceVersion was too old (410 Gone). */
  gone: number;
  watches: number;
  /** Watches the watchdog ended because they went silent. */
  idleRestarts: number;
  errors: number;
  lastError: string | undefined;
}

export interface ReflectorHandler {
  /** After a (re)list: the whole store was replaced by `store`. */
  replaced(store: ReadonlyMap<string, KubeObject>): void;
  upserted(key: string, obj: KubeObject): void;
  deleted(key: string): void;
}

export function keyOf(obj: KubeObject): string {
  const m = obj.metadata ?? {};
  return m.namespace ? `${m.namespace}/${m.name}` : `${m.name}`;
}

export class Reflector {
  readonly store = new Map<string, KubeObject>();
  readonly stats: ReflectorStats = {
    lists: 0,
    gone: 0,
    watches: 0,
    idleRestarts: 0,
    errors: 0,
    lastError: undefined,
  };
  private resourceVersion: string | undefined;
  private stopped = false;
  private abort: AbortController | undefined;
  private sleeping: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  private running: Promise<void> | undefined;
  private lastLogged = '';

  constructor(
    private readonly client: KubeClient,
    readonly type: ResourceType,
    private readonly handler: ReflectorHandler,
    private readonly log: Logger,
    private readonly opts: ReflectorOptions = {},
  ) {}

  /** The first list; throws what went wrong (unreachable, 404 for a missing CRD, 403). */
  async list(): Promise<void> {
    const limit = this.opts.pageSize ?? 500;
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let rv: string | undefined;
    for (;;) {
      let page: KubeList;
      try {
        page = await this.client.json<KubeList>('GET', this.type.path, { query: { limit, continue: cont } });
      } catch (err) {
        // The continue token expired mid-list: start over with a fresh consistent list.
        if (cont !== undefined && isGone(err)) {
          items.length = 0;
          cont = undefined;
          continue;
        }
        throw err;
      }
      for (const it of page.items ?? [])
        items.push({ ...it, apiVersion: this.type.apiVersion, kind: this.type.kind });
      rv = page.metadata?.resourceVersion;
      cont = page.metadata?.continue || undefined;
      if (!cont) break;
    }
    this.store.clear();
    for (const it of items) this.store.set(keyOf(it), it);
    this.resourceVersion = rv;
    this.stats.lists++;
    this.handler.replaced(this.store);
  }

  /** Starts the watch loop (after a successful `list()`, or it lists first). */
  start(): void {
    this.running ??= this.loop();
  }

  private async loop(): Promise<void> {
    let backoff = this.opts.backoffInitialMs ?? 200;
    let needList = this.resourceVersion === undefined;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        const delivered = await this.watchOnce();
        if (delivered) backoff = this.opts.backoffInitialMs ?? 200;
        // A server that ends watches at once, empty, must not make this loop spin.
        else if (!this.stopped) await this.sleep(backoff * (0.5 + Math.random()));
        if (!this.stopped && this.lastLogged !== '') {
          this.log.info('watch restored', { resource: this.type.kind });
          this.lastLogged = '';
        }
      } catch (err) {
        if (this.stopped) break;
        if (isGone(err)) {
          this.stats.gone++;
          this.log.info('watch resourceVersion expired (410 Gone): relisting', {
            resource: this.type.kind,
            resourceVersion: this.resourceVersion,
          });
          needList = true;
          continue;
        }
        // A version the server does not have yet (storage restored older): relist.
        if (err instanceof KubeApiError && err.status === 504) needList = true;
        this.stats.errors++;
        const message = err instanceof Error ? err.message : String(err);
        this.stats.lastError = message;
        if (message !== this.lastLogged) {
          this.log.warn('watch failed; retrying with backoff', { resource: this.type.kind, error: message });
          this.lastLogged = message;
        }
        await this.sleep(backoff * (0.5 + Math.random()));
        backoff = Math.min(backoff * 2, this.opts.backoffMaxMs ?? 10_000);
      }
    }
  }

  /** One watch, until the server ends it, the watchdog does, or stop(). True when it delivered anything. */
  private async watchOnce(): Promise<boolean> {
    const abort = new AbortController();
    this.abort = abort;
    const timeoutSeconds = this.opts.watchTimeoutSeconds?.() ?? Math.round(300 + Math.random() * 300);
    const idleMs = this.opts.idleTimeoutMs ?? timeoutSeconds * 1000 + 30_000;
    let timer: NodeJS.Timeout | undefined;
    let idle = false;
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        idle = true;
        abort.abort();
      }, idleMs);
    };
    alive();
    this.stats.watches++;
    let delivered = false;
    try {
      const events = this.client.watch(
        this.type.path,
        { allowWatchBookmarks: true, resourceVersion: this.resourceVersion, timeoutSeconds },
        abort.signal,
        alive,
      );
      for await (const ev of events) {
        delivered = true;
        const obj = ev.object;
        if (ev.type === 'ERROR') {
          const s = obj as { code?: number; reason?: string; message?: string };
          throw new KubeApiError(
            s.code ?? 500,
            s.reason,
            `watch ${this.type.path}: ${s.message ?? 'error event'}`,
          );
        }
        const rv = obj.metadata?.resourceVersion;
        if (ev.type === 'BOOKMARK') {
          if (rv) this.resourceVersion = rv;
          continue;
        }
        const key = keyOf(obj);
        const full = { ...obj, apiVersion: this.type.apiVersion, kind: this.type.kind };
        if (ev.type === 'DELETED') {
          this.store.delete(key);
          if (rv) this.resourceVersion = rv;
          this.handler.deleted(key);
        } else {
          this.store.set(key, full);
          if (rv) this.resourceVersion = rv;
          this.handler.upserted(key, full);
        }
      }
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    } finally {
      clearTimeout(timer);
      this.abort = undefined;
    }
    if (idle && !this.stopped) {
      this.stats.idleRestarts++;
      this.log.warn('watch went silent; restarting it', { resource: this.type.kind, idleMs });
    }
    return delivered;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.sleeping = undefined;
        resolve();
      }, ms);
      this.sleeping = { timer, resolve };
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    if (this.sleeping) {
      clearTimeout(this.sleeping.timer);
      this.sleeping.resolve();
    }
    await this.running;
  }
}

export function isGone(err: unknown): boolean {
  return (
    err instanceof KubeApiError && (err.status === 410 || err.reason === 'Expired' || err.reason === 'Gone')
  );
}
