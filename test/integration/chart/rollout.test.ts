/**
 * What the chart's DaemonSet rollout does on one node, played with the real agent processes of the
 * local mesh (there is no kubelet here): the new agent starts beside the old one with the chart's
 * --ready-file, and its file appears only once *it* serves on the handed-over sockets (the kubelet's
 * readiness); then the old pod is deleted, i.e. the old agent gets SIGTERM while it drains, and it
 * still keeps a long-lived TCP stream up to the drain bound; finally SIGTERM to an agent with no
 * successor stops it and removes its file. Real BPF, mTLS, xDS, netns: needs root and the build.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { agentLifecycle, replaceAgent, waitExit } from '../../../lab/agent-restart.js';
import type { LocalMesh } from '../../../lab/mesh.js';
import { FIXTURES, startEchoServer } from '../../helpers/lab.js';
import { startShop } from '../../helpers/mesh.js';

const OVERLAY = fileURLToPath(new URL('../../e2e/manifests-upgrade/', import.meta.url));
const DRAIN_S = 6;
const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;
// The agent flags under test live in the sources; dist/ may predate them.
process.env.SOCKMESH_LAB_AGENTS ??= 'src';

describe('DaemonSet rollout on one node, by process (--ready-file, SIGTERM while draining)', {
  skip: notRoot ? 'needs root (the local mesh: netns, cgroups, BPF)' : false,
  timeout: 240_000,
}, () => {
  let mesh: LocalMesh;
  let echo: ChildProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'sockmesh-rollout-'));
  const readyFile = join(dir, 'ready');

  before(async () => {
    mesh = await startShop([OVERLAY], { agentWorkers: 1, agentArgs: ['--drain-timeout', String(DRAIN_S)] });
    echo = await startEchoServer(mesh.bed, mesh.pod('shop/reviews-v2-1'), 7000);
  });
  after(async () => {
    echo?.kill();
    await mesh?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the new pod is ready only once its agent serves; the old one, deleted while draining, keeps its stream to the bound', async () => {
    const stream = mesh.exec(
      'shop/frontend-1',
      [
        process.execPath,
        join(FIXTURES, 'tcp-stream-client.mjs'),
        'echo.shop.svc.cluster.local',
        '7000',
        '20000',
        '100',
      ],
      60_000,
    );
    let streamEnded = false;
    void stream.then(
      () => {
        streamEnded = true;
      },
      () => {
        streamEnded = true;
      },
    );
    await new Promise((r) => setTimeout(r, 1500));

    // Sample the ready file from the new agent's spawn on: whenever it exists, its agent must serve.
    let newPid = -1;
    const seen: { pid: number; state: string | undefined; holder: number | undefined }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const text =
          newPid > 0 && existsSync(readyFile) ? readFileSync(readyFile, { encoding: 'utf8', flag: 'r' }) : '';
        if (text.trim()) {
          const pid = Number(text);
          const l = await agentLifecycle(mesh, 'node1');
          seen.push({ pid, state: l?.state, holder: l?.pid });
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const r = await replaceAgent(mesh, 'node1', {
      extraArgs: ['--ready-file', readyFile],
      onSpawn: (pid) => {
        newPid = pid;
      },
    });
    // The agent checks every 500 ms: the file follows the serving state within about that.
    const deadline = Date.now() + 5000;
    while (!existsSync(readyFile) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    assert.ok(existsSync(readyFile), 'the new agent never created its ready file');
    assert.equal(readFileSync(readyFile, 'utf8').trim(), String(r.newPid));
    await new Promise((res) => setTimeout(res, 200));
    sampling = false;
    await sampler;
    assert.ok(seen.length > 0);
    for (const s of seen) assert.deepEqual(s, { pid: r.newPid, state: 'serving', holder: r.newPid });

    // The DaemonSet controller now deletes the old pod: SIGTERM to the old agent, which is draining.
    process.kill(r.oldPid, 'SIGTERM');
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(await waitExit(r.oldPid, 0), false, 'SIGTERM cut the drain short');
    assert.equal(streamEnded, false, 'the long-lived stream was closed by the SIGTERM');
    assert.ok(await waitExit(r.oldPid, (DRAIN_S + 10) * 1000), 'the old agent exited after the bound');

    // The old agent's own account: the drain ran to the bound, SIGTERM or not.
    const log = readFileSync(join(mesh.paths.logs, 'agent-node1.log'), 'utf8');
    assert.match(log, /SIGTERM while draining for a successor: finishing the drain/);
    const drained = /handed over to pid (\d+), drained in (\d+) ms \(bound reached/.exec(log);
    assert.ok(drained, 'the old agent did not report a drain to the bound');
    assert.equal(Number(drained[1]), r.newPid);
    assert.ok(Number(drained[2]) >= DRAIN_S * 1000, `drained only ${drained[2]} ms`);
    const out = JSON.parse((await stream).stdout) as {
      echoed: number;
      lost: number;
      closedAtMs: number | null;
    };
    console.log(
      `rollout: drained ${drained[2]} ms after SIGTERM at the start of the drain; stream ${JSON.stringify(out)}`,
    );
    assert.ok(out.echoed > 30, 'the stream carried data');
    assert.ok(out.lost <= 1, `echoes lost: ${out.lost}`);
  });

  it('SIGTERM to an agent with no successor stops it and removes its ready file', async () => {
    const l = await agentLifecycle(mesh, 'node1');
    assert.equal(l?.state, 'serving');
    assert.ok(existsSync(readyFile));
    process.kill(l!.pid, 'SIGTERM');
    assert.ok(await waitExit(l!.pid, 10_000), 'the agent did not stop');
    assert.equal(existsSync(readyFile), false);
  });
});
