import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { findCgroup2Mount, readMounts } from '../../../lab/host.js';
import { isSockmeshError } from '../../../lib/errors.js';

function mountsFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sockmesh-mounts-'));
  const f = join(dir, 'mounts');
  writeFileSync(f, text);
  return f;
}

describe('host preflight', () => {
  it('finds the cgroup2 mount on a hybrid host, wherever it is', () => {
    const f = mountsFile(
      'cgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n',
    );
    assert.equal(findCgroup2Mount(f), '/sys/fs/cgroup/unified');
  });

  it('decodes octal escapes in mount points', () => {
    const f = mountsFile('cgroup2 /mnt/with\\040space cgroup2 rw 0 0\n');
    assert.equal(readMounts(f)[0]?.target, '/mnt/with space');
  });

  it('names the missing cgroup2 hierarchy and how to fix it', () => {
    const f = mountsFile('proc /proc proc rw 0 0\n');
    assert.throws(
      () => findCgroup2Mount(f),
      (err) => isSockmeshError(err, 'SOCKMESH_E_NO_CGROUP2') && /mount -t cgroup2/.test(err.hint ?? ''),
    );
  });
});
