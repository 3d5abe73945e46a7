import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DEFAULT_OUTLIER,
  OutlierDetector,
  parseOutlierDetection,
} from '../../../mesh-agent/outlier/index.js';
import { parseCluster } from '../../../mesh-agent/state/cluster.js';
import { clusters } from './fixtures/envoy.js';
import { FakeClock } from './fixtures/rng.js';

const hosts = (n: number) => Array.from({ length: n }, (_, i) => `10.1.0.${i + 1}:80`);
const http = (status: number) => ({ kind: 'http', status }) as const;

function detector(clock: FakeClock, over: Partial<typeof DEFAULT_OUTLIER> = {}, n = 10) {
  const d = new OutlierDetector(
    { consecutive5xx: 3, baseEjectionTimeMs: 30_000, intervalMs: 10_000, maxEjectionPercent: 50, ...over },
    clock.now,
  );
  d.setHosts(hosts(n));
  return d;
}

describe('OutlierDetector: consecutive 5xx', () => {
  it('ejects after N consecutive 5xx, a success in between resets the count', () => {
    const clock = new FakeClock();
    const d = detector(clock);
    const h = hosts(1)[0]!;
    assert.equal(d.report(h, http(500)), undefined);
    assert.equal(d.report(h, http(500)), undefined);
    assert.equal(d.report(h, http(200)), undefined);
    assert.equal(d.report(h, http(500)), undefined);
    assert.equal(d.report(h, http(404)), undefined, '4xx is a success for outlier detection');
    d.report(h, http(500));
    d.report(h, http(500));
    assert.ok(!d.isEjected(h));
    const ev = d.report(h, http(500));
    assert.deepEqual(ev, {
      kind: 'ejected',
      endpoint: h,
      type: 'consecutive_5xx',
      ejections: 1,
      durationMs: 30_000,
    });
    assert.ok(d.isEjected(h));
    assert.equal(d.ejectedCount, 1);
    assert.equal(d.report(h, http(500)), undefined, 'an ejected host is not re-ejected');
  });

  it('connect failures, resets and timeouts count as 5xx', () => {
    const d = detector(new FakeClock());
    const h = hosts(1)[0]!;
    d.report(h, { kind: 'connect-failure' });
    d.report(h, { kind: 'reset' });
    assert.equal(d.report(h, { kind: 'timeout' })?.kind, 'ejected');
  });

  it('a TCP connect success resets the count', () => {
    const d = detector(new FakeClock());
    const h = hosts(1)[0]!;
    d.report(h, { kind: 'connect-failure' });
    d.report(h, { kind: 'connect-failure' });
    d.report(h, { kind: 'connect-success' });
    assert.equal(d.report(h, { kind: 'connect-failure' }), undefined);
  });

  it('restore timeline: base x times ejected, only on the interval sweep', () => {
    const clock = new FakeClock();
    const d = detector(clock);
    const h = hosts(1)[0]!;
    const fail = () => {
      for (let i = 0; i < 3; i++) d.report(h, http(503));
    };
    fail();
    assert.ok(d.isEjected(h));
    clock.advance(29_999);
    assert.deepEqual(d.sweep(), []);
    assert.ok(d.isEjected(h));
    clock.advance(1);
    assert.ok(d.isEjected(h), 'still ejected until the sweep runs');
    assert.deepEqual(d.sweep(), [{ kind: 'restored', endpoint: h }]);
    assert.ok(!d.isEjected(h));

    // Ejected again right away: 2 x base.
    fail();
    assert.equal(d.ejectionsOf(h), 2);
    clock.advance(59_999);
    assert.deepEqual(d.sweep(), []);
    clock.advance(1);
    assert.equal(d.sweep().length, 1);

    // Healthy intervals walk the multiplier back down: after 2 sweeps it is 0, so the next ejection is 1 x base.
    d.sweep();
    d.sweep();
    fail();
    clock.advance(30_000);
    assert.equal(d.sweep().length, 1);
  });

  it('ejection time is capped by max_ejection_time', () => {
    const clock = new FakeClock();
    const d = detector(clock, { maxEjectionTimeMs: 45_000 });
    const h = hosts(1)[0]!;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) d.report(h, http(500));
      assert.ok(d.isEjected(h));
      clock.advance(45_000);
      assert.equal(d.sweep().length, 1, `round ${round}`);
    }
  });
});

