// The canary guard's decision: windows, minimum samples, ties with the baseline,
// noise (Wilson evidence), promotion steps, and a rollback that never undoes itself.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type BackendCounts,
  decide,
  type GuardBounds,
  type GuardState,
  initialState,
  measure,
  p99,
  SampleWindow,
  wilson,
} from '../../../xds/model/canary-decision.js';

const BOUNDS = [1, 5, 10, 25, 50, 100, 250, 500, 1000];

/** n requests, e errors, every request taking `ms`. */
function counts(n: number, e = 0, ms = 5): BackendCounts {
  return { requests: n, errors: e, fast: new Map(BOUNDS.map((le) => [le, le >= ms ? n : 0])) };
}

const bounds: GuardBounds = { minSuccessRate: 99, maxP99: 500, minRequests: 20 };
const STEPS = [5, 25, 50, 100];
const at10: GuardState = { phase: 'Progressing', weight: 10, step: -1 };

describe('wilson', () => {
  test('brackets the point estimate and narrows with n', () => {
    const small = wilson(19, 20);
    const big = wilson(1900, 2000);
    assert.ok(small.low < 0.95 && small.high > 0.95);
    assert.ok(big.high - big.low < small.high - small.low);
    assert.deepEqual(wilson(0, 0), { low: 0, high: 1 });
    assert.ok(wilson(20, 20).high > 0.999999);
  });
});

describe('p99 and measure', () => {
  test('p99 is the upper bound of the bucket holding the 99th percentile', () => {
    assert.equal(p99(counts(100, 0, 3)), 5);
    const mixed: BackendCounts = {
      requests: 100,
      errors: 0,
      fast: new Map([
        [5, 98],
        [500, 99],
        [1000, 100],
      ]),
    };
    assert.equal(p99(mixed), 500);
    assert.equal(p99(counts(0)), null);
    assert.equal(p99({ requests: 10, errors: 0, fast: new Map([[5, 0]]) }), Number.POSITIVE_INFINITY);
  });
  test('success rate in percent; null without requests', () => {
    assert.equal(measure(counts(200, 2)).successRate, 99);
    assert.equal(measure(counts(0)).successRate, null);
  });
});

describe('minimum samples', () => {
  test('below minRequests: wait, even when every request failed', () => {
    const d = decide(at10, counts(19, 19), counts(500), bounds, STEPS);
    assert.equal(d.action, 'Wait');
    assert.equal(d.reason, 'NotEnoughRequests');
    assert.deepEqual(d.next, at10);
  });
  test('no traffic at all: wait', () => {
    assert.equal(decide(at10, counts(0), counts(0), bounds, STEPS).action, 'Wait');
  });
});

describe('rollback', () => {
  test('30 % errors over the minimum: rolled back to 0 with the reason and figures', () => {
    const d = decide(at10, counts(40, 12), counts(400), bounds, STEPS);
    assert.equal(d.action, 'RollBack');
    assert.equal(d.reason, 'SuccessRateBelowBound');
    assert.deepEqual(d.next, { phase: 'RolledBack', weight: 0, step: -1 });
    assert.equal(d.canary.successRate, 70);
    assert.equal(d.canary.requests, 40);
    assert.equal(d.baseline.requests, 400);
    assert.match(d.message, /70 % < 99 %/);
  });
  test('every request 300 ms slower than a 250 ms p99 bound: rolled back for latency', () => {
    const d = decide(at10, counts(50, 0, 300), counts(400), { ...bounds, maxP99: 250 }, STEPS);
    assert.equal(d.action, 'RollBack');
    assert.equal(d.reason, 'LatencyAboveBound');
    assert.equal(d.canary.p99, 500);
  });
  test('latency is not guarded without maxP99', () => {
    const d = decide(at10, counts(50, 0, 5000), counts(400), { minSuccessRate: 99, minRequests: 20 }, STEPS);
    assert.equal(d.action, 'Promote');
  });
  test('a rollback is final: perfect numbers afterwards do not move the weight back', () => {
    const rolled: GuardState = { phase: 'RolledBack', weight: 0, step: 1 };
    for (const c of [counts(1000), counts(0), counts(1000, 1000)]) {
      const d = decide(rolled, c, counts(1000), bounds, STEPS);
      assert.equal(d.action, 'Done');
      assert.deepEqual(d.next, rolled);
    }
  });
  test('a promoted canary is still guarded', () => {
    const d = decide({ phase: 'Promoted', weight: 100, step: 3 }, counts(100, 50), counts(0), bounds, STEPS);
    assert.equal(d.action, 'RollBack');
    assert.equal(d.next.weight, 0);
  });
});

