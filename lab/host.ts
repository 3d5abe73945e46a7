/**
 * Host facts and preconditions the test bed (and the BPF loader) rely on.
 * Each check fails with an error that names the missing piece and how to fix it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { SockmeshError } from '../lib/errors.js';

export function requireRoot(what = 'building network namespaces and cgroups'): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new SockmeshError('SOCKMESH_E_NOT_ROOT', `${what} needs root`, {
      hint: 'run the command with sudo, or as root',
    });
  }
}

interface MountEntry {
  source: string;
  target: string;
  type: string;
}

export function readMounts(mountsFile = '/proc/mounts'): MountEntry[] {
  return readFileSync(mountsFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [source = '', target = '', type = ''] = line.split(' ');
      // /proc/mounts escapes spaces and friends as octal.
      return {
        source,
        target: target.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(Number.parseInt(o, 8))),
        type,
      };
    });
}

/** The cgroup v2 mount point; hybrid hosts mount it at e.g. /sys/fs/cgroup/unified, so never assume. */
export function findCgroup2Mount(mountsFile?: string): string {
  const m = readMounts(mountsFile).find((e) => e.type === 'cgroup2');
  if (!m) {
    throw new SockmeshError(
      'SOCKMESH_E_NO_CGROUP2',
      'no cgroup v2 hierarchy is mounted (none in /proc/mounts)',
      {
        hint: 'mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd.unified_cgroup_hierarchy=1',
      },
    );
  }
  return m.target;
}

export const BPFFS_DEFAULT = '/sys/fs/bpf';

/** Returns the bpffs mount point, mounting it at /sys/fs/bpf when the host has none. */
export function ensureBpffs(mountsFile?: string): string {
  const m = readMounts(mountsFile).find((e) => e.type === 'bpf');
  if (m) return m.target;
  if (!existsSync(BPFFS_DEFAULT)) mkdirSync(BPFFS_DEFAULT, { recursive: true });
  const res = spawnSync('mount', ['-t', 'bpf', 'bpf', BPFFS_DEFAULT], { encoding: 'utf8' });
  if (res.status !== 0) {
    throw new SockmeshError(
      'SOCKMESH_E_NO_BPFFS',
      `bpffs is not mounted and mounting it at ${BPFFS_DEFAULT} failed: ${(res.stderr || res.error?.message || '').trim()}`,
      {
        hint: `mount it by hand: mount -t bpf bpf ${BPFFS_DEFAULT}`,
      },
    );
  }
  return BPFFS_DEFAULT;
}

export function requireIproute2(): void {
  const res = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (res.error || res.status !== 0) {
    throw new SockmeshError(
      'SOCKMESH_E_NO_IPROUTE2',
      'the `ip` command (iproute2) is not installed or not on PATH',
      {
        hint: 'install it: apt-get install -y iproute2',
      },
    );
  }
}

/** Every precondition of the test bed, in the order a user would fix them. */
export function preflightLab(): { cgroup2: string; bpffs: string } {
  requireRoot();
  requireIproute2();
  const cgroup2 = findCgroup2Mount();
  const bpffs = ensureBpffs();
  return { cgroup2, bpffs };
}
