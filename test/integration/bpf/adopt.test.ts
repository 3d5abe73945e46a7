/**
 * Adoption of pins left by a previous agent process, and refusal of pins that
 * do not match this build.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadAddon } from '../../../bpf-sockops/addon.js';
import { detachPinned, SockopsDataplane } from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode } from '../../../lab/types.js';
import { isSockmeshError } from '../../../lib/errors.js';
import { nullLogger } from '../../../lib/log.js';

describe('bpf dataplane adoption', { timeout: 60_000 }, () => {
  let bed: TestBed;
  let node: LabNode;

  before(async () => {
    bed = await TestBed.create({ nodes: 1 });
    node = bed.nodes[0]!;
  });
  after(async () => {
    try {
      detachPinned(node.bpffsDir, node.cgroupPath);
    } finally {
      await bed.destroy();
    }
  });

  const open = () =>
    SockopsDataplane.open({ cgroupPath: node.cgroupPath, bpffsDir: node.bpffsDir, logger: nullLogger });

  test('a second open adopts: same programs, same state, attachments restored if lost', () => {
    const first = open();
    assert.equal(first.adopted, false);
    first.setProxy({ ip: node.gatewayIp, port: 15001 });
    first.setExclusions({ ports: [9090], cidrs: ['192.0.2.0/24', 'fd00:1::/64'] });
    first.enrolPod(42n);
    const ids = first.status().programs.map((p) => p.id);
    first.close();

    // Someone detached the cgroup programs behind our back; the pins remain.
    const addon = loadAddon();
    const cg = addon.openDir(node.cgroupPath);
    const prog = addon.objGet(join(node.bpffsDir, 'progs', 'sm_connect4'));
    addon.progDetach(prog, cg, addon.attachTypes.cgroupInet4Connect);
    addon.close(prog);
    addon.close(cg);

    const second = open();
    try {
      assert.equal(second.adopted, true);
      const st = second.status();
      assert.deepEqual(
        st.programs.map((p) => p.id),
        ids,
      );
      assert.ok(st.programs.every((p) => p.attached));
      assert.deepEqual(second.pods(), [42n]);
      assert.deepEqual(second.exclusions(), { ports: [9090], cidrs: ['192.0.2.0/24', 'fd00:1::/64'] });
      assert.deepEqual(second.config().proxy, { ip: node.gatewayIp, port: 15001 });
    } finally {
      second.close();
    }
  });

  test('pins from a build with other map layouts are refused with what to do', () => {
    const addon = loadAddon();
    const maps = join(node.bpffsDir, 'maps');
    // Put a map of another shape where sm_config should be.
    const pods = addon.objGet(join(maps, 'sm_pods'));
    rmSync(join(maps, 'sm_config'));
    addon.objPin(pods, join(maps, 'sm_config'));
    addon.close(pods);
    assert.throws(
      open,
      (e) =>
        isSockmeshError(e, 'SOCKMESH_E_BPF') && /sm_config/.test(e.message) && /detach/.test(e.hint ?? ''),
    );
    detachPinned(node.bpffsDir, node.cgroupPath);
    const fresh = open();
    try {
      assert.equal(fresh.adopted, false);
    } finally {
      fresh.detach();
    }
  });

  test('pins from before strict mode (4-byte membership, no sm_strict) are refused, not silently reused', () => {
    const maps = join(node.bpffsDir, 'maps');
    mkdirSync(maps, { recursive: true });
    // What a pre-strict build pinned: sm_pods with a u32 value.
    const made = spawnSync('bpftool', [
      'map',
      'create',
      join(maps, 'sm_pods'),
      'type',
      'hash',
      'key',
      '8',
      'value',
      '4',
      'entries',
      '16384',
      'name',
      'sm_pods',
    ]);
    assert.equal(made.status, 0, made.stderr?.toString());
    try {
      assert.throws(
        open,
        (e) =>
          isSockmeshError(e, 'SOCKMESH_E_BPF') &&
          /sm_pods.*8\/4.*8\/8/.test(e.message) &&
          /detach/.test(e.hint ?? ''),
      );
    } finally {
      detachPinned(node.bpffsDir, node.cgroupPath);
    }
    const fresh = open();
    fresh.detach();
  });
});
