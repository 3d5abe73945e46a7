/**
 * Replacing a node's agent in the local mesh: an upgrade (the new agent starts
 * beside the old one and takes its listening sockets over, see
 * mesh-agent/handoff) or a crash (kill -9, then a new agent). Used by
 * `sockmesh restart-agent`, the upgrade e2e test and the bench.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SockmeshError } from '../lib/errors.js';
import type { LocalMesh } from './mesh.js';

/** What an agent says about its handoff state on /stats/config. */
export interface AgentLifecycle {
  state: 'starting' | 'serving' | 'draining';
  pid: number;
  version: string;
  predecessor?: number;
  takeoverMs?: number;
  servingAfterMs?: number;
  inherited: string[];
}

export interface AgentReplacement {
  node: string;
  mode: 'upgrade' | 'crash';
  oldPid: number;
  newPid: number;
  /** From spawning the new agent to it serving (as polled from outside; includes process start). */
  servingMs: number;
  /** The same, as the new agent measured it from its own process start. */
  servingAfterMs: number | undefined;
  /** Listening sockets the new agent inherited (none after a crash). */
  inherited: string[];
}

export async function agentLifecycle(mesh: LocalMesh, node: string): Promise<AgentLifecycle | undefined> {
  try {
    const r = await mesh.agentGet(node, '/stats/config');
    if (r.status !== 200) return undefined;
    return ((JSON.parse(r.body) as { handoff?: AgentLifecycle }).handoff ?? undefined) || undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

/** Waits until a process is gone (its parent may not reap it: zombies count as gone). */
export async function waitExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/**
 * Starts a new agent for `node` with the command the mesh started it with (plus `extraArgs`) and
 * waits until it serves. `crash`: the running agent is killed with SIGKILL first.
 */
export async function replaceAgent(
  mesh: LocalMesh,
  node: string,
  opts: {
    mode?: 'upgrade' | 'crash';
    extraArgs?: string[];
    timeoutMs?: number;
    /** Called with the new agent's pid as soon as it is spawned. */
    onSpawn?: (pid: number) => void;
  } = {},
): Promise<AgentReplacement> {
  const mode = opts.mode ?? 'upgrade';
  const argv = mesh.bed.getExtra<string[]>(`agentArgv:${node}`);
  if (!argv) {
    throw new SockmeshError('SOCKMESH_E_LAB', `no agent command recorded for node ${node}`, {
      hint: 'the mesh was started by an older sockmesh: `sockmesh down` and `sockmesh up` again',
    });
  }
  const before = await agentLifecycle(mesh, node);
  if (!before) {
    throw new SockmeshError('SOCKMESH_E_LAB', `the agent of ${node} does not answer /stats/config`, {
      hint: `see ${join(mesh.paths.logs, `agent-${node}.log`)}`,
    });
  }
  if (mode === 'crash') {
    process.kill(before.pid, 'SIGKILL');
    await waitExit(before.pid, 5000);
  }
  const t0 = performance.now();
  const child = mesh.bed.spawn(mesh.bed.node(node), [...argv, ...(opts.extraArgs ?? [])], {
    logFile: join(mesh.paths.logs, `agent-${node}.log`),
    cwd: process.cwd(),
  });
  const newPid = child.pid ?? -1;
  opts.onSpawn?.(newPid);
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const now = await agentLifecycle(mesh, node);
    const ready =
      mode === 'upgrade' || (await mesh.agentGet(node, '/ready').catch(() => undefined))?.status === 200;
    if (now?.pid === newPid && now.state === 'serving' && ready) {
      return {
        node,
        mode,
        oldPid: before.pid,
        newPid,
        servingMs: Math.round(performance.now() - t0),
        servingAfterMs: now.servingAfterMs,
        inherited: now.inherited,
      };
    }
    if (!alive(newPid)) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `the new agent of ${node} (pid ${newPid}) exited before serving`,
        {
          hint: `see ${join(mesh.paths.logs, `agent-${node}.log`)}`,
        },
      );
    }
    if (Date.now() > deadline) {
      throw new SockmeshError('SOCKMESH_E_LAB', `the new agent of ${node} did not serve in time`, {
        hint: `see ${join(mesh.paths.logs, `agent-${node}.log`)}`,
      });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
