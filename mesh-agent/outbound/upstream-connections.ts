/**
 * Upstream connections of the outbound proxy, counted against each cluster's
 * circuit breaker as Envoy's connection pools do: every open connection holds
 * one `max_connections` slot; a request that finds no free connection of its
 * pool and no slot waits as pending (`max_pending_requests`) until a
 * connection of its pool is free or a slot frees, within its time budget; a
 * request beyond the pending limit is refused at once (503 UO). Transport
 * agnostic: the caller opens and closes the connection objects (undici
 * Clients for HTTP/1.1) and reports when one is gone.
 */
import type { UpstreamCluster } from './plan.js';

/** What a pool of connections is for: Envoy keeps one pool per (cluster, host); a rotated SVID needs its own. */
export interface PoolOf {
  cluster: string;
  /** SPIFFE ID of the source workload the connections present. */
  source: string;
  /** Serial of the SVID they present. */
  serial: string;
  /** The endpoint's key (`ip:port`). */
  endpoint: string;
}

/** Ended on this side: the pending queue was full (UO) or the time ran out while waiting (UT). */
export interface LocalEnd {
  kind: 'local';
  flag: 'UO' | 'UT';
}

export interface Lease<C> {
  kind: 'lease';
  conn: C;
  /** The request is over: the connection serves the next one (or closes, if it was marked gone). */
  done(): void;
}

export interface Slot {
  kind: 'slot';
  release(): void;
}

export interface WaitOptions {
  /** How long the request may wait for a connection; undefined = until it gets one or is aborted. */
  budgetMs?: number | undefined;
  /**
   * Registers `leave` to run when the caller goes away (it stops waiting, answered as UT);
   * returns the unregistration. Asked only when the request has to wait, so that the
   * requests served at once pay nothing for it.
   */
  gone?: ((leave: () => void) => () => void) | undefined;
}

export interface UpstreamConnectionsOptions<C> {
  close(conn: C): void;
  /** Counted as Envoy counts them: cx_overflow when a connection was wanted at the limit, rq_pending_overflow when refused. */
  overflow(cluster: string, kind: 'connection' | 'pending'): void;
}

interface Entry<C> {
  conn: C;
  pool: Pool<C>;
  busy: boolean;
  /** The transport said the connection is gone (or it was pruned): it closes when its request is done. */
  gone: boolean;
  release: () => void;
}

interface Pool<C> {
  key: string;
  of: PoolOf;
  entries: Set<Entry<C>>;
  idle: Entry<C>[];
  /** Removed from the map by prune: its connections close once their requests are done. */
  retired: boolean;
}

interface Waiter<C> {
  cluster: UpstreamCluster;
  /** undefined: waits for a slot only (a TCP connection is not shared). */
  pool: Pool<C> | undefined;
  open: (() => C) | undefined;
  settle(r: Lease<C> | Slot | LocalEnd): void;
}

export class UpstreamConnections<C> {
  private readonly pools = new Map<string, Pool<C>>();
  private readonly byConn = new Map<C, Entry<C>>();
  private readonly waiting = new Map<string, Waiter<C>[]>();

  constructor(private readonly opts: UpstreamConnectionsOptions<C>) {}

  /**
   * A connection of the pool for one request: a free one, else a new one when
   * the cluster has a slot (or, as in Envoy, when the pool has none at all, so
   * an endpoint is never starved by the others), else pending.
   */
  lease(
    cluster: UpstreamCluster,
    of: PoolOf,
    open: () => C,
    wait: WaitOptions = {},
  ): Promise<Lease<C> | LocalEnd> | Lease<C> | LocalEnd {
    const pool = this.poolFor(of);
    const idle = pool.idle.pop();
    if (idle) return this.hand(idle);
    const slot = cluster.tryAcquire('connection');
    if (slot) return this.hand(this.add(pool, open(), this.freeing(cluster, slot)));
    this.opts.overflow(cluster.name, 'connection');
    if (pool.entries.size === 0) return this.hand(this.add(pool, open(), () => {}));
    return this.enqueue(cluster, pool, open, wait) as Promise<Lease<C> | LocalEnd> | LocalEnd;
  }

  /** A connection slot that is not pooled (one TCP stream): the same limits, waiting as pending at the limit. */
  slot(cluster: UpstreamCluster, wait: WaitOptions = {}): Promise<Slot | LocalEnd> | Slot | LocalEnd {
    const slot = cluster.tryAcquire('connection');
    if (slot) return { kind: 'slot', release: this.freeing(cluster, slot) };
    this.opts.overflow(cluster.name, 'connection');
    return this.enqueue(cluster, undefined, undefined, wait) as Promise<Slot | LocalEnd> | LocalEnd;
  }

  /** The transport lost the connection (closed, reset, failed to connect): its slot frees once it is not in use. */
  gone(conn: C): void {
    const e = this.byConn.get(conn);
    if (!e) return;
    e.gone = true;
    if (e.busy) return;
    const i = e.pool.idle.indexOf(e);
    if (i >= 0) e.pool.idle.splice(i, 1);
    this.retire(e);
  }

  /** Drops pools that `keep` refuses (endpoint left its cluster, SVID rotated): idle connections close now, busy ones when done. */
  prune(keep: (of: PoolOf) => boolean): number {
    let dropped = 0;
    for (const [key, pool] of this.pools) {
      if (keep(pool.of)) continue;
      this.pools.delete(key);
      pool.retired = true;
      dropped++;
      for (const e of pool.idle.splice(0)) this.retire(e);
      for (const e of pool.entries) e.gone = true;
    }
    return dropped;
  }

