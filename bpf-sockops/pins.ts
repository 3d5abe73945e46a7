/**
 * Where a node's dataplane lives in bpffs. One directory per node: maps/ is
 * libbpf's pin root (maps pinned by name), progs/ holds one pin per hook.
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export const MAP_NAMES = [
  'sm_pods',
  'sm_config',
  'sm_excl_ports',
  'sm_excl_cidrs',
  'sm_excl_cidrs6',
  'sm_orig_by_cookie',
  'sm_orig_by_tuple',
  'sm_orig6_by_cookie',
  'sm_orig6_by_tuple',
  'sm_sockhash',
  'sm_sockhash6',
  'sm_counters',
  'sm_inbound_pods',
  'sm_inbound_listeners',
  'sm_tcp_tags',
  'sm_tcp_pairs',
  'sm_tcp_cfg',
  'sm_tcp_workloads',
  'sm_pol_state',
  'sm_pol_sources',
  'sm_pol_dests',
  'sm_pol_rules',
  'sm_pol_counters',
] as const;
export type MapName = (typeof MAP_NAMES)[number];

export const PROG_NAMES = [
  'sm_connect4',
  'sm_connect6',
  'sm_sockops',
  'sm_redir',
  'sm_strict',
  'sm_inbound',
] as const;
export type ProgName = (typeof PROG_NAMES)[number];

/** The maps whose size follows connection churn; all must drain when connections close. */
export const PER_CONNECTION_MAPS = [
  'sm_orig_by_cookie',
  'sm_orig_by_tuple',
  'sm_orig6_by_cookie',
  'sm_orig6_by_tuple',
  'sm_sockhash',
  'sm_sockhash6',
] as const;

export interface PinLayout {
  root: string;
  mapsDir: string;
  progsDir: string;
  /** sk_lookup links, one per permissive pod netns (`inbound-<pod ip>`). */
  linksDir: string;
  map(name: MapName): string;
  prog(name: ProgName): string;
}

export function pinLayout(bpffsDir: string): PinLayout {
  const mapsDir = join(bpffsDir, 'maps');
  const progsDir = join(bpffsDir, 'progs');
  return {
    root: bpffsDir,
    mapsDir,
    progsDir,
    linksDir: join(bpffsDir, 'links'),
    map: (name) => join(mapsDir, name),
    prog: (name) => join(progsDir, name),
  };
}

/**
 * A path as this process can reach it. `ip netns exec` gives its child a
 * private mount namespace with a fresh /sys, which hides /sys/fs/bpf and the
 * cgroup2 mount; the same directories stay reachable through the root of a
 * process still in the original mount namespace (`/proc/<pid>/root`), such as
 * the parent that spawned us. `mountsFile` is the mount table that applies.
 */
export interface HostView {
  path: string;
  mountsFile: string;
}

export interface MountNsRoot {
  root: string;
  mountsFile: string;
}

export function hostView(
  path: string,
  exists: (p: string) => boolean,
  outer: () => MountNsRoot | undefined,
): HostView {
  const local: HostView = { path, mountsFile: '/proc/self/mounts' };
  if (exists(path)) return local;
  const o = outer();
  if (!o) return local;
  const parent = path.replace(/\/[^/]+\/?$/, '') || '/';
  if (exists(`${o.root}${path}`) || (!exists(parent) && exists(`${o.root}${parent}`))) {
    return { path: `${o.root}${path}`, mountsFile: o.mountsFile };
  }
  return local;
}

/** The nearest ancestor process in another mount namespace (see hostView), if reachable. */
export function outerMountNs(): MountNsRoot | undefined {
  try {
    const self = readlinkSync('/proc/self/ns/mnt');
    let pid = process.ppid;
    for (let depth = 0; depth < 32 && pid > 1; depth++) {
      if (readlinkSync(`/proc/${pid}/ns/mnt`) !== self) {
        return { root: `/proc/${pid}/root`, mountsFile: `/proc/${pid}/mounts` };
      }
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    }
  } catch {
    // no permission or the ancestor is gone: nothing to fall back to
  }
  return undefined;
}

/** hostView against this machine. */
export function visible(path: string): HostView {
  return hostView(path, existsSync, outerMountNs);
}
