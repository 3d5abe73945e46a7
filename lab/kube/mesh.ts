/**
 * The local mesh on Kubernetes: the pieces `LocalMesh` uses in `--kube` mode.
 * The example manifests stay one set (examples/shop); `kubeOverlay` turns them
 * into what a real API server takes (no sockmesh Node objects: the lab kubelet
 * registers core v1 Nodes; Pods without status, with an image, their fixed IP as
 * an annotation; the ServiceAccounts the Pods name).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { SockmeshError } from '../../lib/errors.js';
import type { TestBed } from '../testbed.js';
import { kubeBinaries } from './binaries.js';
import type { KubeCluster } from './cluster.js';
import { POD_IP_ANNOTATION } from './kubelet.js';
import { tailFile } from './process.js';

const ROOT = join(
  dirname(fileURLToPath(import.meta.url)),
  import.meta.url.endsWith('.ts') ? '../..' : '../../..',
);
export const SOCKMESH_CRDS_DIR = join(ROOT, 'charts', 'sockmesh', 'files', 'crds');
/** What the lab kubelet runs for a container without a command: the example app (image is informative). */
export const EXAMPLE_IMAGE = 'sockmesh.io/lab/example-app:local';

export interface KubeLabInfo {
  server: string;
  kubeconfig: string;
  /** The lab-kube daemon (cluster owner + lab kubelet). */
  pid: number;
  clusterPids: number[];
  /** The cluster's own state record (`lab-<id>.json`), when recorded (root). */
  clusterRunId: string | undefined;
  /** Time to start kine, the API server, the controller-manager and establish the CRDs. */
  clusterMs: number;
  /** kube-apiserver restarts done on request (restartLabApiServer). */
  apiServerRestarts?: number;
  lastRestartMs?: number;
  lastRestartError?: string;
}

export function kubeDir(bed: TestBed): string {
  return join(bed.runDir, 'kube');
}

export function readyPath(bed: TestBed): string {
  return join(kubeDir(bed), 'ready.json');
}

/** The running mesh's Kubernetes endpoint, or undefined when it is not a `--kube` mesh (or not up yet). */
export function kubeLabInfo(bed: TestBed): KubeLabInfo | undefined {
  const f = readyPath(bed);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as KubeLabInfo) : undefined;
}

