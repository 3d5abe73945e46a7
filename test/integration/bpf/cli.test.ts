/**
 * `sockmesh bpf status|counters|detach` against a dataplane loaded on a test bed node.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SockopsDataplane } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode } from '../../../lab/types.js';
import { nullLogger } from '../../../lib/log.js';
import { REPO } from './helpers.js';

function sockmesh(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'cli', 'main.ts'), ...args], {
    cwd: REPO,
    encoding: 'utf8',
  });
}

describe('sockmesh bpf', { timeout: 60_000 }, () => {
  let bed: TestBed;
  let node: LabNode;
  let dp: SockopsDataplane | undefined;

  before(async () => {
    bed = await TestBed.create({ nodes: 1 });
    node = bed.nodes[0]!;
    dp = SockopsDataplane.open({ cgroupPath: node.cgroupPath, bpffsDir: node.bpffsDir, logger: nullLogger });
    dp.setProxy({ ip: node.gatewayIp, port: 15001 });
    dp.setExclusions({ ports: [22, 15008], cidrs: ['10.10.0.0/24'] });
    dp.enrolPod(12345n);
  });

  after(async () => {
    try {
      if (dp && existsSync(join(node.bpffsDir, 'progs'))) dp.detach();
    } finally {
      await bed.destroy();
    }
  });

  const where = () => ['--cgroup', node.cgroupPath, '--bpffs', node.bpffsDir];

  test('status reports programs, config, pods and exclusions without changing anything', () => {
    const res = sockmesh('bpf', 'status', ...where(), '--json');
    assert.equal(res.status, 0, res.stderr);
    const s = (JSON.parse(res.stdout) as Record<string, Record<string, unknown>>)[node.bpffsDir]!;
    assert.equal(s.pods, 1);
    assert.deepEqual(s.config, { proxy: { ip: node.gatewayIp, port: 15001 }, acceleration: true });
    assert.equal((s.config as Record<string, unknown>).proxyIp6, undefined);
    assert.deepEqual(s.exclusions, { ports: [22, 15008], cidrs: ['10.10.0.0/24'] });
    const progs = s.programs as { name: string; attached: boolean }[];
    assert.deepEqual(progs.map((p) => [p.name, p.attached]).sort(), [
      ['sm_connect4', true],
      ['sm_connect6', true],
      ['sm_inbound', true],
      ['sm_redir', true],
      ['sm_sockops', true],
      ['sm_strict', true],
    ]);
    const human = sockmesh('bpf', 'status', ...where());
    assert.match(human.stdout, /acceleration {2}on/);
  });

  test('counters lists every counter', () => {
    const res = sockmesh('bpf', 'counters', ...where(), '--json');
    assert.equal(res.status, 0, res.stderr);
    const c = (JSON.parse(res.stdout) as Record<string, Record<string, string>>)[node.bpffsDir]!;
    assert.deepEqual(Object.keys(c), [
      'connectsRedirected',
      'connectionsTracked',
      'messagesRedirected',
      'fallbacks',
      'mapFull',
      'socketsAccelerated',
      'plaintextRefused',
      'backpressured',
      'inboundCaptured',
      'inboundRefused',
    ]);
  });

  test('usage errors exit 2', () => {
    assert.equal(sockmesh('bpf', 'frobnicate', ...where()).status, 2);
    assert.equal(sockmesh('bpf', 'status', '--cgroup', node.cgroupPath).status, 2);
  });

  test('detach removes pins and attachments; status then says nothing is pinned', () => {
    dp?.close();
    dp = undefined;
    const attachedBefore = spawnSync('bpftool', ['cgroup', 'show', node.cgroupPath], { encoding: 'utf8' });
    assert.match(attachedBefore.stdout, /sm_connect4/);
    const res = sockmesh('bpf', 'detach', ...where());
    assert.equal(res.status, 0, res.stderr);
    assert.equal(existsSync(join(node.bpffsDir, 'progs')), false);
    assert.equal(existsSync(join(node.bpffsDir, 'maps')), false);
    const attached = spawnSync('bpftool', ['cgroup', 'show', node.cgroupPath], { encoding: 'utf8' });
    assert.doesNotMatch(attached.stdout, /sm_connect4|sm_sockops/);
    const gone = sockmesh('bpf', 'status', ...where());
    assert.equal(gone.status, 1);
    assert.match(gone.stderr, /SOCKMESH_E_NOT_FOUND/);
  });
});
