/**
 * The agent's side of permissive mode (mesh-agent/agent/permissive.ts) on a
 * real kernel: finding a pod's netns from its cgroup, taking its plaintext,
 * giving it back, and cleaning up what an earlier agent left for a pod that is
 * gone. Relaying itself is covered end to end in test/e2e/permissive.test.ts.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { SockopsDataplane } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode, LabPod } from '../../../lab/types.js';
import { nullLogger } from '../../../lib/log.js';
import { netnsOfCgroup, PermissiveInbound } from '../../../mesh-agent/agent/permissive.js';
import type { InboundServer } from '../../../mesh-agent/inbound/server.js';
import { addPods, Dialers, Fixtures, openDataplane, type runFixture } from '../bpf/helpers.js';

const PORT = 8080;

describe('permissive inbound in the agent (real BPF, real netns)', { timeout: 90_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let dp: SockopsDataplane | undefined;
  let permissive: PermissiveInbound | undefined;
  const pods: Record<string, LabPod> = {};
  const fixtures = new Fixtures();
  const handed: string[] = [];
  const spawn = (...args: Parameters<typeof runFixture>) => fixtures.spawn(...args);
  const dialers = new Dialers((from) => spawn(bed, from, 'dialer.ts', []));
  // Stands in for the InboundServer: records what it was handed and closes it.
  const inbound = {
    handlePlaintext: (socket: import('node:net').Socket) => {
      handed.push(`${socket.localAddress}:${socket.localPort}`);
      socket.destroy();
    },
  } as unknown as InboundServer;

  before(async () => {
    bed = await TestBed.create({ nodes: 1 });
    [node1] = bed.nodes as [LabNode];
    Object.assign(pods, await addPods(bed, 'permtest', { web: 'node1', gone: 'node1', peer: 'node1' }));
    dp = openDataplane(node1);
    const servers = ['web', 'gone'].map((n) =>
      spawn(bed, pods[n]!, 'echo-server.ts', ['--name', n, '--listen', `0.0.0.0:${PORT}`, '--greet-peer']),
    );
    const starting = dialers.start([pods.peer!]);
    for (const f of servers) await f.waitFor((e) => e.event === 'listening', 20_000, 'listening');
    await starting;
  });

  after(async () => {
    permissive?.stop();
    await fixtures.stopAll();
    try {
      dp?.detach();
    } finally {
      await bed?.destroy();
    }
  });

  test("a pod's netns is found from a process in its cgroup", () => {
    const path = netnsOfCgroup(pods.web!.cgroupPath);
    assert.ok(path, 'no netns found');
    assert.equal(
      statSync(path).ino,
      statSync(`/run/netns/${pods.web!.netns}`).ino,
      'the same network namespace',
    );
    assert.equal(netnsOfCgroup(pods.peer!.cgroupPath.replace(/peer$/, 'nobody')), undefined);
  });

  test("takes the wanted pods' plaintext and releases what an earlier agent left for a gone pod", async () => {
    // An earlier agent took `gone`, then died (its listener closed with it): the pod refuses plaintext.
    const earlier = dp!.captureInbound({ ip: pods.gone!.ip, netnsPath: `/run/netns/${pods.gone!.netns}` });
    (await import('node:fs')).closeSync(earlier);
    assert.equal((await dialers.dial(pods.peer!, `${pods.gone!.ip}:${PORT}`, 700)).code, 'ECONNREFUSED');

    permissive = new PermissiveInbound({ dataplane: dp!, inbound, log: nullLogger, retryMs: 100 });
    permissive.reconcile(new Map([['permtest/web', { ip: pods.web!.ip, cgroupDir: pods.web!.cgroupPath }]]));
    assert.deepEqual(permissive.pods(), ['permtest/web']);
    assert.deepEqual(dp!.inboundPods(), [pods.web!.ip]);
    // `gone` is back to plain delivery; `web` is handed to the agent with its original destination.
    assert.equal(
      (await dialers.dial(pods.peer!, `${pods.gone!.ip}:${PORT}`, 5000)).greeting,
      `gone from ${pods.peer!.ip}`,
    );
    await dialers.dial(pods.peer!, `${pods.web!.ip}:${PORT}`, 2000);
    assert.deepEqual(handed, [`${pods.web!.ip}:${PORT}`]);
  });

  test('a pod without a process yet is retried until it has one', async () => {
    const late = await bed.addPod({ name: 'late', namespace: 'permtest', node: 'node1' });
    const want = new Map([
      ['permtest/web', { ip: pods.web!.ip, cgroupDir: pods.web!.cgroupPath }],
      ['permtest/late', { ip: late.ip, cgroupDir: late.cgroupPath }],
    ]);
    permissive!.reconcile(want);
    assert.deepEqual(permissive!.pods(), ['permtest/web']);
    spawn(bed, late, 'echo-server.ts', ['--name', 'late', '--listen', `0.0.0.0:${PORT}`]);
    const deadline = Date.now() + 10_000;
    while (permissive!.pods().length < 2 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(permissive!.pods().sort(), ['permtest/late', 'permtest/web']);
  });

  test('released pods take plaintext directly again', async () => {
    permissive!.reconcile(new Map());
    assert.deepEqual(permissive!.pods(), []);
    assert.deepEqual(dp!.inboundPods(), []);
    assert.equal(
      (await dialers.dial(pods.peer!, `${pods.web!.ip}:${PORT}`, 5000)).greeting,
      `web from ${pods.peer!.ip}`,
    );
  });
});
