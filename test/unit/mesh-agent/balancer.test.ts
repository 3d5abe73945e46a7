import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  candidates,
  createLoadBalancer,
  type EjectionView,
  type Endpoint,
  InFlight,
  LeastRequest,
  NO_EJECTIONS,
  nodeOf,
  RingHash,
  RoundRobin,
} from '../../../mesh-agent/balancer/index.js';
import { parseEndpoints } from '../../../mesh-agent/state/endpoints.js';
import { assignment } from './fixtures/envoy.js';
import { seeded } from './fixtures/rng.js';

function ep(i: number, node = 'node-2', healthy = true): Endpoint {
  const address = `10.1.0.${i}`;
  return {
    key: `${address}:80`,
    address,
    port: 80,
    locality: { zone: node },
    healthy,
    weight: 1,
    meta: { node },
  };
}

function ejected(...keys: string[]): EjectionView {
  const set = new Set(keys);
  return { isEjected: (k) => set.has(k) };
}

const opts = (localNode: string | undefined, ejections: EjectionView = NO_EJECTIONS) => ({
  localNode,
  ejections,
});

describe('candidates: health, ejection and same-node preference', () => {
  const fromWire = parseEndpoints(
    assignment('svc', [
      { ip: '10.1.1.1', port: 80, node: 'node-1', pod: 'a' },
      { ip: '10.1.1.2', port: 80, node: 'node-1', pod: 'b', health: 'UNHEALTHY' },
      { ip: '10.1.2.1', port: 80, node: 'node-2', pod: 'c' },
      { ip: '10.1.2.2', port: 80, node: 'node-2', pod: 'd', health: 'DRAINING' },
    ]),
  ).endpoints;

  it('reads node from endpoint metadata', () => {
    assert.deepEqual(fromWire.map(nodeOf), ['node-1', 'node-1', 'node-2', 'node-2']);
    assert.equal(nodeOf({ ...ep(1), meta: {}, locality: { region: 'r', zone: 'z' } }), 'z');
  });

  it('prefers healthy local endpoints', () => {
    assert.deepEqual(
      candidates(fromWire, opts('node-1')).map((e) => e.key),
      ['10.1.1.1:80'],
    );
  });

  it('falls back to all healthy when every local one is ejected or unhealthy', () => {
    assert.deepEqual(
      candidates(fromWire, opts('node-1', ejected('10.1.1.1:80'))).map((e) => e.key),
      ['10.1.2.1:80'],
    );
  });

  it('no local node: all healthy', () => {
    assert.deepEqual(
      candidates(fromWire, opts(undefined)).map((e) => e.key),
      ['10.1.1.1:80', '10.1.2.1:80'],
    );
    assert.deepEqual(
      candidates(fromWire, opts('node-9')).map((e) => e.key),
      ['10.1.1.1:80', '10.1.2.1:80'],
    );
  });

  it('avoid only while something else is left', () => {
    const all = [ep(1), ep(2)];
    assert.deepEqual(
      candidates(all, opts(undefined), new Set([ep(1).key])).map((e) => e.key),
      [ep(2).key],
    );
    assert.deepEqual(candidates(all, opts(undefined), new Set([ep(1).key, ep(2).key])).length, 2);
  });
});

