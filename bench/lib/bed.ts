/**
 * The benchmark bed: which pods play which role in bench/manifests, the servers started in
 * them, and the agents' processes. Shared by bench/run.ts and bench/profile.ts.
 */

import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENTS_FROM_ENV, agentsFrom, type LocalMesh } from '../../lab/mesh.js';
import type { LabPod } from '../../lab/types.js';
import { cgroupPids, comm, type ProcGroup } from './proc.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..');
export const WORKLOADS = join(HERE, '..', 'workloads');
export const MANIFESTS = join(HERE, '..', 'manifests');

export const SERVER = { meshed: 'bench/server', plain: 'plain/server' } as const;
export const CLIENT = { meshed: 'bench/client', plain: 'plain/client' } as const;
export const VIP = { l7: '10.96.1.10', l4: '10.96.1.12', bulk: '10.96.1.13', echo: '10.96.1.14' } as const;

/**
 * The agents are measured as they ship: plain `node` from dist/ (tsx would add ~35 MiB RSS per
 * process and esbuild's keep-names wrapper on every closure). lab/mesh.ts starts them from dist/
 * when it is current; when a source is newer, the bench compiles (`tsc`, as `npm run build:ts`)
 * first. `src` measures the sources through tsx instead; `dist` uses dist/ as it is.
 */
export function agentsForBench(
  opts: { dist?: boolean; src?: boolean },
  log: (s: string) => void,
): 'dist' | 'src' {
  if (opts.src) process.env[AGENTS_FROM_ENV] = 'src';
  if (opts.dist) process.env[AGENTS_FROM_ENV] = 'dist';
  if (agentsFrom() === 'src' && !opts.src) {
    log('dist/ is older than the sources: compiling (tsc -p tsconfig.json)');
    // tsc still emits when someone else's half-written file has type errors; only a missing dist/ is fatal.
    spawnSync(
      process.execPath,
      [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'],
      {
        cwd: REPO,
        stdio: 'ignore',
      },
    );
    process.env[AGENTS_FROM_ENV] = 'dist';
  }
  const from = agentsFrom();
  log(`agents run from ${from === 'dist' ? 'dist/ (compiled JS)' : 'the sources through tsx'}`);
  return from;
}

export async function execIn(
  mesh: LocalMesh,
  pod: string,
  argv: string[],
  timeoutMs: number,
): Promise<string> {
  const res = await mesh.exec(pod, argv, timeoutMs);
  if (res.code !== 0)
    throw new Error(
      `${argv.join(' ')} in ${pod} failed (${res.code ?? res.signal}): ${res.stderr.slice(-2000)}`,
    );
  return res.stdout;
}

export const NODE = process.execPath;
export const withFds = (argv: string[]) => ['sh', '-c', 'ulimit -n 20000; exec "$@"', 'sh', ...argv];

export function agentGroups(mesh: LocalMesh): ProcGroup[] {
  return mesh.bed.nodes.map((n) => ({
    name: `agent ${n.name}`,
    pids: () => cgroupPids(n.systemCgroupPath).filter((p) => comm(p) !== 'haproxy'),
  }));
}

export function startServers(mesh: LocalMesh): void {
  for (const ref of [SERVER.meshed, SERVER.plain]) {
    const pod: LabPod = mesh.pod(ref);
    mesh.bed.spawn(pod, withFds([NODE, join(WORKLOADS, 'server.mjs')]), {
      logFile: join(mesh.paths.logs, `bench-${pod.namespace}-${pod.name}.log`),
    });
  }
}

/** Waits for the servers; returns the mesh paths that do not answer (empty when all do). */
export async function waitServers(mesh: LocalMesh): Promise<string[]> {
  const probe = join(REPO, 'lab', 'probe.mjs');
  for (const ref of [SERVER.meshed, SERVER.plain]) {
    const ip = mesh.pod(ref).ip;
    const probes = [8080, 8081, 5201, 7000].map((port) => ({ kind: 'tcp', host: ip, port }));
    // From the server's node: a meshed pod refuses plaintext from unmeshed pods (strict mode).
    const res = await mesh.bed.exec(mesh.bed.node('node2'), [NODE, probe, '10000', JSON.stringify(probes)], {
      timeoutMs: 20_000,
    });
    if (res.code !== 0) throw new Error(`the bench server in ${ref} did not start: ${res.stderr}`);
  }
  // Through the mesh too: the agents must have the services before the first measured request.
  // Both paths get a few tries; one that never answers is reported and the run goes on (its rows
  // then show the failure) rather than losing every other scenario.
  const broken: string[] = [];
  for (const [what, vip] of [
    ['L4', VIP.l4],
    ['L7', VIP.l7],
  ] as const) {
    const check = `fetch('http://${vip}:8080/',{signal:AbortSignal.timeout(4000)}).then(r=>r.arrayBuffer().then(b=>{if(r.status!==200||b.byteLength!==1024){console.error('status '+r.status);process.exit(1)}})).catch(e=>{console.error(String(e.cause??e));process.exit(1)})`;
    for (let i = 0; ; i++) {
      const res = await mesh.exec(CLIENT.meshed, [NODE, '-e', check], 10_000);
      if (res.code === 0) break;
      if (i >= 5) {
        broken.push(`${what} (${vip}:8080): ${res.stderr.trim()}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return broken;
}
