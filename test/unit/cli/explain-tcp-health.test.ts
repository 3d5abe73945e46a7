import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseExposition } from '../../../cli/commands/canary.js';
import { tcpHealthOf } from '../../../cli/explain/model.js';

const pair = (leg: string, dst: string) =>
  `leg="${leg}",source_workload="frontend-1",source_namespace="shop",destination_workload="${dst}",destination_namespace="shop"`;
const TEXT = [
  `sockmesh_tcp_health_retransmits_total{${pair('tunnel', 'reviews-v2-1')}} 7`,
  `sockmesh_tcp_health_connections_total{${pair('tunnel', 'reviews-v2-1')}} 3`,
  `sockmesh_tcp_health_srtt_microseconds{${pair('tunnel', 'reviews-v2-1')}} 420`,
  `sockmesh_tcp_health_retransmits_total{${pair('pod_proxy', 'reviews-v2-1')}} 1`,
  `sockmesh_tcp_health_retransmits_total{${pair('tunnel', 'ratings-1')}} 9`,
  `sockmesh_tcp_health_retransmits_total{leg="tunnel",source_workload="ratings-1",source_namespace="shop",destination_workload="reviews-v2-1",destination_namespace="shop"} 5`,
].join('\n');

const NAMES = new Set([
  'sockmesh_tcp_health_retransmits_total',
  'sockmesh_tcp_health_connections_total',
  'sockmesh_tcp_health_srtt_microseconds',
]);
const samples = (text: string) =>
  [...parseExposition(text, NAMES)].flatMap(([name, list]) => list.map((x) => ({ name, ...x })));

describe('explain: kernel TCP health of the pair', () => {
  it('takes the source -> destination pairs only, one entry per leg', () => {
    assert.deepEqual(tcpHealthOf(samples(TEXT), 'shop/frontend-1', ['shop/reviews-v2-1']), [
      {
        destination: 'shop/reviews-v2-1',
        leg: 'pod_proxy',
        connections: 0,
        failures: 0,
        retransmits: 1,
        rtos: 0,
        srttUs: null,
        rttvarUs: null,
      },
      {
        destination: 'shop/reviews-v2-1',
        leg: 'tunnel',
        connections: 3,
        failures: 0,
        retransmits: 7,
        rtos: 0,
        srttUs: 420,
        rttvarUs: null,
      },
    ]);
  });
  it('is null when the agent exports no TCP health, empty when it has none for this pair', () => {
    assert.equal(
      tcpHealthOf(samples('sockmesh_requests_total{a="b"} 1\n'), 'shop/frontend-1', ['shop/ratings-1']),
      null,
    );
    assert.deepEqual(tcpHealthOf(samples(TEXT), 'shop/legacy-1', ['shop/ratings-1']), []);
  });
});
