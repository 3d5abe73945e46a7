import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decodeTcpPairIds,
  decodeTcpStats,
  decodeWorkloadName,
  encodeTcpPair,
  encodeWorkloadName,
  summarize,
  TCP_PAIR_SIZE,
  TCP_STATS_SIZE,
  workloadId,
} from '../../../bpf-sockops/tcp-health.js';

describe('TCP health codec', () => {
  test('workload ids are stable, distinct and never 0 (0 is unknown)', () => {
    const a = workloadId({ namespace: 'shop', workload: 'frontend' });
    assert.equal(a, workloadId({ namespace: 'shop', workload: 'frontend' }));
    assert.notEqual(a, workloadId({ namespace: 'shop', workload: 'ratings' }));
    // the namespace is part of the identity
    assert.notEqual(a, workloadId({ namespace: 'legacy', workload: 'frontend' }));
    assert.ok(a > 0 && a <= 0xffffffff);
  });

  test('a pair key round-trips with its leg', () => {
    const key = encodeTcpPair({ source: 0xdeadbeef, destination: 7, leg: 'proxy_pod' });
    assert.equal(key.length, TCP_PAIR_SIZE);
    assert.deepEqual(decodeTcpPairIds(key), { source: 0xdeadbeef, destination: 7, leg: 'proxy_pod' });
    const unknownLeg = Buffer.from(key);
    unknownLeg.writeUInt32LE(99, 8);
    assert.equal(decodeTcpPairIds(unknownLeg).leg, 'unknown');
  });

  test('names round-trip; one too long for the map is refused with the name', () => {
    const ref = { namespace: 'shop', workload: 'reviews-v2' };
    assert.deepEqual(decodeWorkloadName(encodeWorkloadName(ref)), ref);
    assert.throws(
      () => encodeWorkloadName({ namespace: 'shop', workload: 'x'.repeat(130) }),
      /workload name shop\/x+ is longer than 127 bytes/,
    );
    assert.equal(decodeWorkloadName(Buffer.alloc(128)), undefined);
  });

  test('statistics decode at the C layout offsets and means come from the sums', () => {
    const v = Buffer.alloc(TCP_STATS_SIZE);
    for (const [i, n] of [3n, 1n, 40n, 2n, 4n, 400n, 80n].entries()) v.writeBigUInt64LE(n, i * 8);
    v.writeUInt32LE(120, 56);
    v.writeUInt32LE(30, 60);
    const raw = decodeTcpStats(v);
    assert.equal(raw.retransmits, 40n);
    const h = summarize({ source: undefined, destination: undefined, leg: 'tunnel' }, raw);
    assert.equal(h.connections, 3);
    assert.equal(h.failures, 1);
    assert.equal(h.rtos, 2);
    assert.equal(h.srttMeanUs, 100);
    assert.equal(h.rttvarMeanUs, 20);
    assert.equal(h.srttUs, 120);
    assert.equal(h.rttvarUs, 30);
    const none = summarize(
      { source: undefined, destination: undefined, leg: 'tunnel' },
      decodeTcpStats(Buffer.alloc(64)),
    );
    assert.equal(none.srttMeanUs, 0, 'no samples: no mean, not NaN');
  });
});
