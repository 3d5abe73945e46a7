import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canaryWindow, parseExposition } from '../../../cli/commands/canary.js';

const V1 = 'outbound|9080||reviews-v1.shop.svc.cluster.local';
const V2 = 'outbound|9080||reviews-v2.shop.svc.cluster.local';
const BACKENDS = [
  { name: 'reviews-v1', cluster: V1, weight: 90 },
  { name: 'reviews-v2', cluster: V2, weight: 10 },
];

function scrape(
  v1: { ok: number; err: number; buckets: number[] },
  v2: { ok: number; err: number; buckets: number[] },
): string {
  const lines = ['# HELP sockmesh_requests_total x', '# TYPE sockmesh_requests_total counter'];
  for (const [cluster, s] of [
    [V1, v1],
    [V2, v2],
  ] as const) {
    lines.push(
      `sockmesh_requests_total{reporter="source",destination_cluster="${cluster}",response_code="200"} ${s.ok}`,
    );
    lines.push(
      `sockmesh_requests_total{reporter="source",destination_cluster="${cluster}",response_code="503"} ${s.err}`,
    );
    // A destination-side series must not be counted twice.
    lines.push(
      `sockmesh_requests_total{reporter="destination",destination_cluster="${cluster}",response_code="200"} 999`,
    );
    const les = ['1', '5', '10', '+Inf'];
    for (const [i, n] of s.buckets.entries()) {
      lines.push(
        `sockmesh_request_duration_milliseconds_bucket{reporter="source",destination_cluster="${cluster}",le="${les[i]}"} ${n}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

describe('sockmesh canary arithmetic', () => {
  it('parses Prometheus exposition with escaped label values', () => {
    const m = parseExposition('a{x="q\\"uote",y="b"} 3\nb 4\n# c\n', new Set(['a', 'b']));
    assert.deepEqual(m.get('a'), [{ labels: { x: 'q"uote', y: 'b' }, value: 3 }]);
    assert.deepEqual(m.get('b'), [{ labels: {}, value: 4 }]);
  });

  it('computes share, success rate and quantiles over the window between two scrapes', () => {
    const before = scrape(
      { ok: 100, err: 0, buckets: [50, 90, 100, 100] },
      { ok: 10, err: 0, buckets: [0, 5, 10, 10] },
    );
    // In the window: v1 +90 ok (80 under 1 ms, 9 under 5, 1 under 10); v2 +8 ok +2 errors (all between 5 and 10 ms).
    const after = scrape(
      { ok: 190, err: 0, buckets: [130, 189, 190, 190] },
      { ok: 18, err: 2, buckets: [0, 5, 20, 20] },
    );
    const [v1, v2] = canaryWindow([before], [after], BACKENDS);
    assert.equal(v1?.requests, 90);
    assert.equal(v2?.requests, 10);
    assert.equal(v1?.share, 0.9);
    assert.equal(v2?.successRate, 0.8);
    assert.equal(v1?.p50, 1);
    assert.equal(v1?.p99, 5);
    assert.equal(v2?.p50, 10);
  });

  it('sums the same backend over every node and reports an idle backend as such', () => {
    const idle = scrape({ ok: 0, err: 0, buckets: [0, 0, 0, 0] }, { ok: 0, err: 0, buckets: [0, 0, 0, 0] });
    const busy = scrape({ ok: 5, err: 0, buckets: [5, 5, 5, 5] }, { ok: 0, err: 0, buckets: [0, 0, 0, 0] });
    const [v1, v2] = canaryWindow([idle, idle], [busy, busy], BACKENDS);
    assert.equal(v1?.requests, 10);
    assert.equal(v1?.share, 1);
    assert.equal(v2?.requests, 0);
    assert.equal(v2?.successRate, null);
    assert.equal(v2?.p99, null);
  });
});
