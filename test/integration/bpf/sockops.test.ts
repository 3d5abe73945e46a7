/**
 * The kernel dataplane against a real kernel: a two-node test bed, the programs
 * attached to node1's cgroup, and a stand-in proxy in node1's netns (system
 * cgroup) that reads original destinations through the pinned map.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadAddon } from '../../../bpf-sockops/addon.js';
import { type Counters, SockopsDataplane } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode, LabPod } from '../../../lab/types.js';
import { eventually, type Fixture, Fixtures, type runFixture, runToEnd } from './helpers.js';

const PROXY_PORT = 15001;
const VIP = '10.96.0.10:80';
// The proxy answers in two writes, 120 000 bytes and the rest: the first fills
// most of the pod's receive buffer, so the second would fall back to TCP, and is
// small enough that the FIN behind it is not held back by the window.
const REPLY_BYTES = 140_000;

describe('bpf-sockops dataplane', { timeout: 240_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let node2: LabNode;
  let dp: SockopsDataplane | undefined;
  let dp2: SockopsDataplane | undefined;
  const pods: Record<string, LabPod> = {};
  const fixtures = new Fixtures();
  let proxy: Fixture;
  let startSizes: Record<string, number>;

  const spawn = (...args: Parameters<typeof runFixture>) => fixtures.spawn(...args);
  const connect = async (pod: LabPod | LabNode, target: string) => {
    const [ev] = await runToEnd(bed, pod, 'client.ts', ['connect', target, 'ping']);
    assert.ok(ev, 'client printed nothing');
    return ev as { local: string; greeting: string; reply: string };
  };
  const proxyAcceptFor = (local: string) =>
    proxy.waitFor((e) => e.event === 'accept' && e.peer === local, 10_000, `proxy accept of ${local}`);
  const delta = (then: Counters, now: Counters, k: keyof Counters) => Number(now[k] - then[k]);

  before(async () => {
    bed = await TestBed.create({ nodes: 2 });
    [node1, node2] = bed.nodes as [LabNode, LabNode];
    for (const [name, node] of [
      ['client', 'node1'],
      ['plain', 'node1'],
      ['toggle', 'node1'],
      ['local', 'node1'],
      ['slow', 'node1'],
      ['remote', 'node2'],
    ] as const) {
      pods[name] = await bed.addPod({ name, namespace: 'bpftest', node });
    }
    dp = SockopsDataplane.open({ cgroupPath: node1.cgroupPath, bpffsDir: node1.bpffsDir });
    // A second node's dataplane in the same kernel must not interfere with node1's.
    dp2 = SockopsDataplane.open({ cgroupPath: node2.cgroupPath, bpffsDir: node2.bpffsDir });
    dp.setProxy({ ip: node1.gatewayIp, port: PROXY_PORT });
    dp.enrolPod(pods.client!.cgroupId);
    startSizes = dp.connectionMapSizes();

    proxy = spawn(bed, node1, 'echo-server.ts', [
      '--name',
      'proxy',
      '--listen',
      `${node1.gatewayIp}:${PROXY_PORT}`,
      '--orig-dst',
      node1.bpffsDir,
      // Connections to port 7777 stand for a proxy that is slower than the pod.
      '--pause-port',
      '7777',
      '--pause-ms',
      '1500',
      // Connections to port 7778 are request/response: the answer follows the client's EOF.
      ...['--reply-port', '7778'],
      // Connections to port 7779 get a flood once the client has half-closed.
      ...['--push-port', '7779', '--push-bytes', String(64 * 1024 * 1024)],
    ]);
    const servers = [
      spawn(bed, pods.local!, 'echo-server.ts', ['--name', 'local', '--listen', `${pods.local!.ip}:8080`]),
      spawn(bed, pods.remote!, 'echo-server.ts', ['--name', 'remote', '--listen', `${pods.remote!.ip}:8080`]),
      spawn(bed, pods.slow!, 'echo-server.ts', [
        ...['--name', 'slow', '--listen', `${pods.slow!.ip}:8080`],
        ...['--pause-all', '--pause-ms', '1500'],
      ]),
    ];
    for (const f of [proxy, ...servers]) await f.waitFor((e) => e.event === 'listening', 20_000, 'listening');
  });

  after(async () => {
    await fixtures.stopAll();
    try {
      dp?.detach();
    } finally {
      try {
        dp2?.detach();
      } finally {
        await bed?.destroy();
      }
    }
  });

  test('a meshed pod reaches the proxy for a VIP, a same-node pod and another-node pod, with each original destination', async () => {
    const c0 = dp!.counters();
    for (const dest of [VIP, `${pods.local!.ip}:8080`, `${pods.remote!.ip}:8080`]) {
      const res = await connect(pods.client!, dest);
      assert.equal(res.greeting, 'proxy', `connect to ${dest} should land on the proxy`);
      assert.equal(res.reply, 'ping');
      const acc = await proxyAcceptFor(res.local);
      assert.equal(acc.orig, dest);
    }
    const c1 = dp!.counters();
    assert.equal(delta(c0, c1, 'connectsRedirected'), 3);
    assert.equal(delta(c0, c1, 'connectionsTracked'), 3);
    // What a reset-before-accept socket reports, or garbage: not found, never a throw.
    assert.equal(dp!.lookup(undefined, undefined, node1.gatewayIp, PROXY_PORT), undefined);
    assert.equal(dp!.lookup('not-an-ip', 1, node1.gatewayIp, PROXY_PORT), undefined);
    assert.equal(dp!.lookup('fd00::1', 1, node1.gatewayIp, PROXY_PORT), undefined);
  });

  test('an unmeshed pod and the proxy’s own connections are not redirected', async () => {
    const c0 = dp!.counters();
    for (const dest of [`${pods.local!.ip}:8080`, `${pods.remote!.ip}:8080`]) {
      assert.equal(
        (await connect(pods.plain!, dest)).greeting,
        dest.startsWith(pods.local!.ip) ? 'local' : 'remote',
      );
      // node1 netns + system cgroup: where the proxy itself runs.
      assert.equal(
        (await connect(node1, dest)).greeting,
        dest.startsWith(pods.local!.ip) ? 'local' : 'remote',
      );
    }
    const c1 = dp!.counters();
    assert.equal(delta(c0, c1, 'connectsRedirected'), 0);
    // proxy -> local pod is a same-node pair, but the pod is not in the mesh: only
    // the proxy's end enters the sockhash, the pod's socket is not touched (the
    // connection to the other node leaves from the underlay address, not the proxy's).
    assert.equal(delta(c0, c1, 'socketsAccelerated'), 1, 'only the proxy end');
  });

  test('the proxy and an enrolled local pod are accelerated at both ends', async () => {
    dp!.enrolPod(pods.local!.cgroupId);
    try {
      const c0 = dp!.counters();
      assert.equal((await connect(node1, `${pods.local!.ip}:8080`)).greeting, 'local');
      assert.equal(delta(c0, dp!.counters(), 'socketsAccelerated'), 2);
    } finally {
      dp!.removePod(pods.local!.cgroupId);
    }
  });

  test('excluded ports and CIDRs, loopback and the proxy’s own address are not redirected', async () => {
    const loop = spawn(bed, pods.client!, 'echo-server.ts', [
      '--name',
      'loopback',
      '--listen',
      '127.0.0.1:9000',
    ]);
    await loop.waitFor((e) => e.event === 'listening', 20_000, 'listening');
    dp!.setExclusions({ ports: [8080], cidrs: ['10.96.0.0/12'] });
    try {
      assert.deepEqual(dp!.exclusions(), { ports: [8080], cidrs: ['10.96.0.0/12'] });
      const c0 = dp!.counters();
      assert.equal((await connect(pods.client!, `${pods.local!.ip}:8080`)).greeting, 'local');
      assert.equal((await connect(pods.client!, '127.0.0.1:9000')).greeting, 'loopback');
      const own = await connect(pods.client!, `${node1.gatewayIp}:${PROXY_PORT}`);
      assert.equal(own.greeting, 'proxy');
      assert.equal(
        (await proxyAcceptFor(own.local)).orig,
        null,
        'a direct connection has no original destination',
      );
      await assert.rejects(connect(pods.client!, VIP), /ECONNREFUSED|ENETUNREACH|EHOSTUNREACH|exited/);
      assert.equal(delta(c0, dp!.counters(), 'connectsRedirected'), 0);
    } finally {
      dp!.setExclusions({ ports: [], cidrs: [] });
      await loop.stop();
    }
    assert.deepEqual(dp!.exclusions(), { ports: [], cidrs: [] });
    assert.equal((await connect(pods.client!, VIP)).greeting, 'proxy');
  });

  test('enrolling and removing a running pod changes its next connection only', async () => {
    const pod = pods.toggle!;
    const direct = spawn(bed, pod, 'client.ts', ['hold', `${pods.local!.ip}:8080`]);
    assert.equal((await direct.waitFor((e) => e.event === 'greeting')).greeting, 'local');

    dp!.enrolPod(pod.cgroupId);
    assert.ok(dp!.pods().includes(pod.cgroupId));
    assert.equal((await connect(pod, `${pods.local!.ip}:8080`)).greeting, 'proxy');
    const captured = spawn(bed, pod, 'client.ts', ['hold', `${pods.local!.ip}:8080`]);
    assert.equal((await captured.waitFor((e) => e.event === 'greeting')).greeting, 'proxy');
    direct.send('still-direct');
    await direct.waitFor((e) => e.event === 'echo' && e.line === 'still-direct');

    assert.equal(dp!.removePod(pod.cgroupId), true);
    assert.equal((await connect(pod, `${pods.local!.ip}:8080`)).greeting, 'local');
    captured.send('still-captured');
    await captured.waitFor((e) => e.event === 'echo' && e.line === 'still-captured');
    await direct.stop();
    await captured.stop();
  });

  test('sk_msg carries same-node traffic; 1000 concurrent connections keep data intact', async (t) => {
    const c0 = dp!.counters();
    const seen = proxy.events.length;
    const [res] = await runToEnd(
      bed,
      pods.client!,
      'client.ts',
      ['integrity', VIP, '1000', '1048576', '25'],
      120_000,
    );
    assert.ok(res);
    assert.deepEqual(res.failures, []);
    assert.equal(res.failed, 0);
    assert.equal(Number(res.ok) + Number(res.reset), 1000);
    assert.equal(res.reset, 40);
    t.diagnostic(`${res.ok} connections echoed ${res.bytes} bytes intact`);
    t.diagnostic(
      `counters after: ${JSON.stringify(Object.fromEntries(Object.entries(dp!.counters()).map(([k, v]) => [k, Number(v)])))}`,
    );
    const c1 = dp!.counters();
    assert.equal(delta(c0, c1, 'connectsRedirected'), 1000);
    assert.ok(delta(c0, c1, 'messagesRedirected') > 1000, 'messages took the sk_msg shortcut');
    assert.equal(delta(c0, c1, 'mapFull'), 0);
    // Every completed connection was found by its 4-tuple (a reset one may be gone before accept).
    const accepts = await eventually(
      () => proxy.events.slice(seen).filter((e) => e.event === 'accept'),
      (a) => a.filter((e) => e.orig === VIP).length >= 960,
    );
    assert.ok(accepts.filter((e) => e.orig === VIP).length >= 960);
    assert.deepEqual(
      accepts.filter((e) => e.orig !== VIP && e.orig !== null),
      [],
    );
    const ns = accepts.map((e) => Number(e.lookupNs)).sort((a, b) => a - b);
    t.diagnostic(`orig-dst lookup in the proxy: p50 ${(ns[Math.floor(ns.length / 2)] ?? 0) / 1000} µs`);
  });

  test('request, half-close, late read: the whole answer reaches a Node reader (one queue once the reader half-closed)', async () => {
    // The pod half-closes and reads nothing for 500 ms while the answer and the
    // FIN arrive; with the answer split over the sk_msg and TCP queues, libuv
    // would take the short read of the sk_msg queue at POLLHUP as EOF.
    const c0 = dp!.counters();
    const [res] = await runToEnd(bed, pods.client!, 'client.ts', [
      ...['late-read', '10.96.0.10:7778'],
      ...[String(REPLY_BYTES), '500'],
    ]);
    assert.equal(res?.greeting, 'proxy');
    assert.deepEqual(
      { received: res?.received, intact: res?.intact },
      { received: REPLY_BYTES, intact: true },
    );
    assert.ok(delta(c0, dp!.counters(), 'messagesRedirected') > 0, 'the exchange took the sk_msg shortcut');
  });

  test('acceleration off: traffic still flows, over plain TCP', async () => {
    dp!.setAcceleration(false);
    try {
      const c0 = dp!.counters();
      const [res] = await runToEnd(bed, pods.client!, 'client.ts', ['integrity', VIP, '50', '262144', '0']);
      assert.equal(res?.failed, 0);
      const c1 = dp!.counters();
      assert.equal(delta(c0, c1, 'messagesRedirected'), 0);
      assert.equal(delta(c0, c1, 'connectsRedirected'), 50);
    } finally {
      dp!.setAcceleration(true);
    }
  });

  test('toggling acceleration mid-connection never reorders data', async () => {
    // The proxy does not read this connection for 1.5 s, so what the pod sends
    // queues up at the proxy: first over TCP (acceleration off), then, once it
    // is back on, data must not overtake through the sk_msg queue.
    const held = spawn(bed, pods.client!, 'client.ts', ['hold', '10.96.0.10:7777']);
    try {
      assert.equal((await held.waitFor((e) => e.event === 'greeting')).greeting, 'proxy');
      dp!.setAcceleration(false);
      held.send('first-over-tcp');
      await new Promise((r) => setTimeout(r, 300));
      const cOff = dp!.counters();
      dp!.setAcceleration(true);
      held.send('second');
      held.send('third');
      await held.waitFor((e) => e.event === 'echo' && e.line === 'third', 10_000, 'echo of third');
      assert.ok(delta(cOff, dp!.counters(), 'messagesRedirected') >= 2, 'the later lines took sk_msg');
      assert.deepEqual(
        held.events.filter((e) => e.event === 'echo').map((e) => e.line),
        ['first-over-tcp', 'second', 'third'],
      );
    } finally {
      dp!.setAcceleration(true);
      await held.stop();
    }
  });

  // A socket's buffers bound what TCP takes from a writer before the reader
  // reads (a few MiB here); an sk_msg redirect into the reader's queue has no
  // such bound, so without backpressure the writer's 64 MiB would all be taken
  // at once (and, under memory pressure, writes fail with ENOMEM).
  const FLOOD = 64 * 1024 * 1024;
  const floodThrough = async (from: LabPod | LabNode, target: string, greeting: string) => {
    const c0 = dp!.counters();
    const [res] = await runToEnd(bed, from, 'client.ts', ['flood', target, String(FLOOD), '700'], 60_000);
    assert.ok(res, 'flood printed nothing');
    assert.equal(res.greeting, greeting);
    assert.equal(res.error, null);
    assert.equal(res.bytes, FLOOD);
    assert.equal(res.echoed, FLOOD);
    assert.equal(res.intact, true, 'the echo differs from what was sent');
    const taken = Number(res.acceptedAtWatch);
    const c1 = dp!.counters();
    const moved = (k: keyof Counters) => delta(c0, c1, k);
    const note = `taken ${taken} B; redirected ${moved('messagesRedirected')}, backpressured ${moved('backpressured')}, fallbacks ${moved('fallbacks')}`;
    assert.ok(
      taken < FLOOD / 4,
      `the kernel took ${taken} B from the writer while the reader was paused (${note})`,
    );
    assert.ok(moved('messagesRedirected') > 0, `sk_msg carried some of it (${note})`);
    assert.ok(moved('backpressured') > 0, `backpressured did not rise (${note})`);
    return note;
  };

  test('a proxy slower than its pod pushes back on the pod instead of queueing without bound', async (t) => {
    t.diagnostic(await floodThrough(pods.client!, '10.96.0.10:7777', 'proxy'));
  });

  test('a pod slower than the proxy pushes back on the proxy', async (t) => {
    // Only an enrolled pod's end of proxy -> pod enters the sockhash.
    dp!.enrolPod(pods.slow!.cgroupId);
    try {
      t.diagnostic(await floodThrough(node1, `${pods.slow!.ip}:8080`, 'slow'));
    } finally {
      dp!.removePod(pods.slow!.cgroupId);
    }
  });

  test('a pod that half-closed and stopped reading still pushes back on the proxy', async (t) => {
    // While a half-closed reader has sk_msg bytes unread, messages join them (see
    // redir.bpf.c): up to a few receive buffers, then the TCP way, never unbounded.
    const c0 = dp!.counters();
    const [res] = await runToEnd(
      bed,
      pods.client!,
      'client.ts',
      ['late-read', '10.96.0.10:7779', '0', '1500'],
      60_000,
    );
    assert.equal(res?.greeting, 'proxy');
    const local = String(res?.local);
    const watch = await proxy.waitFor((e) => e.event === 'pushed' && e.peer === local, 10_000, 'pushed');
    const done = await proxy.waitFor((e) => e.event === 'push-done' && e.peer === local, 10_000, 'push-done');
    const taken = Number(watch.takenAtWatch);
    const c1 = dp!.counters();
    const note = `taken ${taken} B; redirected ${delta(c0, c1, 'messagesRedirected')}, backpressured ${delta(c0, c1, 'backpressured')}`;
    t.diagnostic(note);
    assert.ok(
      taken < FLOOD / 4,
      `the kernel took ${taken} B while the half-closed pod did not read (${note})`,
    );
    assert.equal(res?.received, FLOOD);
    assert.equal(res?.digest, done.digest, 'the pod did not get the bytes the proxy wrote');
  });

  test('a full map leaves the connection on the normal path and counts mapFull', async () => {
    // Fill the connect4 -> sockops hand-off map with bogus cookies through its pin.
    const addon = loadAddon();
    const fd = addon.objGet(join(node1.bpffsDir, 'maps', 'sm_orig_by_cookie'));
    const max = addon.mapInfo(fd).maxEntries;
    const key = Buffer.alloc(8);
    const value = Buffer.alloc(8);
    try {
      for (let i = 0; i < max; i++) {
        key.writeBigUInt64LE(BigInt(i) + (1n << 62n));
        addon.mapUpdate(fd, key, value, 0);
      }
      const c0 = dp!.counters();
      assert.equal((await connect(pods.client!, `${pods.local!.ip}:8080`)).greeting, 'local');
      const c1 = dp!.counters();
      assert.equal(delta(c0, c1, 'mapFull'), 1);
      assert.equal(delta(c0, c1, 'connectsRedirected'), 0);
    } finally {
      for (let i = 0; i < max; i++) {
        key.writeBigUInt64LE(BigInt(i) + (1n << 62n));
        addon.mapDelete(fd, key);
      }
      addon.close(fd);
    }
    assert.equal((await connect(pods.client!, `${pods.local!.ip}:8080`)).greeting, 'proxy');
  });

  test('a dual-stack socket reaching an IPv4 service is captured like an IPv4 one', async () => {
    const c0 = dp!.counters();
    const res = await connect(pods.client!, `::ffff:${VIP}`);
    assert.equal(res.greeting, 'proxy');
    assert.match(res.local, /^::ffff:10\.244\.1\./);
    const acc = await proxyAcceptFor(res.local.replace('::ffff:', ''));
    assert.equal(acc.orig, VIP);
    // The proxy reaching a pod server that listens dual-stack (::) is accelerated too.
    const dual = spawn(bed, pods.local!, 'echo-server.ts', ['--name', 'dual', '--listen', '[::]:8081']);
    await dual.waitFor((e) => e.event === 'listening', 20_000, 'listening');
    dp!.enrolPod(pods.local!.cgroupId);
    try {
      const mid = dp!.counters();
      assert.equal((await connect(node1, `${pods.local!.ip}:8081`)).greeting, 'dual');
      const c1 = dp!.counters();
      assert.equal(delta(mid, c1, 'socketsAccelerated'), 2);
      assert.ok(delta(mid, c1, 'messagesRedirected') >= 2);
      assert.equal(delta(c0, c1, 'connectsRedirected'), 1);
    } finally {
      dp!.removePod(pods.local!.cgroupId);
      await dual.stop();
    }
  });

  test('native IPv6 connects go to the proxy’s IPv6 address and keep their destination', async () => {
    const gw6 = 'fd00:244:1::1';
    const pod6 = 'fd00:244:1::99';
    const ipn = async (netns: string, args: string[]) => {
      const r = spawnSync('ip', ['-n', netns, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const bridges = JSON.parse(await ipn(node1.netns, ['-j', 'link', 'show', 'type', 'bridge'])) as {
      ifname: string;
    }[];
    await ipn(node1.netns, ['addr', 'add', `${gw6}/64`, 'dev', bridges[0]!.ifname, 'nodad']);
    await ipn(pods.client!.netns, ['addr', 'add', `${pod6}/64`, 'dev', 'eth0', 'nodad']);
    const proxy6 = spawn(bed, node1, 'echo-server.ts', [
      '--name',
      'proxy6',
      '--listen',
      `[${gw6}]:${PROXY_PORT}`,
      '--orig-dst',
      node1.bpffsDir,
    ]);
    await proxy6.waitFor((e) => e.event === 'listening', 20_000, 'listening');
    const vip6 = 'fd00:96::10';

    // Without an IPv6 proxy address, IPv6 is left alone (and there is nothing at the VIP).
    await assert.rejects(connect(pods.client!, `[${vip6}]:80`));
    dp!.setProxy({ ip: node1.gatewayIp, port: PROXY_PORT }, { ip6: gw6 });
    try {
      assert.equal(dp!.config().proxyIp6, gw6);
      const c0 = dp!.counters();
      const res = await connect(pods.client!, `[${vip6}]:80`);
      assert.equal(res.greeting, 'proxy6');
      assert.equal(res.reply, 'ping');
      const acc = await proxy6.waitFor((e) => e.event === 'accept' && e.peer === res.local, 10_000, 'accept');
      assert.equal(acc.orig, `${vip6}:80`);
      const c1 = dp!.counters();
      assert.equal(delta(c0, c1, 'connectionsTracked'), 1);
      assert.equal(delta(c0, c1, 'socketsAccelerated'), 2, 'pod and proxy IPv6 sockets enter sm_sockhash6');
      assert.ok(delta(c0, c1, 'messagesRedirected') >= 2);
      assert.equal(delta(c0, c1, 'fallbacks'), 0);
      // IPv6 exclusions, and IPv4 still works alongside.
      dp!.setExclusions({ ports: [], cidrs: ['fd00:96::/64'] });
      await assert.rejects(connect(pods.client!, `[${vip6}]:80`));
      dp!.setExclusions({ ports: [], cidrs: [] });
      assert.equal((await connect(pods.client!, VIP)).greeting, 'proxy');
    } finally {
      dp!.setProxy({ ip: node1.gatewayIp, port: PROXY_PORT });
      await proxy6.stop();
    }
  });

  test('every per-connection map is back to its starting size once connections close', async () => {
    const sizes = await eventually(
      () => dp!.connectionMapSizes(),
      (s) => JSON.stringify(s) === JSON.stringify(startSizes),
    );
    assert.deepEqual(sizes, startSizes);
  });

  test('a restarted loader adopts the pins and an established connection keeps working', async () => {
    const held = spawn(bed, pods.client!, 'client.ts', ['hold', VIP]);
    assert.equal((await held.waitFor((e) => e.event === 'greeting')).greeting, 'proxy');
    const statusBefore = dp!.status();
    const counters = dp!.counters();
    dp!.close();
    dp = undefined;
    // An agent restarting inside the node netns, as the real one runs.
    const [agent] = await runToEnd(bed, node1, 'loader.ts', [node1.cgroupPath, node1.bpffsDir]);
    assert.equal(agent?.adopted, true);
    assert.deepEqual(agent?.proxy, { ip: node1.gatewayIp, port: PROXY_PORT });
    held.send('after-agent');
    await held.waitFor((e) => e.event === 'echo' && e.line === 'after-agent');
    dp = SockopsDataplane.open({ cgroupPath: node1.cgroupPath, bpffsDir: node1.bpffsDir });
    assert.equal(dp.adopted, true);
    assert.deepEqual(
      dp.status().programs.map((p) => [p.name, p.id, p.attached]),
      statusBefore.programs.map((p) => [p.name, p.id, true]),
    );
    assert.ok(dp.counters().connectsRedirected >= counters.connectsRedirected, 'counters survive');
    held.send('after-restart');
    await held.waitFor((e) => e.event === 'echo' && e.line === 'after-restart');
    assert.equal((await connect(pods.client!, VIP)).greeting, 'proxy');
    await held.stop();
  });

  test('detach removes programs and pins; established connections fall back to plain TCP', async () => {
    const held = spawn(bed, pods.client!, 'client.ts', ['hold', VIP]);
    assert.equal((await held.waitFor((e) => e.event === 'greeting')).greeting, 'proxy');
    dp!.detach();
    dp = undefined;
    held.send('after-detach');
    await held.waitFor((e) => e.event === 'echo' && e.line === 'after-detach');
    assert.equal((await connect(pods.client!, `${pods.local!.ip}:8080`)).greeting, 'local');
    await held.stop();
  });
});
