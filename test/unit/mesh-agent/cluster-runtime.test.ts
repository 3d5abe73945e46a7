import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClusterContext, ClusterRuntime } from '../../../mesh-agent/agent/clusters.js';
import { OutlierRegistry, RemoteOutliers } from '../../../mesh-agent/agent/outliers.js';
import type { Endpoint as LbEndpoint } from '../../../mesh-agent/balancer/types.js';
import { DEFAULT_THRESHOLDS } from '../../../mesh-agent/breaker/thresholds.js';
import { runAttempts } from '../../../mesh-agent/outbound/attempts.js';
import type { Outcome } from '../../../mesh-agent/outbound/plan.js';
import type { ClusterSettings } from '../../../mesh-agent/state/cluster.js';
import { MeshStateStore } from '../../../mesh-agent/state/mesh-state.js';
import { CLUSTER_TYPE } from '../../../xds/protos.js';
import { assignment, clusters as fixtureClusters, wire } from './fixtures/envoy.js';

const noOutliers: ClusterContext = {
  outliers: { report: () => {}, isEjected: () => false },
  worker: { index: 0, count: 1 },
};

function settings(over: Partial<ClusterSettings> = {}): ClusterSettings {
  return {
    name: 'outbound|9080||reviews.shop.svc.cluster.local',
    discovery: 'EDS',
    edsServiceName: 'reviews',
    balancer: { policy: 'ROUND_ROBIN' },
    connectTimeoutMs: 1000,
    breaker: { ...DEFAULT_THRESHOLDS },
    outlier: undefined,
    inlineEndpoints: undefined,
    meta: {},
    ...over,
  };
}

/** Fresh objects every call, as every xDS update parses them anew. */
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

const retry = (numRetries: number) => ({
  numRetries,
  perTryTimeoutMs: undefined,
  shouldRetry: (o: Outcome) => o.kind !== 'success' && (o.kind !== 'status' || o.status >= 500),
  backoffMs: () => 0,
});

describe('ClusterRuntime: the retry breaker (max_retries)', () => {
  it('a retry holds its slot until it has run: 10 concurrent failing requests, max_retries 1', async () => {
    const rt = new ClusterRuntime(
      'c',
      settings({ breaker: { ...DEFAULT_THRESHOLDS, maxRetries: 1 } }),
      eps(1, 2),
      'node-1',
      noOutliers,
    );
    const overflowBefore = rt.breaker.overflowCount('retries');
    let retriesInFlight = 0;
    let maxRetriesInFlight = 0;
    let retriesMade = 0;
    const one = () =>
      runAttempts<string>({
        cluster: rt,
        hashKey: undefined,
        retry: retry(2),
        replayable: () => true,
        deadline: undefined,
        admit: () => undefined,
        attempt: async (_ep, _budget, n) => {
          if (n > 1) {
            retriesMade++;
            retriesInFlight++;
            maxRetriesInFlight = Math.max(maxRetriesInFlight, retriesInFlight);
          }
          await new Promise((r) => setTimeout(r, 20));
          if (n > 1) retriesInFlight--;
          return { kind: 'response', status: 503, response: `r${n}` };
        },
        discard: () => {},
        retryOverflow: () => {},
      });
    const ends = await Promise.all(Array.from({ length: 10 }, one));
    const overflowed = rt.breaker.overflowCount('retries') - overflowBefore;
    assert.equal(maxRetriesInFlight, 1, 'never more than max_retries retries outstanding');
    assert.ok(retriesMade < 20, `retries made: ${retriesMade}`);
    assert.ok(overflowed >= 9, `retry overflows: ${overflowed}`);
    const uo = ends.filter((e) => e.kind === 'response' && e.flag === 'UO');
    assert.equal(uo.length, overflowed, 'every overflowed request is answered (its last 503) with UO');
    assert.equal(rt.breaker.inUse('retries'), 0, 'every slot is given back');
  });

  it('a retry after a connect failure that overflows is answered 503 UO', async () => {
    const rt = new ClusterRuntime(
      'c',
      settings({ breaker: { ...DEFAULT_THRESHOLDS, maxRetries: 0 } }),
      eps(1),
      'node-1',
      noOutliers,
    );
    let reported = 0;
    const end = await runAttempts<string>({
      cluster: rt,
      hashKey: undefined,
      retry: retry(2),
      replayable: () => true,
      deadline: undefined,
      admit: () => undefined,
      attempt: async () => ({ kind: 'failed', outcome: { kind: 'connect-failure' }, flag: 'UF' }),
      discard: () => {},
      retryOverflow: () => {
        reported++;
      },
    });
    assert.equal(end.kind, 'failed');
    assert.equal(end.kind === 'failed' && end.flag, 'UO');
    assert.equal(reported, 1);
    assert.equal(rt.breaker.overflowCount('retries'), 1);
  });
});

