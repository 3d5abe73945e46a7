/**
 * Preflight and the addon's view of the shared header, on this real machine.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadAddon } from '../../../bpf-sockops/addon.js';
import {
  CIDR4_KEY_SIZE,
  CONFIG_SIZE,
  COUNTER_SLOTS,
  ORIG_DST_SIZE,
  POD_SIZE,
  TUPLE4_SIZE,
} from '../../../bpf-sockops/codec.js';
import { evaluatePreflight, gatherPreflight, SockopsDataplane } from '../../../bpf-sockops/index.js';
import { isSockmeshError } from '../../../lib/errors.js';
import { REPO } from './helpers.js';

describe('bpf preflight (real machine)', () => {
  test('the TS codec and include/sockmesh.h agree', () => {
    const l = loadAddon().layout;
    assert.deepEqual(
      [
        l.tuple4Size,
        l.origDstSize,
        l.configSize,
        l.cidr4KeySize,
        l.podSize,
        l.configAccelOffset,
        l.counterMax,
      ],
      [TUPLE4_SIZE, ORIG_DST_SIZE, CONFIG_SIZE, CIDR4_KEY_SIZE, POD_SIZE, 6, COUNTER_SLOTS],
    );
  });

  test('this machine passes: root, BTF, cgroup2, program and map types', () => {
    const input = gatherPreflight({});
    assert.equal(input.probe?.progTypes.sk_msg, true);
    assert.equal(input.probe?.progTypes.cgroup_skb, true);
    assert.equal(input.probe?.mapTypes.sockhash, true);
    assert.deepEqual(
      evaluatePreflight(input).map((e) => e.describe()),
      [],
    );
  });

  test('a non-root caller is told to use sudo', () => {
    const script = `import { evaluatePreflight, gatherPreflight } from './bpf-sockops/index.ts';
      process.stdout.write(JSON.stringify(evaluatePreflight(gatherPreflight({})).map((e) => e.code)));`;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO,
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
    });
    assert.equal(res.status, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout), ['SOCKMESH_E_NOT_ROOT']);
  });

  test('opening fails with actionable codes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'smbpf-'));
    try {
      assert.throws(
        () => SockopsDataplane.open({ cgroupPath: '/sys/fs/cgroup/unified', bpffsDir: join(dir, 'pins') }),
        (e) => isSockmeshError(e, 'SOCKMESH_E_NO_BPFFS'),
      );
      assert.throws(
        () =>
          SockopsDataplane.open({
            cgroupPath: '/sys/fs/cgroup/unified',
            bpffsDir: '/sys/fs/bpf/x',
            objDir: dir,
          }),
        (e) => isSockmeshError(e, 'SOCKMESH_E_NOT_BUILT') && /build:bpf/.test(e.hint ?? ''),
      );
      assert.throws(
        () => SockopsDataplane.open({ cgroupPath: join(dir, 'cg'), bpffsDir: '/sys/fs/bpf/x' }),
        (e) => isSockmeshError(e, 'SOCKMESH_E_NO_CGROUP2'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
