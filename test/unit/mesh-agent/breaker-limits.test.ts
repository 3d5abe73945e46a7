/**
 * Every circuit-breaker limit against the real ClusterRuntime (its CircuitBreaker
 * and per-worker shares): max_connections and max_pending_requests as the
 * upstream connection pools apply them, max_retries as the attempt loop does.
 * max_requests, and the same limits over real sockets, are in
 * test/integration/mesh-agent/outbound-breaker.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { type ClusterContext, ClusterRuntime } from '../../../mesh-agent/agent/clusters.js';
import type { Endpoint as LbEndpoint } from '../../../mesh-agent/balancer/types.js';
import { type BreakerThresholds, DEFAULT_THRESHOLDS } from '../../../mesh-agent/breaker/thresholds.js';
import { runAttempts } from '../../../mesh-agent/outbound/attempts.js';
import type { Outcome } from '../../../mesh-agent/outbound/plan.js';
import {
  type Lease,
  type LocalEnd,
  type PoolOf,
  type Slot,
  UpstreamConnections,
} from '../../../mesh-agent/outbound/upstream-connections.js';
import type { ClusterSettings } from '../../../mesh-agent/state/cluster.js';

const eps = (...ports: number[]): LbEndpoint[] =>
  ports.map((port) => ({
    key: `10.1.1.1:${port}`,
    address: '10.1.1.1',
    port,
    locality: { zone: 'node-1' },
    healthy: true,
    weight: 1,
    meta: { node: 'node-1' },
  }));

function cluster(limits: Partial<BreakerThresholds>, worker = { index: 0, count: 1 }): ClusterRuntime {
  const ctx: ClusterContext = { outliers: { report: () => {}, isEjected: () => false }, worker };
  const settings: ClusterSettings = {
    name: 'outbound|9080||reviews.shop.svc.cluster.local',
    discovery: 'EDS',
    edsServiceName: 'reviews',
    balancer: { policy: 'ROUND_ROBIN' },
    connectTimeoutMs: 1000,
    breaker: { ...DEFAULT_THRESHOLDS, ...limits },
    outlier: undefined,
    inlineEndpoints: undefined,
    meta: {},
  };
  return new ClusterRuntime(settings.name, settings, eps(1, 2), 'node-1', ctx);
}

/** Connections are plain objects here: what the pool logic needs of them is identity. */
interface Conn {
  id: number;
  closed: boolean;
}

function setup(rt: ClusterRuntime) {
  let n = 0;
  const overflows: string[] = [];
  const conns = new UpstreamConnections<Conn>({
    close: (c) => {
      c.closed = true;
    },
    overflow: (_cluster, kind) => overflows.push(kind),
  });
  const open = () => ({ id: ++n, closed: false });
  const of = (endpoint: string, serial = 's1'): PoolOf => ({
    cluster: rt.name,
    source: 'spiffe://t/ns/a/sa/a',
    serial,
    endpoint,
  });
  const lease = (endpoint = '10.1.1.1:1', budgetMs?: number, caller?: EventEmitter) =>
    Promise.resolve(
      conns.lease(rt, of(endpoint), open, {
        budgetMs,
        gone: caller
          ? (leave) => {
              caller.once('close', leave);
              return () => caller.off('close', leave);
            }
          : undefined,
      }),
    );
  return { conns, overflows, lease, of, open, opened: () => n };
}

function leased(r: Lease<Conn> | LocalEnd): Lease<Conn> {
  assert.equal(r.kind, 'lease', `expected a connection, got ${JSON.stringify(r)}`);
  return r as Lease<Conn>;
}

/** Whether a promise has settled by the time already-queued callbacks ran. */
async function settled<T>(p: Promise<T>): Promise<boolean> {
  const marker = Symbol('pending');
  const v = await Promise.race([p, new Promise((r) => setImmediate(() => r(marker)))]);
  return v !== marker;
}