/** Applies the sockmesh CRDs (charts/sockmesh/files/crds) and waits until they are Established. */
export async function applySockmeshCrds(cluster: KubeCluster): Promise<void> {
  if (!existsSync(SOCKMESH_CRDS_DIR) || readdirSync(SOCKMESH_CRDS_DIR).length === 0) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no sockmesh CRDs in ${SOCKMESH_CRDS_DIR}`);
  }
  const applied = await cluster.kubectl(['apply', '--server-side', '-o', 'name', '-f', SOCKMESH_CRDS_DIR]);
  if (applied.code !== 0) {
    throw new SockmeshError('SOCKMESH_E_LAB', `applying the sockmesh CRDs failed: ${applied.stderr.trim()}`);
  }
  const names = applied.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const waited = await cluster.kubectl(['wait', '--for=condition=Established', '--timeout=60s', ...names]);
  if (waited.code !== 0) {
    throw new SockmeshError(
      'SOCKMESH_E_LAB',
      `the sockmesh CRDs did not become Established: ${waited.stderr.trim()}`,
    );
  }
}

const ORDER = ['Namespace', 'ServiceAccount', 'Service', 'Pod', 'HTTPRoute', 'TCPRoute'];

/**
 * The directory manifests as Kubernetes objects (see the file comment). Everything else passes
 * through unchanged, so the overlay follows the examples instead of being a second copy.
 */
export function kubeOverlay(manifestsDir: string): string {
  const objects: Record<string, unknown>[] = [];
  const files = readdirSync(manifestsDir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
  for (const f of files) {
    for (const doc of parseAllDocuments(readFileSync(join(manifestsDir, f), 'utf8'))) {
      const v = doc.toJS() as Record<string, unknown> | null;
      if (v && typeof v === 'object') objects.push(v);
    }
  }
  const out: Record<string, unknown>[] = [];
  const serviceAccounts = new Set<string>();
  for (const o of objects) {
    if (o.kind === 'Node' && String(o.apiVersion).startsWith('sockmesh.io/')) continue; // the kubelet registers nodes
    if (o.kind !== 'Pod') {
      out.push(o);
      continue;
    }
    const md = { ...(o.metadata as Record<string, unknown>) };
    const spec = { ...((o.spec as Record<string, unknown>) ?? {}) };
    const ip = (o.status as { podIP?: string } | undefined)?.podIP;
    if (ip)
      md.annotations = { ...((md.annotations as Record<string, string>) ?? {}), [POD_IP_ANNOTATION]: ip };
    const containers = Array.isArray(spec.containers) ? (spec.containers as Record<string, unknown>[]) : [];
    // A real Pod needs a container with an image; a pod the examples only exec into gets an idle one.
    spec.containers = (containers.length > 0 ? containers : [{ name: 'idle' }]).map((c) => ({
      image: EXAMPLE_IMAGE,
      ...c,
    }));
    const sa = spec.serviceAccountName as string | undefined;
    if (sa && sa !== 'default') serviceAccounts.add(`${md.namespace ?? 'default'}/${sa}`);
    out.push({ apiVersion: 'v1', kind: 'Pod', metadata: md, spec });
  }
  for (const key of serviceAccounts) {
    const [namespace, name] = key.split('/');
    out.push({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace } });
  }
  const rank = (o: Record<string, unknown>) => {
    const i = ORDER.indexOf(String(o.kind));
    return i < 0 ? ORDER.length : i;
  };
  out.sort((a, b) => rank(a) - rank(b));
  return out.map((o) => stringify(o)).join('---\n');
}

/** The built kubectl with the lab's KUBECONFIG (sync: for tests and CLI verbs). */
export function kubectlSync(
  info: KubeLabInfo,
  args: string[],
  input?: string,
): { code: number | null; stdout: string; stderr: string } {
  const res = spawnSync(kubeBinaries().kubectl, args, {
    input: input ?? '',
    encoding: 'utf8',
    env: { ...process.env, KUBECONFIG: info.kubeconfig },
    timeout: 60_000,
  });
  return { code: res.status, stdout: res.stdout ?? '', stderr: res.stderr ?? res.error?.message ?? '' };
}

/**
 * Restarts the lab's kube-apiserver (stopped, started on the same port; kine keeps the data) through
 * the lab-kube daemon that owns it, and resolves once it serves again, with the new ready info.
 */
export async function restartLabApiServer(bed: TestBed, timeoutMs = 120_000): Promise<KubeLabInfo> {
  const before = kubeLabInfo(bed);
  if (!before) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `local mesh ${bed.runId} does not run on Kubernetes`);
  }
  const count = before.apiServerRestarts ?? 0;
  process.kill(before.pid, 'SIGUSR2'); // lab-kube.ts RESTART_API_SERVER_SIGNAL (not imported: it pulls in the kubelet)
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = kubeLabInfo(bed);
    if (info && (info.apiServerRestarts ?? 0) > count) {
      if (info.lastRestartError) {
        throw new SockmeshError('SOCKMESH_E_LAB', `kube-apiserver restart failed: ${info.lastRestartError}`);
      }
      return info;
    }
    if (Date.now() > deadline) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `kube-apiserver of mesh ${bed.runId} did not come back within ${timeoutMs / 1000} s`,
        { hint: `see ${join(bed.runDir, 'logs', 'lab-kube.log')} and ${join(kubeDir(bed), 'logs')}` },
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits for the lab-kube daemon's ready file; fails with its log tail if it exits or times out. */
export async function waitLabKube(
  bed: TestBed,
  pid: number,
  logFile: string,
  timeoutMs: number,
): Promise<KubeLabInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = kubeLabInfo(bed);
    if (info) return info;
    let alive = true;
    try {
      process.kill(pid, 0);
      alive = !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      alive = false;
    }
    if (!alive || Date.now() > deadline) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `the lab's Kubernetes control plane ${alive ? `was not ready in ${timeoutMs / 1000}s` : 'exited'}; ${logFile} ends with:\n${tailFile(logFile, 20)}`,
        { hint: 'is it built? bash scripts/k8s/build.sh' },
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
