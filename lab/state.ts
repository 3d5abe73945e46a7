/**
 * The record of one test bed run. Every object is written here *before* it is
 * created, so a crash between the two leaves at worst a name that teardown
 * finds missing, never an object nobody knows about.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabNode, LabPod } from './types.js';

export const DEFAULT_STATE_DIR = process.env.SOCKMESH_STATE_DIR ?? '/run/sockmesh';

export interface LabRecord {
  version: 1;
  runId: string;
  /** The process that owns the bed; a bed whose owner died is stale. */
  ownerPid: number;
  /** Beds made by `sockmesh up` outlive the command and are only removed by `sockmesh down`. */
  persistent: boolean;
  createdAt: string;
  cgroup2: string;
  bpffs: string;
  cgroupRoot: string;
  bpffsRoot: string;
  fabricNetns: string;
  nodes: LabNode[];
  pods: Array<Omit<LabPod, 'cgroupId'> & { cgroupId: string }>;
  hosts: Record<string, string>;
  /** Everything to remove, in creation order. */
  created: {
    netns: string[];
    cgroups: string[];
    etcNetns: string[];
    bpffsDirs: string[];
    /** Plain directories (the run directory with configs, sockets and logs). */
    dirs: string[];
  };
  /** Free-form data owned by higher layers (e.g. `sockmesh up` records its daemons here). */
  extra: Record<string, unknown>;
}

export function statePath(stateDir: string, runId: string): string {
  return join(stateDir, `lab-${runId}.json`);
}

export function writeRecord(stateDir: string, rec: LabRecord): void {
  mkdirSync(stateDir, { recursive: true });
  const file = statePath(stateDir, rec.runId);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(rec, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export function readRecord(stateDir: string, runId: string): LabRecord | null {
  try {
    return JSON.parse(readFileSync(statePath(stateDir, runId), 'utf8')) as LabRecord;
  } catch {
    return null;
  }
}

export function listRecords(stateDir: string): LabRecord[] {
  let names: string[];
  try {
    names = readdirSync(stateDir);
  } catch {
    return [];
  }
  return names
    .filter((n) => /^lab-[a-z0-9]+\.json$/.test(n))
    .map((n) => readRecord(stateDir, n.slice(4, -5)))
    .filter((r): r is LabRecord => r !== null);
}

export function removeRecord(stateDir: string, runId: string): void {
  rmSync(statePath(stateDir, runId), { force: true });
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