describe('ClusterRuntime: balancer state across config updates', () => {
  it('round robin continues when the endpoints did not change', () => {
    const rt = new ClusterRuntime('c', settings(), eps(1, 2, 3), 'node-1', noOutliers);
    const first = [rt.pick()!.port, rt.pick()!.port];
    const lb = rt.balancer;
    rt.update(settings({ breaker: { ...DEFAULT_THRESHOLDS, maxRequests: 7 } }), eps(1, 2, 3));
    assert.equal(rt.balancer, lb, 'the same balancer, not a new one');
    const next = [rt.pick()!.port, rt.pick()!.port, rt.pick()!.port];
    const cycle = [1, 2, 3];
    const at = cycle.indexOf(first[0]!);
    const expected = [at + 1, at + 2, at + 3, at + 4].map((i) => cycle[i % 3]);
    assert.deepEqual([first[1], ...next], expected, 'the rotation went on where it was');
  });

  it('ring hash keeps its ring when the endpoints did not change, and rebuilds it when they do', () => {
    const rh = settings({ balancer: { policy: 'RING_HASH' } });
    const rt = new ClusterRuntime('c', rh, eps(1, 2, 3), 'node-1', noOutliers);
    const lb = rt.balancer;
    const keys = Array.from({ length: 50 }, (_, i) => `user-${i}`);
    const before = keys.map((k) => rt.pick(k)!.port);
    rt.update(settings({ balancer: { policy: 'RING_HASH' } }), eps(1, 2, 3));
    assert.equal(rt.balancer, lb, 'ring identical: not rebuilt');
    assert.deepEqual(
      keys.map((k) => rt.pick(k)!.port),
      before,
    );
    rt.update(rh, eps(1, 2, 3, 4));
    assert.notEqual(rt.balancer, lb, 'a new endpoint: a new ring');
    assert.ok(keys.some((k) => rt.pick(k)!.port === 4));
  });

  it('a changed endpoint (health, weight, metadata) or lb policy resets the balancer', () => {
    const rt = new ClusterRuntime('c', settings(), eps(1, 2), 'node-1', noOutliers);
    let lb = rt.balancer;
    const sick = eps(1, 2);
    sick[1]!.healthy = false;
    rt.update(settings(), sick);
    assert.notEqual(rt.balancer, lb);
    assert.deepEqual([rt.pick()!.port, rt.pick()!.port], [1, 1]);
    lb = rt.balancer;
    rt.update(settings({ balancer: { policy: 'LEAST_REQUEST' } }), sick);
    assert.notEqual(rt.balancer, lb);
    assert.equal(rt.balancer.policy, 'LEAST_REQUEST');
  });

  it('turning outlier detection on applies ejections without a rebuild', () => {
    const ejected = new Set<string>();
    const ctx: ClusterContext = {
      outliers: { report: () => {}, isEjected: (_c, k) => ejected.has(k) },
      worker: { index: 0, count: 1 },
    };
    const rt = new ClusterRuntime('c', settings(), eps(1, 2), 'node-1', ctx);
    ejected.add('10.1.1.1:2');
    assert.ok(
      [rt.pick(), rt.pick()].some((e) => e?.port === 2),
      'detection off: ejections ignored',
    );
    rt.update(settings({ outlier: { ...parseOutlier() } }), eps(1, 2));
    assert.deepEqual([rt.pick()!.port, rt.pick()!.port], [1, 1]);
  });
});

function parseOutlier() {
  return {
    consecutive5xx: 5,
    consecutiveGatewayFailure: 5,
    enforcingConsecutive5xx: 100,
    enforcingConsecutiveGatewayFailure: 0,
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 100,
  };
}

/** A MeshState with one outlier-detecting cluster of one endpoint, at the interval given. */
function outlierState(store: MeshStateStore, intervalMs: number) {
  const c = wire(CLUSTER_TYPE, {
    name: 'reviews-v1',
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: 'reviews-v1' },
    connect_timeout: { seconds: 1, nanos: 0 },
    outlier_detection: {
      consecutive_5xx: { value: 1 },
      interval: { seconds: Math.floor(intervalMs / 1000), nanos: (intervalMs % 1000) * 1_000_000 },
      base_ejection_time: { seconds: 0, nanos: 100_000_000 },
      max_ejection_percent: { value: 100 },
    },
  });
  return store.apply({
    clusters: [c, ...fixtureClusters.filter((x) => x.name === 'PassthroughCluster')],
    endpoints: [assignment('reviews-v1', [{ ip: '10.1.1.10', port: 9080, node: 'node-1', pod: 'a' }])],
  });
}

describe('OutlierRegistry: the sweep follows the configured interval', () => {
  it('interval 10 s -> 100 ms: an ejected endpoint is back within a few hundred ms', async () => {
    const store = new MeshStateStore();
    const reg = new OutlierRegistry(() => {});
    try {
      reg.update(outlierState(store, 10_000));
      reg.update(outlierState(store, 100));
      reg.report('reviews-v1', '10.1.1.10:9080', { kind: 'http', status: 503 });
      assert.ok(reg.isEjected('reviews-v1', '10.1.1.10:9080'));
      await new Promise((r) => setTimeout(r, 600));
      assert.ok(!reg.isEjected('reviews-v1', '10.1.1.10:9080'), 'restored by a 100 ms sweep');
    } finally {
      reg.close();
    }
  });

  it('an unchanged interval keeps its timer (the sweep is not pushed back by every update)', async () => {
    const store = new MeshStateStore();
    const reg = new OutlierRegistry(() => {});
    try {
      reg.update(outlierState(store, 200));
      reg.report('reviews-v1', '10.1.1.10:9080', { kind: 'http', status: 503 });
      // Updates every 50 ms: a timer restarted by each would never fire.
      for (let i = 0; i < 12; i++) {
        await new Promise((r) => setTimeout(r, 50));
        reg.update(outlierState(store, 200));
      }
      assert.ok(!reg.isEjected('reviews-v1', '10.1.1.10:9080'));
    } finally {
      reg.close();
    }
  });
});

describe('RemoteOutliers: a worker forgets clusters that left the config', () => {
  it('retain drops ejections of vanished clusters', () => {
    const r = new RemoteOutliers(() => {});
    r.setEjected('a', ['1:1']);
    r.setEjected('b', ['2:2']);
    r.retain(new Set(['a']));
    assert.ok(r.isEjected('a', '1:1'));
    assert.ok(!r.isEjected('b', '2:2'));
    assert.equal(r.size, 1);
  });
});
