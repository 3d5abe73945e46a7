/**
 * TCP health against a real kernel: node1's dataplane, two tagged connections
 * from node1 to node2 over the underlay, and a tc classifier (this kernel
 * has no netem) that drops a share of one connection's packets as they arrive at node2 (clsact ingress on node2's
 * eth0: a drop at node1's own egress would be a local transmit failure TCP
 * sends again as new data, not a retransmit). Only that pair's retransmits
 * may rise.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { SockopsDataplane, TcpPairHealth } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode } from '../../../lab/types.js';
import { LossInjector } from '../../helpers/loss.js';
import { Fixtures, openDataplane, runToEnd } from './helpers.js';

const LOSSY_PORT = 7101;
const CLEAN_PORT = 7102;
const REFUSED_PORT = 7103;

describe('TCP health per workload pair', { timeout: 120_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let node2: LabNode;
  let dp: SockopsDataplane | undefined;
  let loss: LossInjector | undefined;
  const fixtures = new Fixtures();

  const pair = (dst: string): TcpPairHealth | undefined =>
    dp!.tcpHealth
      .read()
      .find(
        (p) =>
          p.leg === 'tunnel' &&
          p.source?.namespace === 'shop' &&
          p.source.workload === 'frontend' &&
          p.destination?.workload === dst,
      );
  const traffic = async (ms: number) => {
    const events = await runToEnd(
      bed,
      node1,
      'tcp-pairs.ts',
      [
        'client',
        node1.bpffsDir,
        String(ms),
        `${node2.underlayIp}:${LOSSY_PORT}=shop/frontend>shop/reviews-v2`,
        `${node2.underlayIp}:${CLEAN_PORT}=shop/frontend>shop/ratings`,
      ],
      ms + 30_000,
    );
    assert.equal(events.filter((e) => e.event === 'done').length, 2, JSON.stringify(events));
  };

  before(async () => {
    bed = await TestBed.create({ nodes: 2 });
    [node1, node2] = bed.nodes as [LabNode, LabNode];
    dp = openDataplane(node1);
    dp.tcpHealth.setEnabled(true);
    const server = fixtures.spawn(bed, node2, 'tcp-pairs.ts', [
      'server',
      node2.underlayIp,
      String(LOSSY_PORT),
      String(CLEAN_PORT),
    ]);
    await server.waitFor((e) => e.event === 'listening', 20_000, 'listening');

    loss = LossInjector.attach({
      pinDir: join(bed.bpffsRoot, 'loss'),
      netns: node2.netns,
      dev: 'eth0',
      direction: 'ingress',
    });
  });

  after(async () => {
    await fixtures.stopAll();
    loss?.close();
    try {
      dp?.detach();
    } finally {
      await bed?.destroy();
    }
  });

  test('without loss, both pairs are measured with RTT and no retransmits', async () => {
    await traffic(1000);
    for (const dst of ['reviews-v2', 'ratings']) {
      const p = pair(dst);
      assert.ok(p, `no statistics for frontend -> ${dst}: ${JSON.stringify(dp!.tcpHealth.read())}`);
      assert.equal(p.connections, 1);
      assert.ok(p.rttSamples > 10, `${dst}: ${p.rttSamples} RTT samples`);
      assert.ok(p.srttMeanUs > 0, `${dst}: mean srtt ${p.srttMeanUs}`);
      assert.ok(p.retransmits <= 2, `${dst} retransmitted ${p.retransmits} segments without loss`); // ~0: a spurious tail loss probe
      assert.equal(p.failures, 0);
      assert.equal(p.destination?.namespace, 'shop');
    }
  });

  test('loss on the link for one pair raises its retransmits only', async (t) => {
    const before = { lossy: pair('reviews-v2')!, clean: pair('ratings')! };
    // 5% of the lossy connection's segments from node1 never reach node2: node1 retransmits.
    loss!.set(LOSSY_PORT, 50);
    let counters: { seen: bigint; dropped: bigint };
    try {
      await traffic(3000);
    } finally {
      counters = loss!.counters();
      loss!.set(0, 0);
    }
    const lossy = pair('reviews-v2')!;
    const clean = pair('ratings')!;
    const { dropped, seen } = counters;
    assert.ok(dropped > 0n, `the injector dropped nothing (saw ${seen} packets of the port)`);
    assert.ok(
      lossy.retransmits - before.lossy.retransmits >= 10,
      `lossy pair: ${before.lossy.retransmits} -> ${lossy.retransmits} retransmits (${dropped} packets dropped): ${JSON.stringify(dp!.tcpHealth.read())}`,
    );
    const lossyRetrans = lossy.retransmits - before.lossy.retransmits;
    const cleanRetrans = clean.retransmits - before.clean.retransmits;
    t.diagnostic(`retransmits: lossy ${lossyRetrans}, clean ${cleanRetrans}; ${dropped} of ${seen} dropped`);
    // ~0, not 0: on a loaded machine a tail loss probe can fire before a late ACK (a spurious retransmit).
    assert.ok(
      cleanRetrans <= 2 && cleanRetrans * 10 <= lossyRetrans,
      `the clean pair retransmitted ${cleanRetrans} segments (lossy: ${lossyRetrans})`,
    );
    assert.equal(lossy.connections, 2);
    assert.equal(clean.connections, 2);
  });

  test('a refused connect counts as a failure of the pair it was dialled for', async () => {
    const events = await runToEnd(bed, node1, 'tcp-pairs.ts', [
      'dial',
      node1.bpffsDir,
      node1.underlayIp,
      `${node2.underlayIp}:${REFUSED_PORT}=shop/frontend>shop/details`,
    ]);
    assert.equal(events[0]?.ok, false, 'nothing listens there: the connect must fail');
    const p = pair('details');
    assert.ok(p, 'no statistics for the failed pair');
    assert.equal(p.failures, 1);
    assert.equal(p.connections, 0);
  });
});