describe('breaker: max_connections bounds the upstream connections of a cluster (HTTP)', () => {
  it('two connections at most: the third concurrent request waits for one of them', async () => {
    const rt = cluster({ maxConnections: 2 });
    const t = setup(rt);
    const a = leased(await t.lease());
    const b = leased(await t.lease());
    assert.notEqual(a.conn, b.conn);
    const third = t.lease();
    assert.equal(await settled(third), false, 'pending while both connections are busy');
    assert.equal(t.opened(), 2);
    assert.equal(rt.breaker.inUse('connections'), 2);
    assert.equal(rt.breaker.inUse('pending'), 1);
    assert.deepEqual(t.overflows, ['connection'], 'cx_overflow counted once');
    a.done();
    const c = leased(await third);
    assert.equal(c.conn, a.conn, 'the freed connection serves the pending request');
    assert.equal(t.opened(), 2, 'no third connection');
    assert.equal(rt.breaker.inUse('pending'), 0);
    b.done();
    c.done();
    // A keep-alive connection is reused: no new one, no overflow.
    const d = leased(await t.lease());
    assert.equal(t.opened(), 2);
    d.done();
  });

  it('a connection that goes away frees its slot for a request pending on another endpoint', async () => {
    const rt = cluster({ maxConnections: 2 });
    const t = setup(rt);
    const a = leased(await t.lease('10.1.1.1:1'));
    const b = leased(await t.lease('10.1.1.1:2'));
    const waiting = t.lease('10.1.1.1:2');
    assert.equal(await settled(waiting), false);
    a.done();
    assert.equal(await settled(waiting), false, 'an idle connection of another endpoint is not this one');
    t.conns.gone(a.conn);
    assert.equal(a.conn.closed, true);
    const c = leased(await waiting);
    assert.notEqual(c.conn, b.conn);
    assert.equal(t.opened(), 3);
    assert.equal(rt.breaker.inUse('connections'), 2);
    b.done();
    c.done();
  });

  it('an endpoint without any connection always gets one, counted as overflow (Envoy)', async () => {
    const rt = cluster({ maxConnections: 1 });
    const t = setup(rt);
    const a = leased(await t.lease('10.1.1.1:1'));
    const b = leased(await t.lease('10.1.1.1:2'));
    assert.equal(t.opened(), 2);
    assert.deepEqual(t.overflows, ['connection']);
    a.done();
    b.done();
    t.conns.gone(b.conn);
    assert.equal(rt.breaker.inUse('connections'), 1, 'the over-limit connection held no slot');
  });

  it('an endpoint whose last connection went away while requests wait for it gets one (not starved by the others)', async () => {
    const rt = cluster({ maxConnections: 2, maxPendingRequests: 5 });
    const t = setup(rt);
    const a1 = leased(await t.lease('10.1.1.1:1'));
    const b1 = leased(await t.lease('10.1.1.1:2'));
    const b2 = t.lease('10.1.1.1:2');
    const a2 = t.lease('10.1.1.1:1');
    assert.equal(t.conns.stats().pending, 2);
    // a1's connection is reset under its request: its slot goes to the first in line (b2)...
    t.conns.gone(a1.conn);
    a1.done();
    const gotB = leased(await b2);
    assert.notEqual(gotB.conn, b1.conn);
    // ...and endpoint 1, now without any connection, still gets one for a2.
    const gotA = leased(await a2);
    assert.notEqual(gotA.conn, a1.conn);
    assert.equal(t.conns.stats().pending, 0);
    assert.equal(rt.breaker.inUse('connections'), 2, 'the rescue connection holds no slot');
    for (const l of [b1, gotB, gotA]) l.done();
  });

  it('a worker holds its share of the limit: 3 connections over 2 workers is 1 for the second', async () => {
    const rt = cluster({ maxConnections: 3 }, { index: 1, count: 2 });
    assert.equal(rt.breaker.limit('connections'), 1);
    const t = setup(rt);
    const a = leased(await t.lease());
    const second = t.lease();
    assert.equal(await settled(second), false);
    a.done();
    leased(await second).done();
  });
});

describe('breaker: max_pending_requests bounds the requests waiting for a connection (HTTP)', () => {
  it('beyond the limit a request is refused at once with UO, counted as rq_pending_overflow', async () => {
    const rt = cluster({ maxConnections: 1, maxPendingRequests: 1 });
    const t = setup(rt);
    const a = leased(await t.lease());
    const queued = t.lease();
    const refused = await t.lease();
    assert.deepEqual(refused, { kind: 'local', flag: 'UO' });
    assert.deepEqual(t.overflows, ['connection', 'connection', 'pending']);
    assert.equal(rt.breaker.overflowCount('pending'), 1);
    assert.equal(t.conns.stats().pending, 1);
    a.done();
    leased(await queued).done();
    assert.equal(rt.breaker.inUse('pending'), 0);
  });

  it('a pending request waits no longer than its budget: UT, and its pending slot is given back', async () => {
    const rt = cluster({ maxConnections: 1, maxPendingRequests: 1 });
    const t = setup(rt);
    const a = leased(await t.lease());
    const r = await t.lease('10.1.1.1:1', 30);
    assert.deepEqual(r, { kind: 'local', flag: 'UT' });
    assert.equal(rt.breaker.inUse('pending'), 0);
    assert.equal(t.conns.stats().pending, 0);
    // The connection it did not get goes to the next request, not to the one that left.
    a.done();
    leased(await t.lease()).done();
    assert.equal(t.opened(), 1);
  });

  it('a caller that goes away stops waiting', async () => {
    const rt = cluster({ maxConnections: 1 });
    const t = setup(rt);
    leased(await t.lease());
    const caller = new EventEmitter();
    const r = t.lease('10.1.1.1:1', undefined, caller);
    assert.equal(caller.listenerCount('close'), 1, 'watched only while it waits');
    caller.emit('close');
    assert.deepEqual(await r, { kind: 'local', flag: 'UT' });
    assert.equal(rt.breaker.inUse('pending'), 0);
    assert.equal(caller.listenerCount('close'), 0);
  });
});

