/**
 * Chaos scenarios on the local mesh (issue 17): keep-alive HTTP and a long-lived gRPC channel carry a
 * fixed number of requests while something breaks (the control plane killed, the API server restarted,
 * SVIDs rotating, weights changing every second, 10 000 connections held open, the agent killed), and
 * each scenario reports failed requests and the memory of the agents and the control plane. Used by
 * test/e2e/chaos.test.ts (a short run) and scripts/chaos/run.ts (the full numbers).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SockmeshError } from '../lib/errors.js';
import { replaceAgent } from './agent-restart.js';
import { restartLabApiServer } from './kube/mesh.js';
import type { AgentStatus, LocalMesh } from './mesh.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '..' : '../..');
const LOAD = join(ROOT, 'test', 'fixtures', 'chaos-load.mjs');
export const CHAOS_CALLER = 'shop/frontend-1';
export const REVIEWS_URL = 'http://reviews.shop.svc.cluster.local:9080/';
/** The gRPC port of reviews (the example app's h2c server). */
export const REVIEWS_GRPC_PORT = 9091;

export type LoadMode = 'keepalive' | 'grpc' | 'connections';

export interface LoadSpec {
  total: number;
  modes: LoadMode[];
  /** Concurrent callers per mode (keep-alive pool size, concurrent gRPC calls). */
  workers?: number;
  /** Requests per second over all modes; 0 = as fast as the callers go. */
  rate?: number;
  /** For `connections`: how many connections are opened and held. */
  connections?: number;
}

export interface ModeResult {
  ok: number;
  failed: number;
  /** First to last failure of this mode, ms since the load started. */
  failureWindow: { fromMs: number; toMs: number } | null;
  /** Answers after this mode's last failure: the mode recovered when it is above 0. */
  okAfterLastFailure: number;
}

