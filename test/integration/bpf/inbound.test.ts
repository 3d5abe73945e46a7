/**
 * Inbound plaintext of a permissive pod against a real kernel: sk_lookup in the
 * pod's netns hands every TCP connection for the pod that does not come from
 * the node proxy to the proxy's listener inside that netns (15006), with the
 * pod's own address as the accepted socket's local end. The stand-in proxy is
 * a separate process in the node netns (as the agent is) that relays to that
 * address, so the workload sees the proxy as its peer.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Counters, INBOUND_PLAINTEXT_PORT, type SockopsDataplane } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode, LabPod, LabTarget } from '../../../lab/types.js';
import { addPods, Dialers, type Fixture, Fixtures, openDataplane, type runFixture } from './helpers.js';

const PORT = 8080;
const REFUSED_WITHIN_MS = 700;
const ALLOWED_WITHIN_MS = 5_000;

describe('bpf-sockops inbound plaintext capture (permissive pods, sk_lookup)', { timeout: 90_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let dp: SockopsDataplane | undefined;
  const pods: Record<string, LabPod> = {};
  const fixtures = new Fixtures();
  const dialers = new Dialers((from) => spawn(bed, from, 'dialer.ts', []));
  let proxy: Fixture | undefined;

  const spawn = (...args: Parameters<typeof runFixture>) => fixtures.spawn(...args);
  const dial = (from: LabTarget, to: string, timeout: number) => dialers.dial(from, to, timeout);
  const greeting = async (from: LabTarget, to: string) => {
    const r = await dial(from, to, ALLOWED_WITHIN_MS);
    assert.ok(r.ok, `${to} should answer, got ${r.code}`);
    return r.greeting;
  };
  const delta = (then: Counters, k: keyof Counters) => Number(dp!.counters()[k] - then[k]);
  const netnsPath = (pod: LabPod) => `/run/netns/${pod.netns}`;
  const startProxy = async () => {
    proxy = spawn(bed, node1, 'inbound-proxy.ts', [
      node1.cgroupPath,
      node1.bpffsDir,
      pods.web!.ip,
      netnsPath(pods.web!),
    ]);
    await proxy.waitFor((e) => e.event === 'listening', 20_000, 'inbound proxy listening');
    return proxy;
  };

  before(async () => {
    bed = await TestBed.create({ nodes: 2 });
    [node1] = bed.nodes as [LabNode, LabNode];
    Object.assign(pods, await addPods(bed, 'inboundtest', { web: 'node1', peer: 'node1', far: 'node2' }));
    dp = openDataplane(node1);
    // Outbound capture skips this port, so the meshed pod can dial itself directly.
    dp.setExclusions({ ports: [PORT], cidrs: [] });
    dp.enrolPod(pods.web!.cgroupId, { mode: 'permissive' });
    const servers = ['web', 'peer'].map((n) =>
      spawn(bed, pods[n]!, 'echo-server.ts', ['--name', n, '--listen', `0.0.0.0:${PORT}`, '--greet-peer']),
    );
    const starting = dialers.start([node1, pods.peer!, pods.far!, pods.web!]);
    for (const f of servers) await f.waitFor((e) => e.event === 'listening', 20_000, 'listening');
    await starting;
  });

  after(async () => {
    await fixtures.stopAll();
    try {
      dp?.detach();
    } finally {
      await bed?.destroy();
    }
  });

  test('plaintext from a pod on this node and from another node reaches the pod through the proxy', async () => {
    await startProxy();
    assert.deepEqual(dp!.inboundPods(), [pods.web!.ip]);
    const c0 = dp!.counters();
    const web = `${pods.web!.ip}:${PORT}`;
    for (const from of [pods.peer!, pods.far!]) {
      // The workload's peer is the proxy (node1's bridge address), not the caller.
      assert.equal(await greeting(from, web), `web from ${node1.gatewayIp}`);
      const acc = await proxy!.waitFor(
        (e) => e.event === 'accept' && String(e.from).startsWith(`${from.ip}:`),
        5_000,
        `proxy accept from ${from.ip}`,
      );
      assert.equal(acc.orig, web, 'the accepted socket keeps the original destination');
    }
    assert.ok(delta(c0, 'inboundCaptured') >= 2, 'inboundCaptured did not rise');
  });

  test('the proxy itself, the pod itself and other pods are not captured', async () => {
    const seen = proxy!.events.length;
    assert.equal(await greeting(node1, `${pods.web!.ip}:${PORT}`), `web from ${node1.gatewayIp}`);
    assert.equal(await greeting(pods.web!, `${pods.web!.ip}:${PORT}`), `web from ${pods.web!.ip}`);
    assert.equal(await greeting(pods.web!, `127.0.0.1:${PORT}`), 'web from 127.0.0.1');
    assert.equal(await greeting(pods.far!, `${pods.peer!.ip}:${PORT}`), `peer from ${pods.far!.ip}`);
    assert.deepEqual(
      proxy!.events.slice(seen).filter((e) => e.event === 'accept'),
      [],
    );
  });

  test('without its listener the pod refuses plaintext (fail closed), and a new listener takes over', async () => {
    await proxy!.stop();
    const c0 = dp!.counters();
    const r = await dial(pods.peer!, `${pods.web!.ip}:${PORT}`, REFUSED_WITHIN_MS);
    assert.equal(r.ok, false, 'plaintext got through without the proxy');
    // sk_lookup's drop answers the SYN with a reset.
    assert.equal(r.code, 'ECONNREFUSED');
    assert.ok(delta(c0, 'inboundRefused') >= 1, 'inboundRefused did not rise');
    // The proxy's own deliveries never depended on the listener.
    assert.equal(await greeting(node1, `${pods.web!.ip}:${PORT}`), `web from ${node1.gatewayIp}`);
    await startProxy();
    assert.equal(await greeting(pods.peer!, `${pods.web!.ip}:${PORT}`), `web from ${node1.gatewayIp}`);
  });

  test('released, the pod takes plaintext directly again; detach removes the netns attachment', async () => {
    const pin = join(node1.bpffsDir, 'links', `inbound-${pods.web!.ip.replaceAll('.', '-')}`);
    assert.ok(existsSync(pin), 'the sk_lookup link is pinned');
    assert.equal(dp!.releaseInbound(pods.web!.ip), true);
    assert.ok(!existsSync(pin));
    assert.deepEqual(dp!.inboundPods(), []);
    assert.equal(await greeting(pods.peer!, `${pods.web!.ip}:${PORT}`), `web from ${pods.peer!.ip}`);
    assert.equal(INBOUND_PLAINTEXT_PORT, 15006);
  });
});