describe('RoundRobin', () => {
  it('cycles through candidates in order', () => {
    const lb = new RoundRobin([ep(1), ep(2), ep(3)], opts(undefined), () => 0);
    assert.deepEqual(
      Array.from({ length: 6 }, () => lb.pick()?.key),
      [ep(1), ep(2), ep(3), ep(1), ep(2), ep(3)].map((e) => e.key),
    );
  });

  it('sticks to the local node while it has a usable endpoint', () => {
    const eps = [ep(1, 'node-1'), ep(2, 'node-2'), ep(3, 'node-1')];
    const ej = new Set<string>();
    const lb = new RoundRobin(eps, opts('node-1', { isEjected: (k) => ej.has(k) }), () => 0);
    const picks = new Set(Array.from({ length: 10 }, () => lb.pick()?.key));
    assert.deepEqual([...picks].sort(), [ep(1).key, ep(3).key]);
    ej.add(ep(1).key);
    assert.deepEqual(new Set(Array.from({ length: 4 }, () => lb.pick()?.key)), new Set([ep(3).key]));
    ej.add(ep(3).key);
    assert.equal(lb.pick()?.key, ep(2).key);
    ej.add(ep(2).key);
    assert.equal(lb.pick(), null);
  });

  it('returns null with no endpoints', () => {
    assert.equal(new RoundRobin([], opts(undefined)).pick(), null);
  });
});

describe('LeastRequest (power of two choices)', () => {
  it('never picks the busier of two sampled endpoints', () => {
    const inFlight = new InFlight();
    const [a, b] = [ep(1), ep(2)];
    const releases = Array.from({ length: 5 }, () => inFlight.start(a.key));
    const lb = new LeastRequest([a, b], opts(undefined), inFlight, seeded(3));
    // With two endpoints a sample of two hits b unless both draws are a (p = 1/4).
    const counts = { a: 0, b: 0 };
    for (let i = 0; i < 4000; i++) counts[lb.pick()?.key === a.key ? 'a' : 'b']++;
    assert.ok(Math.abs(counts.a - 1000) < 150, JSON.stringify(counts));
    for (const r of releases) r();
    assert.equal(inFlight.get(a.key), 0);
  });

  it('biases load toward idle endpoints as requests pile up', () => {
    const inFlight = new InFlight();
    const eps = [ep(1), ep(2), ep(3), ep(4)];
    const lb = new LeastRequest(eps, opts(undefined), inFlight, seeded(9));
    // One slow endpoint never completes; the others complete at once.
    const slow = eps[0]!.key;
    let slowPicks = 0;
    for (let i = 0; i < 2000; i++) {
      const picked = lb.pick()!;
      const done = inFlight.start(picked.key);
      if (picked.key === slow) slowPicks++;
      else done();
    }
    // Round robin would send it 500. P2C samples with replacement (as Envoy does), so once it is
    // the busiest it is only picked when both draws hit it: 1/16, about 125.
    assert.ok(slowPicks > 60 && slowPicks < 200, `slow endpoint got ${slowPicks}`);
  });

  it('release is idempotent', () => {
    const inFlight = new InFlight();
    const r = inFlight.start('k');
    inFlight.start('k');
    r();
    r();
    assert.equal(inFlight.get('k'), 1);
  });

  it('single candidate and none', () => {
    const lb = new LeastRequest([ep(1)], opts(undefined), new InFlight());
    assert.equal(lb.pick()?.key, ep(1).key);
    assert.equal(new LeastRequest([ep(1, 'n', false)], opts(undefined), new InFlight()).pick(), null);
  });
});