/** What test/fixtures/chaos-load.mjs prints. */
export interface LoadResult {
  requests: number;
  ok: number;
  failed: number;
  byMode: Record<string, ModeResult>;
  errors: Record<string, number>;
  /** [ms since start, mode, status, version | error] */
  firstFailures: [number, string, number, string][];
  failureWindow: { fromMs: number; toMs: number } | null;
  versions: Record<string, number>;
  grpcReconnects: number;
  connections: { requested: number; peakOpen: number; openAtEnd: number; openMs: number } | null;
  durationMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let readySeq = 0;

/** Starts the load in the caller pod; `flowing` resolves at its first answer, `result` when it is done. */
export function startLoad(
  mesh: LocalMesh,
  spec: LoadSpec,
  from = CHAOS_CALLER,
): { flowing: Promise<void>; result: Promise<LoadResult> } {
  const readyFile = join(mesh.paths.runDir, `chaos-flowing-${process.pid}-${++readySeq}`);
  const args = {
    url: REVIEWS_URL,
    h2Port: REVIEWS_GRPC_PORT,
    workers: spec.workers ?? 4,
    rate: spec.rate ?? 0,
    total: spec.total,
    modes: spec.modes,
    connections: spec.connections ?? 0,
    readyFile,
  };
  // 10 000 connections need more descriptors than a shell's default 1 024: the soft limit goes up to the hard one.
  const nofile = hardNofile();
  const argv = [
    'prlimit',
    `--nofile=${nofile}:${nofile}`,
    '--',
    process.execPath,
    LOAD,
    JSON.stringify(args),
  ];
  const result = mesh.exec(from, argv, 900_000).then((res) => {
    rmSync(readyFile, { force: true });
    if (res.code !== 0) {
      throw new SockmeshError('SOCKMESH_E_LAB', `chaos load from ${from} failed: ${res.stderr.slice(-2000)}`);
    }
    return JSON.parse(res.stdout) as LoadResult;
  });
  let done = false;
  result.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  const flowing = (async () => {
    const deadline = Date.now() + 60_000;
    while (!existsSync(readyFile)) {
      // A load that ended before its first answer was seen: its own error, or nothing to wait for.
      if (done) return void (await result);
      if (Date.now() > deadline)
        throw new SockmeshError('SOCKMESH_E_LAB', 'no answer to the chaos load in 60 s');
      await sleep(50);
    }
  })();
  return { flowing, result };
}

/** This process's hard limit on open files (what an unprivileged raise can reach). */
export function hardNofile(pid: number | 'self' = 'self'): number {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const hard = line?.trim().split(/\s+/)[4];
  return hard === undefined || hard === 'unlimited' ? 1_048_576 : Number(hard);
}

/**
 * Raises this process's soft limit on open files to its hard limit, so the agents and workloads the lab
 * starts from here inherit it (10 000 connections: the caller's agent holds both ends of each).
 */
export function raiseNofile(): number {
  const hard = hardNofile();
  execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`]);
  return hard;
}

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

function cgroupPids(cgroupPath: string): number[] {
  try {
    return readFileSync(join(cgroupPath, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Resident memory now, in MiB: each node's agent (its main process and proxy workers: everything long-lived
 * in the node's system cgroup) and the control plane.
 */
export function meshRss(mesh: LocalMesh): { agents: Record<string, number>; controlPlane: number } {
  const agents: Record<string, number> = {};
  for (const node of mesh.bed.nodes) {
    let sum = 0;
    for (const pid of cgroupPids(node.systemCgroupPath)) {
      const argv = cmdline(pid);
      // Admin polls (`node -e`) and probes run there briefly; they are not the agent.
      if (argv.includes('-e') || argv.some((a) => a.endsWith('probe.mjs'))) continue;
      sum += rssMiB(pid);
    }
    agents[node.name] = Math.round(sum);
  }
  let controlPlane = 0;
  for (const pid of cgroupPids(mesh.bed.host.systemCgroupPath)) {
    if (cmdline(pid).includes('control-plane')) controlPlane += rssMiB(pid);
  }
  return { agents, controlPlane: Math.round(controlPlane) };
}

export interface MemoryFigures {
  /** Peak over the scenario of each node's agent RSS, MiB. */
  agentsPeakMiB: Record<string, number>;
  agentsEndMiB: Record<string, number>;
  controlPlanePeakMiB: number;
  controlPlaneEndMiB: number;
}

/** Samples meshRss every 250 ms until stopped; returns peaks and the last sample. */
export function sampleMemory(mesh: LocalMesh): { stop: () => MemoryFigures } {
  const peak: MemoryFigures = {
    agentsPeakMiB: {},
    agentsEndMiB: {},
    controlPlanePeakMiB: 0,
    controlPlaneEndMiB: 0,
  };
  const take = () => {
    const now = meshRss(mesh);
    for (const [n, v] of Object.entries(now.agents)) {
      peak.agentsPeakMiB[n] = Math.max(peak.agentsPeakMiB[n] ?? 0, v);
      peak.agentsEndMiB[n] = v;
    }
    peak.controlPlanePeakMiB = Math.max(peak.controlPlanePeakMiB, now.controlPlane);
    peak.controlPlaneEndMiB = now.controlPlane;
  };
  take();
  const timer = setInterval(take, 250);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return peak;
    },
  };
}

export interface ScenarioResult {
  name: string;
  /** Whether the design promises that no request fails here. */
  promisedToSurvive: boolean;
  load: LoadSpec;
  requests: number;
  failed: number;
  errors: Record<string, number>;
  firstFailures: LoadResult['firstFailures'];
  /** First to last failed request, ms (null: none failed). */
  failureWindowMs: number | null;
  versions: Record<string, number>;
  byMode: Record<string, ModeResult>;
  grpcReconnects: number;
  durationMs: number;
  memory: MemoryFigures;
  /** What the scenario did and saw (restarts, rotations, changes applied, connections held). */
  details: Record<string, unknown>;
}

/** Runs `load` while `act` breaks things; `act` gets the running load and returns its details. */
async function scenario(
  mesh: LocalMesh,
  name: string,
  promisedToSurvive: boolean,
  load: LoadSpec,
  act: (running: Promise<LoadResult>) => Promise<Record<string, unknown>>,
): Promise<ScenarioResult> {
  const memory = sampleMemory(mesh);
  const running = startLoad(mesh, load);
  let details: Record<string, unknown>;
  let r: LoadResult;
  let figures: MemoryFigures;
  try {
    await running.flowing;
    details = await act(running.result);
    r = await running.result;
  } finally {
    figures = memory.stop();
    // When the action failed, the load's own outcome is not awaited: it must not surface as unhandled.
    running.result.catch(() => {});
  }
  return {
    name,
    promisedToSurvive,
    load,
    requests: r.requests,
    failed: r.failed,
    errors: r.errors,
    firstFailures: r.firstFailures,
    failureWindowMs: r.failureWindow ? r.failureWindow.toMs - r.failureWindow.fromMs : null,
    versions: r.versions,
    byMode: r.byMode,
    grpcReconnects: r.grpcReconnects,
    durationMs: r.durationMs,
    memory: figures,
    details: r.connections ? { ...details, connections: r.connections } : details,
  };
}

/** Resolves true when `p` has settled. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  return Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    sleep(0).then(() => false),
  ]);
}

async function agentStatus(mesh: LocalMesh, node: string): Promise<AgentStatus | undefined> {
  const s = await mesh.agentStatus(node);
  return 'error' in s ? undefined : s;
}

/** Waits until every agent says its ADS stream is up; returns how long that took. */
export async function waitAdsConnected(mesh: LocalMesh, timeoutMs = 60_000): Promise<number> {
  const t0 = performance.now();
  for (const node of mesh.bed.nodes) {
    for (;;) {
      if ((await agentStatus(mesh, node.name))?.xds.connected) break;
      if (performance.now() - t0 > timeoutMs) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `the agent of ${node.name} did not reconnect to ADS in time`,
          {
            hint: `see ${join(mesh.paths.logs, `agent-${node.name}.log`)}`,
          },
        );
      }
      await sleep(200);
    }
  }
  return Math.round(performance.now() - t0);
}

/**
 * The control plane killed with SIGKILL and started again, `cycles` times during the load: the agents
 * keep serving their last config while it is down and reconnect to ADS when it is back.
 */
export function controlPlaneKill(
  mesh: LocalMesh,
  load: LoadSpec,
  opts: { cycles?: number; downMs?: number } = {},
): Promise<ScenarioResult> {
  return scenario(mesh, 'control plane kill -9 and restart', true, load, async (running) => {
    const cycles: { servedWhileDown: boolean; reconnectMs: number }[] = [];
    for (let i = 0; i < (opts.cycles ?? 1); i++) {
      if (i > 0 && (await settled(running))) break;
      await sleep(500);
      mesh.stopControlPlane();
      await sleep(opts.downMs ?? 2000);
      const down = await agentStatus(mesh, 'node1');
      await mesh.startControlPlane();
      const reconnectMs = await waitAdsConnected(mesh);
      cycles.push({ servedWhileDown: down !== undefined && !down.xds.connected, reconnectMs });
    }
    return { controlPlaneRestarts: cycles.length, cycles };
  });
}

/** On the Kubernetes mode: kube-apiserver stopped and started again (kine keeps the data) under load. */
export function apiServerRestart(mesh: LocalMesh, load: LoadSpec, cycles = 1): Promise<ScenarioResult> {
  return scenario(mesh, 'kube-apiserver restart', true, load, async (running) => {
    const took: number[] = [];
    for (let i = 0; i < cycles; i++) {
      if (i > 0 && (await settled(running))) break;
      await sleep(500);
      const t0 = performance.now();
      await restartLabApiServer(mesh.bed);
      took.push(Math.round(performance.now() - t0));
    }
    return { apiServerRestarts: took.length, restartMs: took };
  });
}

/**
 * SVIDs rotating under load: the mesh runs with a short SVID lifetime (the agents renew at half life);
 * the caller's SVID serials are polled during the load to count the rotations it went through.
 */
export function svidRotation(
  mesh: LocalMesh,
  load: LoadSpec,
  spiffeId = 'spiffe://cluster.local/ns/shop/sa/frontend',
): Promise<ScenarioResult> {
  return scenario(mesh, 'SVID rotation', true, load, async (running) => {
    const serials = new Set<string>();
    while (!(await settled(running))) {
      const s = await agentStatus(mesh, 'node1');
      for (const i of s?.identities ?? []) if (i.spiffeId === spiffeId) serials.add(i.serial);
      await sleep(500);
    }
    return { serialsSeen: serials.size, rotations: Math.max(0, serials.size - 1) };
  });
}

/** The reviews routes (HTTP on 9080, gRPC on 9091) at weights v1/v2, one file. */
export function reviewsRoutes(v1: number, v2: number): string {
  const route = (name: string, port: number, backends: [string, string]) => `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name}, namespace: shop }