  close(): void {
    for (const w of [...this.waiting.values()].flat()) w.settle({ kind: 'local', flag: 'UO' });
    this.waiting.clear();
    for (const e of [...this.byConn.values()]) this.retire(e);
    this.pools.clear();
  }

  /** Pools, open connections and pending requests, for tests and the admin view. */
  stats(): { pools: number; connections: number; pending: number } {
    let pending = 0;
    for (const q of this.waiting.values()) pending += q.length;
    return { pools: this.pools.size, connections: this.byConn.size, pending };
  }

  private poolFor(of: PoolOf): Pool<C> {
    const key = `${of.cluster}|${of.source}|${of.serial}|${of.endpoint}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = { key, of, entries: new Set(), idle: [], retired: false };
      this.pools.set(key, pool);
    }
    return pool;
  }

  private add(pool: Pool<C>, conn: C, release: () => void): Entry<C> {
    const e: Entry<C> = { conn, pool, busy: false, gone: false, release };
    pool.entries.add(e);
    this.byConn.set(conn, e);
    return e;
  }

  private hand(e: Entry<C>): Lease<C> {
    e.busy = true;
    let done = false;
    return {
      kind: 'lease',
      conn: e.conn,
      done: () => {
        if (done) return;
        done = true;
        this.free(e);
      },
    };
  }

  /** A request on e is over: a request pending for this pool takes the connection, else it idles. */
  private free(e: Entry<C>): void {
    e.busy = false;
    if (e.gone && !this.byConn.has(e.conn)) return;
    if (!e.gone) {
      const q = this.waiting.get(e.pool.of.cluster);
      const i = q?.findIndex((w) => w.pool === e.pool) ?? -1;
      if (q && i >= 0) {
        const [w] = q.splice(i, 1);
        if (q.length === 0) this.waiting.delete(e.pool.of.cluster);
        w!.settle(this.hand(e));
        return;
      }
      if (!e.pool.retired) {
        e.pool.idle.push(e);
        return;
      }
    }
    this.retire(e);
  }

  private retire(e: Entry<C>): void {
    if (!this.byConn.delete(e.conn)) return;
    e.pool.entries.delete(e);
    if (e.pool.entries.size === 0 && !e.pool.retired && this.pools.get(e.pool.key) === e.pool) {
      // An empty pool goes: per-endpoint state stays bounded by the connections open.
      if (!this.hasWaiters(e.pool)) this.pools.delete(e.pool.key);
    }
    this.opts.close(e.conn);
    e.release();
    if (e.pool.entries.size === 0) this.rescue(e.pool);
  }

  /** As in lease: a pool left without any connection while requests wait for it gets one, even at the limit. */
  private rescue(pool: Pool<C>): void {
    const q = this.waiting.get(pool.of.cluster);
    const i = q?.findIndex((w) => w.pool === pool) ?? -1;
    if (!q || i < 0) return;
    const [w] = q.splice(i, 1);
    if (q.length === 0) this.waiting.delete(pool.of.cluster);
    this.opts.overflow(pool.of.cluster, 'connection');
    w!.settle(this.hand(this.add(pool, w!.open!(), () => {})));
  }

  private hasWaiters(pool: Pool<C>): boolean {
    return this.waiting.get(pool.of.cluster)?.some((w) => w.pool === pool) ?? false;
  }

  /** The breaker's release, plus: the first request pending in the cluster gets the slot. */
  private freeing(cluster: UpstreamCluster, release: () => void): () => void {
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      release();
      this.wake(cluster);
    };
  }

  private wake(cluster: UpstreamCluster): void {
    const q = this.waiting.get(cluster.name);
    if (!q || q.length === 0) return;
    const slot = cluster.tryAcquire('connection');
    if (!slot) return;
    const w = q.shift()!;
    if (q.length === 0) this.waiting.delete(cluster.name);
    const release = this.freeing(cluster, slot);
    if (!w.pool || !w.open) {
      w.settle({ kind: 'slot', release });
      return;
    }
    w.settle(this.hand(this.add(w.pool, w.open(), release)));
  }

  private enqueue(
    cluster: UpstreamCluster,
    pool: Pool<C> | undefined,
    open: (() => C) | undefined,
    wait: WaitOptions,
  ): Promise<Lease<C> | Slot | LocalEnd> | LocalEnd {
    const pending = cluster.tryAcquire('pending');
    if (!pending) {
      this.opts.overflow(cluster.name, 'pending');
      return { kind: 'local', flag: 'UO' };
    }
    if (wait.budgetMs !== undefined && wait.budgetMs <= 0) {
      pending();
      return { kind: 'local', flag: 'UT' };
    }
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let unwatch: (() => void) | undefined;
      const stop = () => {
        if (timer) clearTimeout(timer);
        unwatch?.();
        pending();
      };
      const w: Waiter<C> = {
        cluster,
        pool,
        open,
        settle: (r) => {
          stop();
          resolve(r);
        },
      };
      function expire() {
        w.settle({ kind: 'local', flag: 'UT' });
      }
      const leave = () => {
        const q = this.waiting.get(cluster.name);
        const i = q?.indexOf(w) ?? -1;
        if (q && i >= 0) q.splice(i, 1);
        if (q?.length === 0) this.waiting.delete(cluster.name);
        expire();
      };
      if (wait.budgetMs !== undefined) timer = setTimeout(leave, Math.max(1, Math.ceil(wait.budgetMs)));
      unwatch = wait.gone?.(leave);
      const q = this.waiting.get(cluster.name);
      if (q) q.push(w);
      else this.waiting.set(cluster.name, [w]);
    });
  }
}