describe('RingHash', () => {
  const eps = Array.from({ length: 10 }, (_, i) => ep(i + 1));
  const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
  const mapping = (lb: RingHash) => new Map(keys.map((k) => [k, lb.pick({ hashKey: k })?.key]));

  it('same key, same endpoint; keys spread over all endpoints', () => {
    const lb = new RingHash(eps, NO_EJECTIONS);
    assert.ok(lb.ringSize >= 1024);
    const m = mapping(lb);
    assert.deepEqual(
      mapping(new RingHash([...eps].reverse(), NO_EJECTIONS)),
      m,
      'independent of endpoint order',
    );
    const perEp = new Map<string, number>();
    for (const v of m.values()) perEp.set(v ?? '', (perEp.get(v ?? '') ?? 0) + 1);
    assert.equal(perEp.size, 10);
    for (const n of perEp.values()) assert.ok(n > 100 && n < 330, `unbalanced: ${[...perEp.values()]}`);
  });

  it('adding an endpoint moves only about 1/n of the keys, all to the new one', () => {
    const before = mapping(new RingHash(eps, NO_EJECTIONS));
    const added = ep(99);
    const after = mapping(new RingHash([...eps, added], NO_EJECTIONS));
    let moved = 0;
    for (const k of keys) {
      if (before.get(k) === after.get(k)) continue;
      moved++;
      assert.equal(after.get(k), added.key);
    }
    assert.ok(moved > 0 && moved < keys.length * 0.2, `moved ${moved}`);
  });

  it('removing or ejecting an endpoint moves only its keys', () => {
    const before = mapping(new RingHash(eps, NO_EJECTIONS));
    const gone = eps[3]!.key;
    for (const lb of [
      new RingHash(
        eps.filter((e) => e.key !== gone),
        NO_EJECTIONS,
      ),
      new RingHash(eps, ejected(gone)),
    ]) {
      const after = mapping(lb);
      for (const k of keys) {
        if (before.get(k) !== gone) assert.equal(after.get(k), before.get(k));
        else assert.notEqual(after.get(k), gone);
      }
    }
  });

  it('skips unhealthy endpoints, honours avoid, null when nothing is usable', () => {
    const lb = new RingHash([ep(1, 'n', false), ep(2)], NO_EJECTIONS);
    for (const k of keys.slice(0, 50)) assert.equal(lb.pick({ hashKey: k })?.key, ep(2).key);
    const two = new RingHash([ep(1), ep(2)], NO_EJECTIONS);
    const first = two.pick({ hashKey: 'x' })!.key;
    assert.notEqual(two.pick({ hashKey: 'x', avoid: new Set([first]) })?.key, first);
    assert.equal(new RingHash([ep(1, 'n', false)], NO_EJECTIONS).pick({ hashKey: 'x' }), null);
    assert.equal(new RingHash([], NO_EJECTIONS).pick({ hashKey: 'x' }), null);
  });

  it('endpoint weights scale their share of keys', () => {
    const heavy = { ...ep(1), weight: 3 };
    const lb = new RingHash([heavy, ep(2)], NO_EJECTIONS);
    const share = keys.filter((k) => lb.pick({ hashKey: k })?.key === heavy.key).length / keys.length;
    assert.ok(share > 0.68 && share < 0.82, `heavy endpoint share ${share}`);
  });

  it('without a hash key picks at random', () => {
    const lb = new RingHash(eps, NO_EJECTIONS, {}, seeded(5));
    assert.ok(new Set(Array.from({ length: 100 }, () => lb.pick()?.key)).size > 5);
  });

  it('ring size follows minimum_ring_size', () => {
    // ceil(30 / 3) = 10 points each, rounded up to 16.
    assert.equal(new RingHash(eps.slice(0, 3), NO_EJECTIONS, { minRingSize: 30 }).ringSize, 48);
    assert.equal(new RingHash(eps.slice(0, 4), NO_EJECTIONS, { minRingSize: 1024 }).ringSize, 1024);
    assert.equal(
      new RingHash(eps.slice(0, 4), NO_EJECTIONS, { minRingSize: 10, maxRingSize: 8 }).ringSize,
      8,
    );
  });
});

describe('createLoadBalancer', () => {
  it('builds the policy the cluster names', () => {
    const common = { localNode: undefined, ejections: NO_EJECTIONS, inFlight: new InFlight() };
    assert.equal(createLoadBalancer({ policy: 'ROUND_ROBIN' }, [ep(1)], common).policy, 'ROUND_ROBIN');
    assert.equal(createLoadBalancer({ policy: 'LEAST_REQUEST' }, [ep(1)], common).policy, 'LEAST_REQUEST');
    assert.equal(createLoadBalancer({ policy: 'RING_HASH' }, [ep(1)], common).policy, 'RING_HASH');
  });
});