spec:
  parentRefs:
    - { group: "", kind: Service, name: reviews, port: ${port} }
  rules:
    - backendRefs:
        - { name: ${backends[0]}, port: ${port}, weight: ${v1} }
        - { name: ${backends[1]}, port: ${port}, weight: ${v2} }
`;
  return (
    route('reviews', 9080, ['reviews-v1', 'reviews-v2']) +
    route('reviews-grpc', REVIEWS_GRPC_PORT, ['reviews-v1-grpc', 'reviews-v2-grpc'])
  );
}

/** Applies the reviews routes: into the watched directory, or with kubectl on the Kubernetes mode. */
export function applyRoutes(mesh: LocalMesh, v1: number, v2: number): void {
  const text = reviewsRoutes(v1, v2);
  if (!mesh.kube) {
    mesh.writeManifest('30-routes.yaml', text);
    return;
  }
  const res = mesh.kubectl(['apply', '-f', '-'], text);
  if (res.code !== 0) throw new SockmeshError('SOCKMESH_E_LAB', `kubectl apply failed: ${res.stderr.trim()}`);
}

/** The reviews weights changed every `everyMs` during the load, alternating 90/10 and 10/90. */
export function weightFlips(mesh: LocalMesh, load: LoadSpec, everyMs = 1000): Promise<ScenarioResult> {
  return scenario(mesh, 'weight changes every second', true, load, async (running) => {
    let changes = 0;
    try {
      while (!(await settled(running))) {
        const at = Date.now();
        applyRoutes(mesh, changes % 2 === 0 ? 10 : 90, changes % 2 === 0 ? 90 : 10);
        changes++;
        await sleep(Math.max(0, everyMs - (Date.now() - at)));
      }
    } finally {
      applyRoutes(mesh, 90, 10);
    }
    return { changes };
  });
}

/** `connections` keep-alive connections opened and held through the agent, the requests spread over them. */
export function manyConnections(mesh: LocalMesh, load: LoadSpec): Promise<ScenarioResult> {
  return scenario(mesh, `${load.connections} concurrent connections`, true, load, async () => ({}));
}

/**
 * The caller node's agent killed with SIGKILL (no upgrade handoff) and a new one started under load:
 * the design does not survive this (the listening sockets die with the process); the window is measured.
 */
export function agentCrash(mesh: LocalMesh, load: LoadSpec, node = 'node1'): Promise<ScenarioResult> {
  return scenario(mesh, `agent kill -9 (${node}, no handoff)`, false, load, async () => {
    await sleep(1000);
    const r = await replaceAgent(mesh, node, { mode: 'crash' });
    await waitAdsConnected(mesh);
    return { oldPid: r.oldPid, newPid: r.newPid, newAgentServingMs: r.servingMs };
  });
}