describe('breaker: max_connections and max_pending_requests for TCP', () => {
  it('a TCP connection at the limit waits for a slot; beyond pending it is refused (UO)', async () => {
    const rt = cluster({ maxConnections: 1, maxPendingRequests: 1 });
    const t = setup(rt);
    const slot = (budgetMs?: number) => Promise.resolve(t.conns.slot(rt, { budgetMs }));
    const first = (await slot()) as Slot;
    assert.equal(first.kind, 'slot');
    const second = slot();
    assert.deepEqual(await slot(), { kind: 'local', flag: 'UO' });
    assert.equal(await settled(second), false);
    first.release();
    const got = (await second) as Slot;
    assert.equal(got.kind, 'slot');
    assert.equal(rt.breaker.inUse('connections'), 1);
    assert.deepEqual(await slot(10), { kind: 'local', flag: 'UT' });
    got.release();
    assert.equal(rt.breaker.inUse('connections'), 0);
    assert.equal(rt.breaker.inUse('pending'), 0);
  });
});

describe('breaker: max_retries bounds the retries outstanding in the cluster', () => {
  it('with max_retries 1, two failing requests at once get one retry between them; the other is UO', async () => {
    const rt = cluster({ maxRetries: 1 });
    let overflows = 0;
    let tries = 0;
    const release: (() => void)[] = [];
    const run = () =>
      runAttempts<never>({
        cluster: rt,
        hashKey: undefined,
        retry: {
          numRetries: 3,
          perTryTimeoutMs: undefined,
          shouldRetry: (o: Outcome) => o.kind !== 'success',
          backoffMs: () => 0,
        },
        replayable: () => true,
        deadline: undefined,
        admit: () => undefined,
        attempt: () => {
          tries++;
          return new Promise((r) =>
            release.push(() => r({ kind: 'failed', outcome: { kind: 'reset' }, flag: 'UR' })),
          );
        },
        discard: () => {},
        retryOverflow: () => overflows++,
        sleep: () => Promise.resolve(),
      });
    const a = run();
    const b = run();
    await new Promise((r) => setImmediate(r));
    assert.equal(tries, 2);
    // Both first tries fail: one takes the retry slot, the other finds it held.
    for (const f of release.splice(0)) f();
    await new Promise((r) => setImmediate(r));
    assert.equal(tries, 3);
    assert.equal(overflows, 1);
    assert.equal(rt.breaker.inUse('retries'), 1, 'held through the retry');
    const settledOne = await Promise.race([a, b]);
    assert.equal(settledOne.kind === 'failed' && settledOne.flag, 'UO');
    for (const f of release.splice(0)) f();
    await new Promise((r) => setImmediate(r));
    // The retry failed again: its slot was released and taken anew for the next retry.
    assert.equal(rt.breaker.inUse('retries'), 1);
    assert.equal(tries, 4);
    for (let i = 0; i < 3 && release.length; i++) {
      for (const f of release.splice(0)) f();
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all([a, b]);
    assert.equal(rt.breaker.inUse('retries'), 0);
  });

  it('a request that ends on this side (UO/UT waiting for a connection) is not retried', async () => {
    const rt = cluster({});
    let tries = 0;
    const end = await runAttempts<never>({
      cluster: rt,
      hashKey: undefined,
      retry: { numRetries: 3, perTryTimeoutMs: undefined, shouldRetry: () => true, backoffMs: () => 0 },
      replayable: () => true,
      deadline: undefined,
      admit: () => undefined,
      attempt: async () => {
        tries++;
        return { kind: 'local', flag: 'UO' };
      },
      discard: () => {},
      retryOverflow: () => {},
    });
    assert.equal(tries, 1);
    assert.equal(end.kind === 'failed' && end.flag, 'UO');
  });
});

describe('upstream pools are bounded and pruned', () => {
  it('prune drops pools of endpoints that left and of old SVID serials; busy connections close when done', async () => {
    const rt = cluster({});
    const t = setup(rt);
    const gone = leased(await t.lease('10.1.1.1:1'));
    const idle = leased(await t.lease('10.1.1.1:2'));
    idle.done();
    const old = leased(await Promise.resolve(t.conns.lease(rt, t.of('10.1.1.1:2', 'old'), t.open)));
    old.done();
    assert.equal(t.conns.stats().pools, 3);
    const dropped = t.conns.prune((of) => of.endpoint !== '10.1.1.1:1' && of.serial === 's1');
    assert.equal(dropped, 2);
    assert.equal(t.conns.stats().pools, 1);
    assert.equal(old.conn.closed, true, 'an idle connection of a pruned pool closes now');
    assert.equal(gone.conn.closed, false, 'a busy one finishes its request');
    gone.done();
    assert.equal(gone.conn.closed, true);
    assert.equal(t.conns.stats().connections, 1);
    assert.equal(rt.breaker.inUse('connections'), 1);
  });

  it('a pool whose last connection went away is removed', async () => {
    const rt = cluster({});
    const t = setup(rt);
    const a = leased(await t.lease());
    a.done();
    t.conns.gone(a.conn);
    assert.deepEqual(t.conns.stats(), { pools: 0, connections: 0, pending: 0 });
    assert.equal(rt.breaker.inUse('connections'), 0);
  });
});
