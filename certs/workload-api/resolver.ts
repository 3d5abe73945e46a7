/**
 * From a caller's pid to the workload it belongs to. The Workload API only knows
 * this interface; the agent implements it from its pod state, tests from a cgroup
 * table. Identification is by the kernel's view (pid -> cgroup), never by a claim.
 */
import { readFile } from 'node:fs/promises';

export interface WorkloadInfo {
  namespace: string;
  serviceAccount: string;
  podName: string;
}

export interface WorkloadResolver {
  /** The workload that process `pid` belongs to, or null if it is not a meshed workload. */
  resolve(pid: number): Promise<WorkloadInfo | null>;
}

/** The cgroup v2 path of `pid` (the `0::` line of /proc/<pid>/cgroup), or null if it has none / is gone. */
export async function cgroupV2PathOf(pid: number): Promise<string | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    if (line.startsWith('0::')) return line.slice(3).trim() || '/';
  }
  return null;
}

/** The cgroup2 mount point, read from /proc/mounts (hybrid hosts mount it at .../unified). */
export async function cgroup2MountPoint(): Promise<string | null> {
  const mounts = await readFile('/proc/mounts', 'utf8');
  for (const line of mounts.split('\n')) {
    const [, mountPoint, type] = line.split(' ');
    if (type === 'cgroup2' && mountPoint) return mountPoint;
  }
  return null;
}

/**
 * Resolves by cgroup: a process belongs to the pod whose cgroup is its cgroup or an
 * ancestor of it (containers nest below the pod cgroup). Longest prefix wins.
 */
export class CgroupWorkloadResolver implements WorkloadResolver {
  private readonly pods = new Map<string, WorkloadInfo>();

  constructor(private readonly cgroupOf: (pid: number) => Promise<string | null> = cgroupV2PathOf) {}

  /** Registers a pod's cgroup path (relative to the cgroup2 root, starting with `/`). */
  set(cgroupPath: string, workload: WorkloadInfo): void {
    this.pods.set(cgroupPath.replace(/\/+$/, ''), workload);
  }

  delete(cgroupPath: string): void {
    this.pods.delete(cgroupPath.replace(/\/+$/, ''));
  }

  async resolve(pid: number): Promise<WorkloadInfo | null> {
    const path = await this.cgroupOf(pid);
    if (!path) return null;
    for (let p = path; p.length > 0; p = p.slice(0, p.lastIndexOf('/'))) {
      const hit = this.pods.get(p);
      if (hit) return hit;
    }
    return null;
  }
}
