import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MeshView, type Scrape, splitsOf } from '../../../dashboard/model.js';
import { pushedRoutes } from '../fixtures/gateway-routes.js';

const V1 = 'outbound|9080||reviews-v1.shop.svc.cluster.local';
const V2 = 'outbound|9080||reviews-v2.shop.svc.cluster.local';

/** node1's agent after `n1` requests to v1 and `n2` to v2 from the frontend, and `d` denials of ratings. */
function metrics(n1: number, n2: number, d: number, tcp?: { retx: number; srtt: number }): string {
  const peer = (w: string, v: string, c: string) =>
    `reporter="source",source_workload="frontend-1",source_namespace="shop",source_principal="spiffe://cluster.local/ns/shop/sa/frontend",destination_service="reviews.shop",destination_workload="${w}",destination_namespace="shop",destination_version="${v}",destination_cluster="${c}"`;
  const lines = [
    '# TYPE sockmesh_requests_total counter',
    `sockmesh_requests_total{${peer('reviews-v1-1', 'v1', V1)},request_protocol="http",response_code="200",response_flags="-"} ${n1}`,
    `sockmesh_requests_total{${peer('reviews-v2-1', 'v2', V2)},request_protocol="http",response_code="200",response_flags="-"} ${n2}`,
    `sockmesh_request_duration_milliseconds_bucket{${peer('reviews-v1-1', 'v1', V1)},request_protocol="http",response_code="200",response_flags="-",le="1"} ${Math.floor(n1 / 2)}`,
    `sockmesh_request_duration_milliseconds_bucket{${peer('reviews-v1-1', 'v1', V1)},request_protocol="http",response_code="200",response_flags="-",le="5"} ${n1}`,
    `sockmesh_request_duration_milliseconds_bucket{${peer('reviews-v1-1', 'v1', V1)},request_protocol="http",response_code="200",response_flags="-",le="+Inf"} ${n1}`,
    // The destination's count of the same requests must not count twice.
    // (as the destination labels it: the caller by its SPIFFE ID only, its workload unknown)
    `sockmesh_requests_total{reporter="destination",source_workload="unknown",source_namespace="shop",source_principal="spiffe://cluster.local/ns/shop/sa/frontend",destination_workload="reviews-v1-1",destination_namespace="shop",destination_cluster="unknown",response_code="200",response_flags="-"} ${n1}`,
    `sockmesh_authz_denials_total{source_principal="spiffe://cluster.local/ns/shop/sa/ratings",destination_workload="reviews-v1-1",destination_namespace="shop",policy="default-deny"} ${d}`,
  ];
  if (tcp)
    lines.push(
      `sockmesh_tcp_health_retransmits_total{leg="tunnel",source_workload="frontend-1",source_namespace="shop",destination_workload="reviews-v2-1",destination_namespace="shop"} ${tcp.retx}`,
      `sockmesh_tcp_health_srtt_microseconds{leg="tunnel",source_workload="frontend-1",source_namespace="shop",destination_workload="reviews-v2-1",destination_namespace="shop"} ${tcp.srtt}`,
    );
  return `${lines.join('\n')}\n`;
}

const routes = (w1: number, w2: number) => [
  {
    name: 'reviews.shop.svc.cluster.local:9080',
    virtual_hosts: [
      {
        routes: [
          { name: 'shop/reviews/rule-0/match-0', route: { cluster: V2 } },
          {
            name: 'shop/reviews/rule-1/match-0',
            route: {
              weighted_clusters: {
                clusters: [
                  { name: V1, weight: { value: w1 } },
                  { name: V2, weight: { value: w2 } },
                ],
              },
            },
          },
        ],
      },
    ],
  },
];

function scrape(at: number, text: string, w: [number, number]): Scrape {
  return {
    at,
    agents: [
      {
        node: 'node1',
        metrics: text,
        status: {
          pods: [{ pod: 'shop/frontend-1', ip: '10.244.1.10', spiffeId: 'spiffe://x', mtls: 'strict' }],
        },
      },
      { node: 'node2', metrics: null, status: null },
    ],
    guards: [
      {
        name: 'shop/reviews',
        route: 'shop/reviews',
        canary: 'shop/reviews-v2',
        baseline: 'shop/reviews-v1',
        phase: 'Progressing',
        weight: w[1],
        writtenWeight: 10,
      },
    ],
    routes: routes(...w),
    version: '7',
  };
}

