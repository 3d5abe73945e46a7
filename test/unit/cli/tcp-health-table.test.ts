import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TcpPairHealth } from '../../../bpf-sockops/tcp-health.js';
import { formatMicros, tcpHealthTable } from '../../../cli/tcp-health-table.js';

const pair: TcpPairHealth = {
  source: { namespace: 'shop', workload: 'frontend-1' },
  destination: { namespace: 'shop', workload: 'reviews-v2-1' },
  leg: 'tunnel',
  connections: 2,
  failures: 0,
  retransmits: 17,
  rtos: 1,
  rttSamples: 10,
  srttMeanUs: 1530,
  srttUs: 1000,
  rttvarMeanUs: 240,
  rttvarUs: 100,
  srttSumUs: 15300,
  rttvarSumUs: 2400,
};

test('microseconds read as us below 1 ms, ms above, - without a sample', () => {
  assert.equal(formatMicros(0), '-');
  assert.equal(formatMicros(180), '180us');
  assert.equal(formatMicros(1530), '1.53ms');
  assert.equal(formatMicros(25_400), '25.4ms');
});

test('one row per node and pair, nodes that do not measure are named', () => {
  const text = tcpHealthTable([
    ['node1', { measured: true, pairs: [pair, { ...pair, leg: 'pod_proxy', destination: undefined }] }],
    ['node2', { measured: false, pairs: [] }],
    ['node3', undefined],
  ]);
  const lines = text.trimEnd().split('\n');
  assert.match(
    lines[0]!,
    /^NODE\s+LEG\s+SOURCE\s+DESTINATION\s+CONNS\s+FAILED\s+RETRANS\s+RTO\s+SRTT\s+JITTER$/,
  );
  assert.match(
    lines[1]!,
    /^node1\s+tunnel\s+shop\/frontend-1\s+shop\/reviews-v2-1\s+2\s+0\s+17\s+1\s+1\.53ms\s+240us$/,
  );
  assert.match(lines[2]!, /^node1\s+pod_proxy\s+shop\/frontend-1\s+unknown\s/);
  assert.equal(lines[3], '(not measured on node2, node3: agent run with --no-tcp-health or too old)');
});