describe('noise', () => {
  test('one error in 20 under a 99 % bound is inconclusive: held, neither promoted nor rolled back', () => {
    const d = decide(at10, counts(20, 1), counts(400), bounds, STEPS);
    assert.equal(d.action, 'Hold');
    assert.equal(d.reason, 'Inconclusive');
    assert.deepEqual(d.next, at10);
  });
  test('the same 5 % error rate over 2000 requests is evidence: rolled back', () => {
    assert.equal(decide(at10, counts(2000, 100), counts(400), bounds, STEPS).action, 'RollBack');
  });
  test('a single slow request in 100 does not break p99 <= 250 ms', () => {
    const c: BackendCounts = {
      requests: 100,
      errors: 0,
      fast: new Map(BOUNDS.map((le) => [le, le >= 5 ? (le >= 1000 ? 100 : 99) : 0])),
    };
    assert.notEqual(decide(at10, c, counts(400), { ...bounds, maxP99: 250 }, STEPS).action, 'RollBack');
  });
});

describe('ties with the baseline', () => {
  test('baseline breaks the same bound: held, not the canary fault', () => {
    const d = decide(at10, counts(100, 30), counts(900, 270), bounds, STEPS);
    assert.equal(d.action, 'Hold');
    assert.equal(d.reason, 'BaselineFailsToo');
    assert.deepEqual(d.next, at10);
  });
  test('baseline breaks another bound only: the canary is still rolled back', () => {
    const d = decide(at10, counts(100, 30), counts(900, 0, 1000), { ...bounds, maxP99: 250 }, STEPS);
    assert.equal(d.action, 'RollBack');
  });
  test('baseline fails but with too few requests to say: the canary is rolled back', () => {
    assert.equal(decide(at10, counts(100, 30), counts(10, 10), bounds, STEPS).action, 'RollBack');
  });
});

describe('promotion steps', () => {
  test('healthy: each interval moves to the next step above the current weight', () => {
    let s = initialState(10, STEPS);
    assert.deepEqual(s, { phase: 'Progressing', weight: 10, step: -1 });
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      const d = decide(s, counts(100), counts(100), bounds, STEPS);
      s = d.next;
      seen.push(s.weight);
    }
    assert.deepEqual(seen, [25, 50, 100, 100, 100]);
    assert.equal(s.phase, 'Promoted');
    assert.equal(s.step, 3);
  });
  test('without steps a healthy canary keeps its written weight', () => {
    const d = decide(at10, counts(100), counts(100), bounds, []);
    assert.equal(d.action, 'Hold');
    assert.deepEqual(d.next, at10);
  });
  test('a written weight at or past the last step starts promoted', () => {
    assert.equal(initialState(100, STEPS).phase, 'Promoted');
    assert.equal(initialState(0, STEPS).phase, 'Progressing');
  });
  test('waiting for samples never promotes', () => {
    assert.equal(decide(at10, counts(5), counts(100), bounds, STEPS).next.weight, 10);
  });
});

describe('SampleWindow', () => {
  test('sums the reports of the last windowMs', () => {
    const w = new SampleWindow();
    w.add(1000, counts(10, 1), counts(90));
    w.add(2000, counts(10, 2), counts(90));
    w.add(3000, counts(10, 3), counts(90));
    const s = w.sum(3000, 1500);
    assert.equal(s.canary.requests, 20);
    assert.equal(s.canary.errors, 5);
    assert.equal(s.baseline.requests, 180);
    assert.equal(s.canary.fast.get(5), 20);
  });
  test('a weight change starts the window again', () => {
    const w = new SampleWindow();
    w.add(1000, counts(10), counts(90));
    w.add(2000, counts(10), counts(90));
    w.restart(2500);
    w.add(3000, counts(4), counts(50));
    assert.equal(w.sum(3000, 10_000).canary.requests, 4);
  });
  test('an empty window is zero', () => {
    assert.deepEqual(new SampleWindow().sum(0, 1000).canary.requests, 0);
  });
});