describe('MeshView', () => {
  it('turns counter deltas over the window into rates, success, p99 and live shares', () => {
    const view = new MeshView(10_000);
    const first = view.add(scrape(0, metrics(1000, 100, 3), [90, 10]));
    assert.equal(first.edges.find((e) => e.destination === 'shop/reviews-v1-1')?.rps, 0, 'no window yet');
    const s = view.add(scrape(2000, metrics(1180, 120, 3), [90, 10]));
    const v1 = s.edges.find((e) => e.destination === 'shop/reviews-v1-1')!;
    assert.equal(v1.source, 'shop/frontend-1');
    assert.equal(v1.requests, 180, 'counted once (reporter=source)');
    assert.deepEqual(
      s.edges.filter((e) => e.destination === 'shop/reviews-v1-1').map((e) => e.source),
      ['shop/frontend-1'],
      "the destination's count of a meshed caller is no second edge",
    );
    assert.equal(v1.rps, 90);
    assert.equal(v1.success, 1);
    assert.equal(v1.p99Ms, 5);
    assert.deepEqual(s.agents, [
      { node: 'node1', up: true },
      { node: 'node2', up: false },
    ]);
    const [split] = s.splits;
    assert.equal(split?.httpRoute, 'shop/reviews');
    assert.equal(split?.routeKind, 'HTTPRoute');
    assert.equal(split?.rule, 1);
    assert.deepEqual(
      split?.backends.map((b) => [b.service, b.weight, b.share]),
      [
        ['reviews-v1.shop', 90, 90],
        ['reviews-v2.shop', 10, 10],
      ],
    );
    assert.equal(split?.guard?.phase, 'Progressing');
    // The live share is what was counted, not the weight.
    const skewed = view.add(scrape(4000, metrics(1250, 150, 3), [90, 10]));
    assert.deepEqual(
      skewed.splits[0]?.backends.map((b) => [b.weight, b.share]),
      [
        [90, 100 * (250 / 300)],
        [10, 100 * (50 / 300)],
      ].map(([w, sh]) => [w, Math.round(10 * sh!) / 10]),
    );
  });

  it('follows a weight change and keeps the window sliding', () => {
    const view = new MeshView(2_000);
    view.add(scrape(0, metrics(0, 0, 0), [90, 10]));
    view.add(scrape(1000, metrics(90, 10, 0), [90, 10]));
    view.add(scrape(2000, metrics(180, 20, 0), [50, 50]));
    view.add(scrape(3000, metrics(230, 70, 0), [50, 50]));
    const s = view.add(scrape(4000, metrics(280, 120, 0), [50, 50]));
    assert.equal(s.windowSeconds, 2);
    assert.deepEqual(
      s.splits[0]?.backends.map((b) => [b.weight, b.share]),
      [
        [50, 50],
        [50, 50],
      ],
    );
  });

  it('keeps recent denials, one row per caller, destination and policy, newest first', () => {
    const view = new MeshView();
    view.add(scrape(0, metrics(0, 0, 0), [90, 10]));
    view.add(scrape(1000, metrics(0, 0, 2), [90, 10]));
    const s = view.add(scrape(2000, metrics(0, 0, 5), [90, 10]));
    assert.deepEqual(
      s.denials.map((d) => [d.source, d.destination, d.policy, d.count, d.at]),
      [
        [
          'spiffe://cluster.local/ns/shop/sa/ratings',
          'shop/reviews-v1-1',
          'default-deny',
          5,
          new Date(2000).toISOString(),
        ],
      ],
    );
  });

  it('puts kernel TCP health on the edge of its pair when the agents export it, and nothing when not', () => {
    const view = new MeshView();
    view.add(scrape(0, metrics(0, 0, 0, { retx: 4, srtt: 300 }), [90, 10]));
    const s = view.add(scrape(1000, metrics(0, 10, 0, { retx: 9, srtt: 350 }), [90, 10]));
    assert.deepEqual(s.edges.find((e) => e.destination === 'shop/reviews-v2-1')?.tcp, {
      srttUs: 350,
      rttvarUs: 0,
      retransmits: 5,
      rtos: 0,
      failures: 0,
    });
    assert.equal(s.edges.find((e) => e.destination === 'shop/reviews-v1-1')?.tcp, null);
  });

  it("names a split's route with its kind: a GRPCRoute's and an HTTPRoute's, as the control plane pushes them", () => {
    assert.deepEqual(
      splitsOf(pushedRoutes())
        .map((s) => [s.httpRoute, s.routeKind, s.rule, s.clusters.map((c) => c.weight)])
        .sort(),
      [
        ['shop/greeter', 'GRPCRoute', 0, [90, 10]],
        ['shop/greeter-web', 'HTTPRoute', 0, [90, 10]],
      ],
    );
  });

  it('reads weighted rules only from the pushed routes', () => {
    assert.deepEqual(
      splitsOf(routes(3, 1)).map((s) => [s.httpRoute, s.rule, s.clusters.map((c) => c.weight)]),
      [['shop/reviews', 1, [3, 1]]],
    );
  });
});
