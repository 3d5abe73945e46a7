/**
 * TCP health against a real kernel: node1's dataplane, two tagged connections
 * from node1 to node2 over the underlay, and a tc classifier (this kernel
 * has no netem) that drops a share of one connection's packets as they arrive at node2 (clsact ingress on node2's
 * eth0: a drop at node1's own egress would be a local transmit failure TCP
 * sends again as new data, not a retransmit). Only that pair's retransmits
 * may rise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BPF_ANY, loadAddon, OBJ_DIR } from '../../../bpf-sockops/addon.js';
import type { SockopsDataplane, TcpPairHealth } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode } from '../../../lab/types.js';
import { Fixtures, openDataplane, runToEnd } from './helpers.js';

const LOSSY_PORT = 7101;
const CLEAN_PORT = 7102;
const REFUSED_PORT = 7103;

/** The loss injector's one config entry: port, drop share in per mille, then counters. */
function lossConfig(port: number, perMille: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(port, 0);
  b.writeUInt16LE(perMille, 2);
  return b;
}

describe('TCP health per workload pair', { timeout: 120_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let node2: LabNode;
  let dp: SockopsDataplane | undefined;
  let lossMap = -1;
  const fixtures = new Fixtures();
  const addon = loadAddon();

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

    // The injector: loaded and pinned under this bed's bpffs root (removed with the bed).
    const pinDir = join(bed.bpffsRoot, 'loss');
    mkdirSync(pinDir, { recursive: true });
    const loaded = addon.loadObject(join(OBJ_DIR, 'test', 'loss.bpf.o'), pinDir);
    const prog = loaded.progs.find((p) => p.name === 'sm_test_drop');
    assert.ok(prog, 'loss injector not built (npm run build:bpf)');
    addon.objPin(prog.fd, join(pinDir, 'prog'));
    for (const p of loaded.progs) addon.close(p.fd);
    for (const m of loaded.maps) {
      if (m.name === 'sm_test_loss') lossMap = m.fd;
      else addon.close(m.fd);
    }
    for (const argv of [
      ['qdisc', 'add', 'dev', 'eth0', 'clsact'],
      [
        'filter',
        'add',
        'dev',
        'eth0',
        'ingress',
        'bpf',
        'direct-action',
        'object-pinned',
        join(pinDir, 'prog'),
      ],
    ]) {
      // nsenter, not `ip netns exec`: that remounts /sys and would hide the pinned program.
      const r = spawnSync('nsenter', [`--net=/run/netns/${node2.netns}`, 'tc', ...argv], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, `tc ${argv.join(' ')}: ${r.stderr}`);
    }
  });

  after(async () => {
    await fixtures.stopAll();
    if (lossMap >= 0) addon.close(lossMap);
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
      assert.equal(p.retransmits, 0, `${dst} retransmitted without loss`);
      assert.equal(p.failures, 0);
      assert.equal(p.destination?.namespace, 'shop');
    }
  });

  test('loss on the link for one pair raises its retransmits only', async () => {
    const before = { lossy: pair('reviews-v2')!, clean: pair('ratings')! };
    // 5% of the lossy connection's segments from node1 never reach node2: node1 retransmits.
    addon.mapUpdate(lossMap, Buffer.alloc(4), lossConfig(LOSSY_PORT, 50), BPF_ANY);
    let counters: Buffer | null;
    try {
      await traffic(3000);
    } finally {
      counters = addon.mapLookup(lossMap, Buffer.alloc(4), 24);
      addon.mapUpdate(lossMap, Buffer.alloc(4), lossConfig(0, 0), BPF_ANY);
    }
    const lossy = pair('reviews-v2')!;
    const clean = pair('ratings')!;
    const dropped = counters!.readBigUInt64LE(8);
    const seen = counters!.readBigUInt64LE(16);
    assert.ok(dropped > 0n, `the injector dropped nothing (saw ${seen} packets of the port)`);
    assert.ok(
      lossy.retransmits - before.lossy.retransmits >= 5,
      `lossy pair: ${before.lossy.retransmits} -> ${lossy.retransmits} retransmits (${dropped} packets dropped): ${JSON.stringify(dp!.tcpHealth.read())}`,
    );
    assert.equal(clean.retransmits, before.clean.retransmits, 'the clean pair retransmitted');
    assert.equal(clean.rtos, before.clean.rtos);
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