describe('OutlierDetector: max_ejection_percent', () => {
  it('never ejects beyond the percentage', () => {
    const clock = new FakeClock();
    const d = detector(clock, { maxEjectionPercent: 30 }, 10);
    const events = hosts(10).map((h) => {
      for (let i = 0; i < 2; i++) d.report(h, http(500));
      return d.report(h, http(500))?.kind;
    });
    assert.deepEqual(events.filter((e) => e === 'ejected').length, 3);
    assert.equal(d.ejectedCount, 3);
    assert.equal(events[3], 'not-ejected');
    // Once one is restored, the next outlier can go.
    clock.advance(30_000);
    assert.equal(d.sweep().length, 3);
    const h = hosts(10)[9]!;
    for (let i = 0; i < 2; i++) d.report(h, http(500));
    assert.equal(d.report(h, http(500))?.kind, 'ejected');
  });

  it('Envoy: at least one host may always be ejected, even at the 10% default with 2 hosts', () => {
    const d = detector(new FakeClock(), { maxEjectionPercent: 10 }, 2);
    const [a, b] = hosts(2) as [string, string];
    for (let i = 0; i < 3; i++) d.report(a, http(500));
    assert.ok(d.isEjected(a));
    for (let i = 0; i < 2; i++) d.report(b, http(500));
    assert.deepEqual(d.report(b, http(500)), {
      kind: 'not-ejected',
      endpoint: b,
      type: 'consecutive_5xx',
      reason: 'max-ejection-percent',
    });
    assert.ok(!d.isEjected(b));
  });
});

describe('OutlierDetector: consecutive gateway failures', () => {
  it('is not enforced by default (Envoy: enforcing_consecutive_gateway_failure = 0)', () => {
    const d = new OutlierDetector({ consecutiveGatewayFailure: 2, consecutive5xx: 10 }, new FakeClock().now);
    d.setHosts(['h']);
    d.report('h', http(502));
    assert.deepEqual(d.report('h', http(503)), {
      kind: 'not-ejected',
      endpoint: 'h',
      type: 'consecutive_gateway_failure',
      reason: 'not-enforced',
    });
    assert.ok(!d.isEjected('h'));
  });

  it('ejects when enforced; a plain 500 resets the gateway count but not the 5xx one', () => {
    const d = new OutlierDetector(
      {
        consecutiveGatewayFailure: 2,
        enforcingConsecutiveGatewayFailure: 100,
        consecutive5xx: 4,
        maxEjectionPercent: 100,
      },
      new FakeClock().now,
    );
    d.setHosts(['h', 'g']);
    d.report('h', http(502));
    d.report('h', http(500));
    assert.equal(d.report('h', http(504)), undefined);
    // Fourth 5xx in a row trips consecutive_5xx.
    assert.equal(d.report('h', http(500))?.kind, 'ejected');
    d.report('g', { kind: 'connect-failure' });
    const ev = d.report('g', http(503));
    assert.ok(ev?.kind === 'ejected' && ev.type === 'consecutive_gateway_failure');
  });
});

describe('OutlierDetector: endpoint set changes', () => {
  it('forgets removed endpoints (and their ejection) and ignores unknown ones', () => {
    const d = detector(new FakeClock(), {}, 3);
    const [a] = hosts(3) as [string];
    for (let i = 0; i < 3; i++) d.report(a, http(500));
    assert.equal(d.ejectedCount, 1);
    d.setHosts(hosts(3).slice(1));
    assert.equal(d.ejectedCount, 0);
    assert.ok(!d.isEjected(a));
    assert.equal(d.report('nobody:1', http(500)), undefined);
  });
});

describe('parseOutlierDetection', () => {
  it('absent: detection off', () => {
    assert.equal(parseOutlierDetection(undefined, 'x'), undefined);
  });
  it('reads the fixture cluster, defaults the rest', () => {
    assert.deepEqual(parseCluster(clusters[0]).outlier, {
      ...DEFAULT_OUTLIER,
      consecutive5xx: 3,
      consecutiveGatewayFailure: 2,
      enforcingConsecutiveGatewayFailure: 100,
      intervalMs: 5000,
      baseEjectionTimeMs: 30_000,
      maxEjectionPercent: 50,
    });
  });
  it('rejects percentages over 100 and zero intervals', () => {
    assert.throws(
      () => parseOutlierDetection({ max_ejection_percent: { value: 101 } }, 'od'),
      /od\.max_ejection_percent: must be 0\.\.100/,
    );
    assert.throws(
      () => parseOutlierDetection({ interval: { seconds: '0' } }, 'od'),
      /od\.interval: must be greater than zero/,
    );
  });
});
