import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CircuitBreaker,
  DEFAULT_THRESHOLDS,
  parseCircuitBreakers,
} from '../../../mesh-agent/breaker/index.js';
import { parseCluster } from '../../../mesh-agent/state/cluster.js';
import { CLUSTER_TYPE } from '../../../xds/protos.js';
import { clusters, wire } from './fixtures/envoy.js';

describe('CircuitBreaker', () => {
  it('uses Envoy defaults when unset: 1024 each, 3 retries', () => {
    const b = new CircuitBreaker();
    assert.deepEqual(
      (['connections', 'pending', 'requests', 'retries'] as const).map((r) => b.limit(r)),
      [1024, 1024, 1024, 3],
    );
    assert.deepEqual(parseCircuitBreakers(undefined, 'x'), DEFAULT_THRESHOLDS);
  });

  it('overflows fast at the limit and recovers on release', () => {
    const b = new CircuitBreaker({ maxRequests: 2 });
    const first = b.tryAcquire('requests');
    const second = b.tryAcquire('requests');
    assert.ok(first.ok && second.ok);
    assert.ok(b.isOpen('requests'));
    assert.equal(b.remaining('requests'), 0);
    const third = b.tryAcquire('requests');
    assert.deepEqual(third, { ok: false, resource: 'requests', reason: 'rq_overflow', responseFlag: 'UO' });
    assert.equal(b.overflowCount('requests'), 1);
    first.release();
    first.release();
    assert.equal(b.inUse('requests'), 1, 'release is idempotent');
    assert.ok(!b.isOpen('requests'));
    const fourth = b.tryAcquire('requests');
    assert.ok(fourth.ok);
    second.release();
    fourth.release();
    assert.equal(b.inUse('requests'), 0);
  });

  it('counts each resource separately with its own overflow reason', () => {
    const b = new CircuitBreaker({ maxConnections: 1, maxPendingRequests: 1, maxRequests: 1, maxRetries: 1 });
    const reasons: string[] = [];
    for (const r of ['connections', 'pending', 'requests', 'retries'] as const) {
      assert.ok(b.tryAcquire(r).ok);
      const over = b.tryAcquire(r);
      assert.ok(!over.ok);
      reasons.push(over.reason);
    }
    assert.deepEqual(reasons, ['cx_overflow', 'rq_pending_overflow', 'rq_overflow', 'rq_retry_overflow']);
  });

  it('a limit of 0 rejects everything', () => {
    assert.ok(!new CircuitBreaker({ maxRetries: 0 }).tryAcquire('retries').ok);
  });

  it('new thresholds keep what is held', () => {
    const b = new CircuitBreaker({ maxRequests: 3 });
    const held = [b.tryAcquire('requests'), b.tryAcquire('requests')];
    b.setThresholds({ maxRequests: 1 });
    assert.equal(b.inUse('requests'), 2);
    assert.ok(!b.tryAcquire('requests').ok);
    for (const h of held) if (h.ok) h.release();
    assert.ok(b.tryAcquire('requests').ok);
  });
});

describe('parseCircuitBreakers', () => {
  it('reads the DEFAULT priority entry from a cluster', () => {
    const c = parseCluster(clusters[0]);
    assert.deepEqual(c.breaker, {
      maxConnections: 100,
      maxPendingRequests: 10,
      maxRequests: 50,
      maxRetries: 2,
    });
  });

  it('ignores HIGH priority and fills unset fields with defaults', () => {
    const c = parseCluster(
      wire(CLUSTER_TYPE, {
        name: 'c',
        circuit_breakers: {
          thresholds: [{ priority: 'HIGH', max_requests: { value: 1 } }, { max_retries: { value: 7 } }],
        },
      }),
    );
    assert.deepEqual(c.breaker, { ...DEFAULT_THRESHOLDS, maxRetries: 7 });
  });

  it('rejects garbage with the field path', () => {
    assert.throws(
      () =>
        parseCircuitBreakers(
          { thresholds: [{ max_requests: { value: -1 } }] },
          'Cluster "c".circuit_breakers',
        ),
      /Cluster "c"\.circuit_breakers\.thresholds\[0\]\.max_requests\.value: expected an unsigned integer/,
    );
  });
});
