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
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** A named group of processes (one proxy) whose CPU use is measured across a window. */
export interface ProcGroup {
  name: string;
  pids: number[];
}

export interface ProcUsage {
  name: string;
  cpuSeconds: number;
  /** CPU seconds per wall-clock second over the window (1 = one core busy). */
  cores: number;
  rssMiB: number;
}

export class CpuWindow {
  private readonly start: Map<string, number>;
  private readonly t0 = process.hrtime.bigint();

  constructor(private readonly groups: ProcGroup[]) {
    this.start = new Map(groups.map((g) => [g.name, sum(g.pids.map(cpuSeconds))]));
  }

  end(): ProcUsage[] {
    const wall = Number(process.hrtime.bigint() - this.t0) / 1e9;
    return this.groups.map((g) => {
      const cpu = sum(g.pids.map(cpuSeconds)) - (this.start.get(g.name) ?? 0);
      return { name: g.name, cpuSeconds: cpu, cores: cpu / wall, rssMiB: sum(g.pids.map(rssMiB)) };
    });
  }
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}
