/**
 * Process accounting for the benchmarks: CPU seconds (utime + stime from /proc/<pid>/stat, summed
 * over a set of processes) and resident memory (VmRSS), plus the processes in a cgroup.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** USER_HZ: /proc/<pid>/stat counts CPU time in these ticks (100 on every Linux we run on). */
const CLK_TCK = 100;

export function cgroupPids(cgroupPath: string): number[] {
  return readFileSync(join(cgroupPath, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
}

export function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** User and system CPU seconds of a process so far (zeros once it is gone). */
export function cpuSplit(pid: number): { user: number; system: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
  } catch {
    return { user: 0, system: 0 };
  }
}

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised comm (which may contain spaces): utime is field 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

export function rssMiB(pid: number): number {
  return memoryMiB(pid).rss;
}

/** Resident memory split as the kernel keeps it: anonymous (heap, private) and file-backed (mostly the node executable, shared). */
export function memoryMiB(pid: number): { rss: number; anon: number; file: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
    return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
  } catch {
    return { rss: 0, anon: 0, file: 0 };
  }
}

/** A named group of processes (one proxy: an agent's primary and its workers, or one haproxy). */
export interface ProcGroup {
  name: string;
  /** Read at the start and the end of each window: agent workers can come and go. */
  pids: () => number[];
}

export interface ProcUsage {
  name: string;
  cpuSeconds: number;
  /** CPU seconds per wall-clock second over the window (1 = one core busy). */
  cores: number;
  /** Summed over the group's processes at the end of the window. */
  rssMiB: number;
  processes: number;
}

export function groupRssMiB(g: ProcGroup): number {
  return sum(g.pids().map(rssMiB));
}

export function groupMemoryMiB(g: ProcGroup): { rss: number; anon: number; file: number } {
  const each = g.pids().map(memoryMiB);
  return {
    rss: sum(each.map((m) => m.rss)),
    anon: sum(each.map((m) => m.anon)),
    file: sum(each.map((m) => m.file)),
  };
}

/** CPU used by each group between construction and end(); a process that appears meanwhile counts from 0. */
export class CpuWindow {
  private readonly start: Map<string, Map<number, number>>;
  private readonly t0 = process.hrtime.bigint();

  constructor(private readonly groups: ProcGroup[]) {
    this.start = new Map(groups.map((g) => [g.name, new Map(g.pids().map((p) => [p, cpuSeconds(p)]))]));
  }

  end(): ProcUsage[] {
    const wall = Number(process.hrtime.bigint() - this.t0) / 1e9;
    return this.groups.map((g) => {
      const before = this.start.get(g.name) ?? new Map<number, number>();
      const pids = g.pids();
      const cpu = sum(pids.map((p) => cpuSeconds(p) - (before.get(p) ?? 0)));
      return {
        name: g.name,
        cpuSeconds: cpu,
        cores: cpu / wall,
        rssMiB: sum(pids.map(rssMiB)),
        processes: pids.length,
      };
    });
  }
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}
