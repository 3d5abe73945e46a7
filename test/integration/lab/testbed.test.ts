import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { findCgroup2Mount } from '../../../lab/host.js';
import { TestBed, withTestBed } from '../../../lab/testbed.js';
import { echoClient, leftovers, startEchoServer } from '../../helpers/lab.js';

describe('local mesh test bed', () => {
  it('carries pod-to-pod TCP within a node and across nodes', async () => {
    await withTestBed({ nodes: 2 }, async (bed) => {
      const server = await bed.addPod({ name: 'server', namespace: 'shop', node: 'node1' });
      const local = await bed.addPod({ name: 'local', namespace: 'shop', node: 'node1' });
      const remote = await bed.addPod({ name: 'remote', namespace: 'other', node: 'node2' });
      assert.match(server.ip, /^10\.244\.1\./);
      assert.match(remote.ip, /^10\.244\.2\./);
      await startEchoServer(bed, server, 7000);
      for (const client of [local, remote]) {
        const res = await echoClient(bed, client, server.ip, 7000, `hello from ${client.name}`);
        assert.equal(res.code, 0, res.stderr);
        assert.equal(res.stdout, `hello from ${client.name}`);
      }
    });
  });

  it('runs a process in the pod cgroup and netns, with the pod hosts file', async () => {
    await withTestBed({ nodes: 1 }, async (bed) => {
      const pod = await bed.addPod({ name: 'p1', namespace: 'shop', node: 'node1' });
      bed.setHosts({ 'reviews.shop.svc.cluster.local': '10.96.0.10' });
      const script =
        "const fs=require('fs');console.log(JSON.stringify({cg:fs.readFileSync('/proc/self/cgroup','utf8'),ns:fs.readlinkSync('/proc/self/ns/net'),hosts:fs.readFileSync('/etc/hosts','utf8')}))";
      const res = await bed.exec(pod, [process.execPath, '-e', script]);
      assert.equal(res.code, 0, res.stderr);
      const seen = JSON.parse(res.stdout) as { cg: string; ns: string; hosts: string };
      const cgLine = seen.cg.split('\n').find((l) => l.startsWith('0::'));
      assert.equal(cgLine, `0::${pod.cgroupPath.slice(findCgroup2Mount().length)}`);
      const nsInode = statSync(`/run/netns/${pod.netns}`).ino;
      assert.equal(seen.ns, `net:[${nsInode}]`);
      assert.notEqual(seen.ns, readlinkSync('/proc/self/ns/net'));
      assert.match(seen.hosts, /10\.96\.0\.10\treviews\.shop\.svc\.cluster\.local/);
      assert.equal(pod.cgroupId, statSync(pod.cgroupPath, { bigint: true }).ino);
      // A node process lands in the node's system cgroup, never in a pod's.
      const onNode = await bed.exec(bed.node('node1'), ['cat', '/proc/self/cgroup']);
      assert.match(onNode.stdout, new RegExp(`0::/sockmesh-${bed.runId}/node1/system\\n`));
    });
  });

  it('keeps detached daemons (host and node) in the bed cgroup, logging to files, until teardown', async () => {
    let pids: number[] = [];
    let seen: TestBed | undefined;
    await withTestBed({ nodes: 1 }, async (bed) => {
      seen = bed;
      const log = `${bed.runDir}/daemon.log`;
      const onHost = bed.spawn(bed.host, ['sh', '-c', 'echo host-daemon; exec sleep 600'], { logFile: log });
      const onNode = bed.spawn(bed.node('node1'), ['sh', '-c', 'echo node-daemon; exec sleep 600'], {
        logFile: log,
      });
      pids = [onHost.pid!, onNode.pid!];
      await new Promise((r) => setTimeout(r, 200));
      assert.match(readFileSync(log, 'utf8'), /host-daemon/);
      assert.match(
        readFileSync(`/proc/${onHost.pid}/cgroup`, 'utf8'),
        new RegExp(`0::/sockmesh-${bed.runId}/host\\n`),
      );
      assert.equal(readlinkSync(`/proc/${onHost.pid}/ns/net`), readlinkSync('/proc/self/ns/net'));
    });
    for (const pid of pids) {
      // Gone, or a zombie awaiting this (parent) process: either way no longer running.
      const state = existsSync(`/proc/${pid}/stat`)
        ? readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0]
        : 'gone';
      assert.ok(state === 'gone' || state === 'Z', `daemon ${pid} survived teardown (state ${state})`);
    }
    assert.deepEqual(leftovers(seen!), []);
  });

  it('leaves nothing behind when the test body throws', async () => {
    let seen: TestBed | undefined;
    await assert.rejects(
      withTestBed({ nodes: 2 }, async (bed) => {
        seen = bed;
        const pod = await bed.addPod({ name: 'doomed', namespace: 'shop', node: 'node2' });
        await startEchoServer(bed, pod, 7001);
        assert.ok(leftovers(bed).length > 0, 'the bed should exist while in use');
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.ok(seen);
    assert.deepEqual(leftovers(seen), []);
  });

  it('is cleaned up after its owner dies (Ctrl-C, and SIGKILL then reap)', async () => {
    const child = fileURLToPath(new URL('../../fixtures/lab-owner.mts', import.meta.url));
    for (const signal of ['SIGINT', 'SIGKILL'] as const) {
      const proc = spawn(process.execPath, ['--import', 'tsx', child], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const [line] = (await once(proc.stdout, 'data')) as [Buffer];
      const runId = line.toString().trim();
      const bed = TestBed.attach(runId);
      assert.ok(leftovers(bed).length > 0);
      proc.kill(signal);
      await once(proc, 'exit');
      if (signal === 'SIGKILL') {
        assert.ok(leftovers(bed).length > 0, 'SIGKILL cannot clean up by itself');
        assert.ok(TestBed.reapStale().includes(runId));
      }
      assert.deepEqual(leftovers(bed), [], `after ${signal}`);
    }
  });

  it('builds two beds at the same time without collisions', async () => {
    const [a, b] = await Promise.all([TestBed.create({ nodes: 2 }), TestBed.create({ nodes: 2 })]);
    try {
      assert.notEqual(a.runId, b.runId);
      // Same names and addresses in both: isolation is by namespace, not by luck.
      for (const bed of [a, b]) {
        const s = await bed.addPod({ name: 'echo', namespace: 'shop', node: 'node1', ip: '10.244.1.50' });
        await bed.addPod({ name: 'client', namespace: 'shop', node: 'node2', ip: '10.244.2.50' });
        await startEchoServer(bed, s, 7002);
      }
      await a.destroy();
      const res = await echoClient(b, b.pod('shop', 'client'), '10.244.1.50', 7002, 'still here');
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout, 'still here');
      assert.deepEqual(leftovers(a), []);
    } finally {
      await a.destroy();
      await b.destroy();
    }
    assert.deepEqual(leftovers(b), []);
  });

  it('refuses bad input with a clear error and keeps the bed intact', async () => {
    await withTestBed({ nodes: 1 }, async (bed) => {
      await assert.rejects(
        bed.addPod({ name: 'x', namespace: 'shop', node: 'node9' }),
        /node 'node9' is not part/,
      );
      await assert.rejects(
        bed.addPod({ name: 'Bad_Name', namespace: 'shop', node: 'node1' }),
        /not a DNS label/,
      );
      await assert.rejects(
        bed.addPod({ name: 'x', namespace: 'shop', node: 'node1', ip: '10.244.2.5' }),
        /not a usable address/,
      );
      const ok = await bed.addPod({ name: 'x', namespace: 'shop', node: 'node1' });
      await assert.rejects(bed.addPod({ name: 'x', namespace: 'shop', node: 'node1' }), /already exists/);
      assert.equal(bed.pods.length, 1);
      assert.equal(JSON.parse(readFileSync(`/run/sockmesh/lab-${bed.runId}.json`, 'utf8')).pods[0].ip, ok.ip);
    });
  });
});
