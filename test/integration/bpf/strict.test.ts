/**
 * Strict mode against a real kernel: a meshed pod in strict mode accepts
 * inbound TCP only from its node proxy's address (the node bridge address, from
 * which the agent reaches local pods), loopback and itself. Dialers are
 * long-lived fixtures in each source netns, so every attempt costs a connect,
 * not a process start; refused attempts are bounded by a short connect timeout
 * (the hook drops the SYN: the client hears nothing).
 */
import assert from 'node:assert/strict';
import { spawn as spawnChild } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Counters, SockopsDataplane } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode, LabPod, LabTarget } from '../../../lab/types.js';
import {
  addPods,
  Dialers,
  eventually,
  FIXTURES,
  Fixture,
  Fixtures,
  openDataplane,
  REPO,
  type runFixture,
} from './helpers.js';

const PROXY_PORT = 15001;
const PORT = 8080;
/** Long enough for an answered handshake on a loaded 2-core box, short enough to keep the file fast. */
const REFUSED_WITHIN_MS = 700;
const ALLOWED_WITHIN_MS = 5_000;

describe('bpf-sockops strict mode', { timeout: 60_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let dp: SockopsDataplane | undefined;
  const pods: Record<string, LabPod> = {};
  const fixtures = new Fixtures();
  const dialers = new Dialers((from) => spawn(bed, from, 'dialer.ts', []));

  const spawn = (...args: Parameters<typeof runFixture>) => fixtures.spawn(...args);
  /** One connection attempt from `from` to `to`; resolves with what the client saw. */
  const dial = (from: LabTarget, to: string, opts: { source?: string; expect: 'ok' | 'refused' }) =>
    dialers.dial(from, to, opts.expect === 'ok' ? ALLOWED_WITHIN_MS : REFUSED_WITHIN_MS, opts.source);
  const reaches = async (from: LabTarget, to: string, greeting: string, source?: string) => {
    const r = await dial(from, to, { expect: 'ok', ...(source ? { source } : {}) });
    assert.ok(r.ok, `${to} should accept, got ${r.code}`);
    assert.equal(r.greeting, greeting);
    return r;
  };
  const refused = async (from: LabTarget, to: string, source?: string) => {
    const r = await dial(from, to, { expect: 'refused', ...(source ? { source } : {}) });
    assert.equal(r.ok, false, `${to} should refuse plaintext, but it answered from ${r.local}`);
    // The SYN is dropped, so the client waits; anything else means another failure.
    assert.equal(r.code, 'ETIMEDOUT');
  };
  const refusedDelta = (then: Counters) => Number(dp!.counters().plaintextRefused - then.plaintextRefused);

  before(async () => {
    bed = await TestBed.create({ nodes: 2 });
    [node1] = bed.nodes as [LabNode, LabNode];
    Object.assign(
      pods,
      await addPods(bed, 'stricttest', { strict: 'node1', perm: 'node1', plain: 'node1', remote: 'node2' }),
    );
    dp = openDataplane(node1, PROXY_PORT);
    // Capture skips this port, so a meshed pod can try to reach the strict pod directly.
    dp.setExclusions({ ports: [PORT], cidrs: [] });
    dp.enrolPod(pods.strict!.cgroupId);
    dp.enrolPod(pods.perm!.cgroupId, { mode: 'permissive' });

    const servers = [
      spawn(bed, pods.strict!, 'echo-server.ts', [
        '--name',
        'strict',
        '--listen',
        `0.0.0.0:${PORT}`,
        '--quiet',
      ]),
      spawn(bed, pods.perm!, 'echo-server.ts', ['--name', 'perm', '--listen', `0.0.0.0:${PORT}`, '--quiet']),
    ];
    const starting = dialers.start([node1, pods.plain!, pods.remote!, pods.perm!, pods.strict!]);
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

  test('enrolled pods default to strict; the mode is per pod', () => {
    assert.equal(dp!.podMode(pods.strict!.cgroupId), 'strict');
    assert.equal(dp!.podMode(pods.perm!.cgroupId), 'permissive');
    assert.equal(dp!.podMode(pods.plain!.cgroupId), undefined);
    const st = dp!.status();
    assert.equal(st.pods, 2);
    assert.equal(st.strictPods, 1);
    assert.ok(
      st.programs.find((p) => p.name === 'sm_strict')?.attached,
      'sm_strict attached to the node cgroup',
    );
  });

  test('an unmeshed pod is not intercepted and cannot reach a strict meshed pod in plaintext', async () => {
    const c0 = dp!.counters();
    await refused(pods.plain!, `${pods.strict!.ip}:${PORT}`);
    const c1 = dp!.counters();
    assert.equal(c1.connectsRedirected, c0.connectsRedirected, 'the unmeshed pod was captured');
    assert.ok(refusedDelta(c0) >= 1, 'plaintextRefused did not rise');
  });

  test('a pod on another node, a meshed pod dialing directly and other node addresses are refused', async () => {
    const c0 = dp!.counters();
    const strict = `${pods.strict!.ip}:${PORT}`;
    await refused(pods.remote!, strict);
    await refused(pods.perm!, strict); // meshed, but port 8080 is excluded from capture: plaintext
    // Node addresses other than the proxy's are not the proxy either.
    await refused(node1, strict, node1.underlayIp);
    assert.ok(refusedDelta(c0) >= 3, `plaintextRefused rose by ${refusedDelta(c0)}`);
  });

  test('the proxy address, loopback and the pod itself are let in', async () => {
    const c0 = dp!.counters();
    const strict = `${pods.strict!.ip}:${PORT}`;
    // node1 netns, system cgroup: where the agent runs; it reaches pods from the bridge address.
    const viaProxy = await reaches(node1, strict, 'strict');
    assert.ok(viaProxy.local?.startsWith(`${node1.gatewayIp}:`), `proxy dialed from ${viaProxy.local}`);
    await reaches(node1, strict, 'strict', node1.gatewayIp);
    await reaches(pods.strict!, `127.0.0.1:${PORT}`, 'strict');
    await reaches(pods.strict!, strict, 'strict');
    assert.equal(refusedDelta(c0), 0);
  });

  test('a permissive meshed pod and unmeshed pods accept plaintext', async () => {
    await reaches(pods.plain!, `${pods.perm!.ip}:${PORT}`, 'perm');
    await reaches(pods.remote!, `${pods.perm!.ip}:${PORT}`, 'perm');
    // The strict pod's own outbound plaintext (excluded port) to a permissive pod is unaffected.
    await reaches(pods.strict!, `${pods.perm!.ip}:${PORT}`, 'perm');
  });

  test('changing the mode, removing and enrolling again take effect live', async () => {
    const strict = `${pods.strict!.ip}:${PORT}`;
    const id = pods.strict!.cgroupId;
    try {
      dp!.enrolPod(id, { mode: 'permissive' });
      await reaches(pods.plain!, strict, 'strict');
      dp!.enrolPod(id, { mode: 'strict' });
      await refused(pods.plain!, strict);
      assert.equal(dp!.removePod(id), true);
      await reaches(pods.remote!, strict, 'strict');
      dp!.enrolPod(id);
      await refused(pods.remote!, strict);
    } finally {
      dp!.enrolPod(id);
    }
  });

  test('a connection opened while permissive survives the switch to strict', async () => {
    const id = pods.strict!.cgroupId;
    dp!.enrolPod(id, { mode: 'permissive' });
    const held = spawn(bed, pods.plain!, 'client.ts', ['hold', `${pods.strict!.ip}:${PORT}`]);
    try {
      await held.waitFor((e) => e.event === 'greeting', 10_000, 'greeting');
      dp!.enrolPod(id, { mode: 'strict' });
      held.send('still here');
      const echo = await held.waitFor((e) => e.event === 'echo', 5_000, 'echo after the switch');
      assert.equal(echo.line, 'still here');
      // ...while a new one from the same pod is refused.
      await refused(pods.plain!, `${pods.strict!.ip}:${PORT}`);
    } finally {
      dp!.enrolPod(id);
      await held.stop();
    }
  });

  test('a container cgroup under the pod cgroup is as strict as the pod', async () => {
    const app = join(pods.strict!.cgroupPath, 'app');
    mkdirSync(app);
    // nsenter keeps the host's /sys (ip netns exec would hide the cgroup mount), so the shell can move
    // itself into the child cgroup before the server creates its listening socket.
    const script =
      'cg="$1"; ns="$2"; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" -- "$@"';
    const argv = [process.execPath, '--import', 'tsx', join(FIXTURES, 'echo-server.ts')];
    const server = new Fixture(
      spawnChild(
        '/bin/sh',
        [
          '-c',
          script,
          'sh',
          app,
          pods.strict!.netns,
          ...argv,
          '--name',
          'app',
          '--listen',
          `0.0.0.0:${PORT + 1}`,
        ],
        { cwd: REPO },
      ),
    );
    try {
      await server.waitFor((e) => e.event === 'listening', 20_000, 'listening');
      await refused(pods.plain!, `${pods.strict!.ip}:${PORT + 1}`);
      await reaches(node1, `${pods.strict!.ip}:${PORT + 1}`, 'app');
    } finally {
      await server.stop();
      await eventually(
        () => readFileSync(join(app, 'cgroup.procs'), 'utf8').trim(),
        (procs) => procs === '',
      );
      rmdirSync(app);
    }
  });

  test('without a configured proxy a strict pod only accepts loopback and itself', async () => {
    dp!.setProxy(undefined);
    try {
      await refused(node1, `${pods.strict!.ip}:${PORT}`);
      await reaches(pods.strict!, `127.0.0.1:${PORT}`, 'strict');
    } finally {
      dp!.setProxy({ ip: node1.gatewayIp, port: PROXY_PORT });
    }
    await reaches(node1, `${pods.strict!.ip}:${PORT}`, 'strict');
  });
});
