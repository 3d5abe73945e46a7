/**
 * The control plane on a real kube-apiserver at scale (issue 13): 1 000 Services, 5 000 Pods and
 * 100 HTTPRoutes in kine (memory) + kube-apiserver + kube-controller-manager (lab/kube/cluster.ts),
 * the EndpointSlices written by the real endpointslice controller, the control plane's
 * KubernetesSource on it and C ADS clients that ACK every response.
 *
 *   node --import tsx bench/kube-scale.ts [--services 1000] [--pods-per-service 5] [--routes 100]
 *                                         [--clients 100] [--rounds 3] [--concurrency 32]
 *
 * A. The control plane starts on the empty namespace; a child process creates every object with
 *    parallel API requests (pods bound to 10 Nodes, their status patched Running/Ready with a podIP
 *    as the lab kubelet does, without realizing them; Services after their pods, so each gets one
 *    EndpointSlice write). The control plane learns them through its watches only: "catch-up" is
 *    the time from the last create to the snapshot holding every endpoint, and to every client's ACK.
 * B. One route change, timed to the LAST client's ACK of the new RouteConfiguration, from
 *    `kubectl apply` (process start included) and from the API PATCH alone.
 * C. Memory of the control plane (this process; clients and object creation run in children):
 *    RSS and V8 heap after a full GC, with the whole cluster loaded and C clients connected.
 * D. First full sync: a fresh control plane on the populated cluster, from start to the first
 *    snapshot (list of every resource + translation), and to every client holding all four types.
 *
 * Writes bench/results/kube-scale.{json,md}. Needs the binaries of scripts/k8s/build.sh.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type KubeCluster, startKubeCluster } from '../lab/kube/cluster.js';
import { applySockmeshCrds } from '../lab/kube/mesh.js';
import { nullLogger } from '../lib/log.js';
import { decodeResource } from '../xds/codec.js';
import { ENDPOINT_TYPE, ROUTE_TYPE } from '../xds/protos.js';
import { ControlPlane } from '../xds/server/control-plane.js';
import { KubeClient } from '../xds/sources/kube/client.js';
import { loadKubeconfig } from '../xds/sources/kube/config.js';
import { KubernetesSource } from '../xds/sources/kubernetes.js';
import { RawAdsStream, responseHeader } from './lib/raw-ads.js';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '1000' },
    'pods-per-service': { type: 'string', default: '5' },
    routes: { type: 'string', default: '100' },
    clients: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '32' },
    worker: { type: 'string' },
    populate: { type: 'string' },
  },
});
const SERVICES = Number(values.services);
const PODS_PER_SERVICE = Number(values['pods-per-service']);
const ROUTES = Number(values.routes);
const CLIENTS = Number(values.clients);
const ROUNDS = Number(values.rounds);
const CONCURRENCY = Number(values.concurrency);
const NODES = 10;
const NS = 'bench';
const RESULTS = path.join(import.meta.dirname, 'results');
const HTTPROUTES = `/apis/gateway.networking.k8s.io/v1/namespaces/${NS}/httproutes`;
/** Route i covers Service i * (SERVICES / ROUTES); route 0's weights are what the rounds change. */
const routeStride = () => Math.max(1, Math.floor(SERVICES / ROUTES));
const ROUTE0 = `svc-0.${NS}.svc.cluster.local:8080`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round1 = (n: number) => Math.round(n * 10) / 10;
const mib = (bytes: number) => round1(bytes / 2 ** 20);

function podIp(k: number): string {
  return `10.${128 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
}

function routeBody(i: number, weight: number): Record<string, unknown> {
  const next = (i + 1) % SERVICES;
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: `split-${i}`, namespace: NS },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: `svc-${i}`, port: 8080 }],
      rules: [
        {
          backendRefs: [
            { name: `svc-${i}`, port: 8080, weight },
            { name: `svc-${next}`, port: 8080, weight: 100 - weight },
          ],
        },
      ],
    },
  };
}

// ---- object creation (child process) ------------------------------------------------------------

/** Runs `jobs` with at most CONCURRENCY in flight; a 409 (already there) or 429 is retried or skipped. */
async function parallel(jobs: (() => Promise<unknown>)[]): Promise<void> {
  let next = 0;
  const run = async () => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      for (let attempt = 0; ; attempt++) {
        try {
          await job();
          break;
        } catch (err) {
          const status = (err as { status?: number }).status;
          if (status === 409) break;
          if (attempt >= 5) throw err;
          await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, run));
}

async function populate(kubeconfig: string): Promise<Record<string, number>> {
  const c = new KubeClient(loadKubeconfig(kubeconfig));
  const post = (p: string, body: unknown) => () => c.json('POST', p, { body });
  const phases: Record<string, number> = {};
  const phase = async (name: string, jobs: (() => Promise<unknown>)[]) => {
    const t0 = performance.now();
    await parallel(jobs);
    phases[name] = Math.round(performance.now() - t0);
    process.stderr.write(`[kube-scale] ${name}: ${jobs.length} requests in ${phases[name]} ms\n`);
  };
  try {
    const ids = Array.from({ length: SERVICES }, (_, i) => i);
    await phase(
      'serviceaccounts',
      ids.map((i) =>
        post(`/api/v1/namespaces/${NS}/serviceaccounts`, { metadata: { name: `svc-${i}`, namespace: NS } }),
      ),
    );
    const pods = ids.flatMap((i) => Array.from({ length: PODS_PER_SERVICE }, (_, p) => [i, p] as const));
    await phase(
      'pods',
      pods.map(([i, p]) =>
        post(`/api/v1/namespaces/${NS}/pods`, {
          metadata: { name: `svc-${i}-${p}`, namespace: NS, labels: { app: `svc-${i}` } },
          spec: {
            nodeName: `node${(i * PODS_PER_SERVICE + p) % NODES}`,
            serviceAccountName: `svc-${i}`,
            containers: [
              { name: 'app', image: 'sockmesh.io/bench/app:local', ports: [{ containerPort: 8080 }] },
            ],
          },
        }),
      ),
    );
    // What the lab kubelet reports once a pod runs; the pod is never realized (objects only).
    await phase(
      'pod status',
      pods.map(([i, p]) => () => {
        const ip = podIp(i * PODS_PER_SERVICE + p);
        return c.json('PATCH', `/api/v1/namespaces/${NS}/pods/svc-${i}-${p}/status`, {
          contentType: 'application/merge-patch+json',
          body: {
            status: {
              phase: 'Running',
              podIP: ip,
              podIPs: [{ ip }],
              conditions: [
                { type: 'Ready', status: 'True' },
                { type: 'ContainersReady', status: 'True' },
              ],
            },
          },
        });
      }),
    );
    await phase(
      'services',
      ids.map((i) =>
        post(`/api/v1/namespaces/${NS}/services`, {
          metadata: { name: `svc-${i}`, namespace: NS },
          spec: {
            selector: { app: `svc-${i}` },
            ports: [{ name: 'http', port: 8080, targetPort: 8080, appProtocol: 'http' }],
          },
        }),
      ),
    );
    await phase(
      'httproutes',
      Array.from({ length: ROUTES }, (_, r) => post(HTTPROUTES, routeBody(r * routeStride(), 90))),
    );
  } finally {
    await c.close();
  }
  return phases;
}

// ---- ADS clients (child process) ----------------------------------------------------------------

/** A wildcard SotW ADS client that ACKs every response (as an agent does once it applied it). */
class AckingClient {
  private readonly ads: RawAdsStream;
  readonly types = new Set<string>();

  constructor(target: string, id: number) {
    this.ads = new RawAdsStream(
      target,
      { id: `node${id % NODES}`, cluster: `bench-client-${id}` },
      (raw, ads) => {
        const h = responseHeader(raw);
        this.types.add(h.type);
        ads.ack(h);
      },
    );
  }

  close(): void {
    this.ads.close();
  }
}

function startClients(target: string, count: number): { child: ChildProcess; ready: Promise<number> } {
  const t0 = performance.now();
  const child = fork(fileURLToPath(import.meta.url), ['--worker', target, '--clients', String(count)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  // The child says when it starts connecting (its module load is not the control plane's time).
  let connecting = t0;
  const ready = new Promise<number>((resolve, reject) => {
    child.on('message', (m: { connecting?: boolean; ready?: boolean }) => {
      if (m.connecting) connecting = performance.now();
      if (m.ready) resolve(performance.now() - connecting);
    });
    child.once('exit', (code) => reject(new Error(`the ADS clients exited (${code})`)));
  });
  return { child, ready };
}

async function stopClients(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.send({ stop: true });
  await exited;
}

function populateInChild(kubeconfig: string): Promise<Record<string, number>> {
  const child = fork(
    fileURLToPath(import.meta.url),
    [
      '--populate',
      kubeconfig,
      ...['--services', String(SERVICES), '--pods-per-service', String(PODS_PER_SERVICE)],
      ...['--routes', String(ROUTES), '--concurrency', String(CONCURRENCY)],
    ],
    { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m as Record<string, number>));
    child.once('exit', (code) => code !== 0 && reject(new Error(`object creation failed (${code})`)));
  });
}

// ---- the measured control plane (this process) --------------------------------------------------

/** ACKs of RouteConfigurations per snapshot version, with the time of the latest. */
class AckLog {
  private readonly byVersion = new Map<string, { n: number; last: number }>();

  constructor(cp: ControlPlane, type: string) {
    cp.ads.on('ack', (e) => {
      if (e.typeUrl !== type) return;
      const v = this.byVersion.get(e.version) ?? { n: 0, last: 0 };
      v.n++;
      v.last = performance.now();
      this.byVersion.set(e.version, v);
    });
  }

  /** Resolves with the time of the count-th ACK of `version`. */
  async all(version: string, count: number, timeoutMs = 120_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = this.byVersion.get(version);
      if (v && v.n >= count) return v.last;
      if (Date.now() > deadline) throw new Error(`only ${v?.n ?? 0} of ${count} clients ACKed ${version}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

async function startControlPlane(
  kubeconfig: string,
): Promise<{ cp: ControlPlane; source: KubernetesSource }> {
  const source = new KubernetesSource({ connection: loadKubeconfig(kubeconfig), logger: nullLogger });
  // The production debounce (ControlPlane's default): every watch event goes through it.
  const cp = new ControlPlane({ source, listen: [{ address: '127.0.0.1:0' }], logger: nullLogger });
  await source.sync();
  await cp.start();
  return { cp, source };
}

function route0Weight(cp: ControlPlane): number | undefined {
  const r = cp.snapshot?.wildcard(ROUTE_TYPE, 'node0').get(ROUTE0);
  if (!r) return undefined;
  const rc = decodeResource(ROUTE_TYPE, r.bytes) as {
    virtual_hosts?: {
      routes?: {
        route?: { weighted_clusters?: { clusters: { name: string; weight?: { value: number } }[] } };
      }[];
    }[];
  };
  const wc = rc.virtual_hosts?.[0]?.routes?.find((x) => x.route?.weighted_clusters)?.route?.weighted_clusters;
  return wc?.clusters.find((c) => c.name.includes('||svc-0.'))?.weight?.value;
}

/** Clusters whose assignment has every pod of its Service as an endpoint. */
function fullAssignments(cp: ControlPlane): number {
  let n = 0;
  for (const [, r] of cp.snapshot?.wildcard(ENDPOINT_TYPE, 'node0') ?? []) {
    const cla = decodeResource(ENDPOINT_TYPE, r.bytes) as { endpoints?: { lb_endpoints?: unknown[] }[] };
    const eps = (cla.endpoints ?? []).reduce((k, l) => k + (l.lb_endpoints?.length ?? 0), 0);
    if (eps === PODS_PER_SERVICE) n++;
  }
  return n;
}

/**
 * When every client has ACKed the current snapshot (in whichever types it changed: a version bump
 * always changes at least one shared type, and every client subscribes to all of them).
 */
async function allAckedCurrent(cp: ControlPlane, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = cp.snapshot?.version;
    const clients = cp.ads.clients();
    if (clients.length >= CLIENTS && clients.every((c) => Object.values(c.acked).includes(v)))
      return performance.now();
    if (Date.now() > deadline) throw new Error(`not every client ACKed version ${v}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function waitFor(what: string, check: () => boolean, timeoutMs: number, everyMs = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A full GC before reading the heap (the flag set at run time exposes gc to a new context). */
function gcNow(): boolean {
  try {
    setFlagsFromString('--expose-gc');
    (runInNewContext('gc') as () => void)();
    return true;
  } catch {
    return false;
  }
}

/** RSS (MiB) of the cluster's components, by executable name. */
function componentRss(kube: KubeCluster): Record<string, number> {
  const out: Record<string, number> = {};
  for (const pid of kube.pids()) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const name = /^Name:\s+(\S+)/m.exec(status)?.[1] ?? String(pid);
      const kb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      if (name !== 'sh') out[name] = Math.round(kb / 1024);
    } catch {
      // exited
    }
  }
  return out;
}

async function main(): Promise<void> {
  const started = new Date().toISOString();
  const loadAtStart = loadavg().map(round1);
  const kube = await startKubeCluster({
    name: `bench-${process.pid}`,
    gatewayCrds: true,
    controllerManagerArgs: [
      '--kube-api-qps=500',
      '--kube-api-burst=1000',
      '--concurrent-service-endpoint-syncs=10',
    ],
  });
  let cp1: ControlPlane | undefined;
  let cp2: ControlPlane | undefined;
  let clients: ChildProcess | undefined;
  const cleanup = async () => {
    if (clients) await stopClients(clients);
    await cp1?.close();
    await cp2?.close();
    await kube.stop();
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => void cleanup().finally(() => process.exit(130)));
  }
  try {
    await applySockmeshCrds(kube);
    const admin = new KubeClient(loadKubeconfig(kube.kubeconfig));
    await admin.json('POST', '/api/v1/namespaces', {
      body: { metadata: { name: NS, labels: { 'sockmesh.io/mesh': 'enabled' } } },
    });
    for (let n = 0; n < NODES; n++) {
      await admin.json('POST', '/api/v1/nodes', { body: { metadata: { name: `node${n}` } } });
      await admin.json('PATCH', `/api/v1/nodes/node${n}/status`, {
        contentType: 'application/merge-patch+json',
        body: {
          status: {
            addresses: [{ type: 'InternalIP', address: `10.99.0.${n + 1}` }],
            conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
          },
        },
      });
    }

    // A. The control plane learns the cluster through its watches.
    const a = await startControlPlane(kube.kubeconfig);
    cp1 = a.cp;
    const acks = new AckLog(cp1, ROUTE_TYPE);
    const c1 = startClients(cp1.addresses()[0]!, CLIENTS);
    clients = c1.child;
    await c1.ready;
    const tPop = performance.now();
    const phases = await populateInChild(kube.kubeconfig);
    const created = performance.now();
    process.stderr.write(`[kube-scale] every object created in ${Math.round(created - tPop)} ms\n`);
    await waitFor(
      `${SERVICES} clusters with ${PODS_PER_SERVICE} endpoints each`,
      () => fullAssignments(cp1!) === SERVICES && route0Weight(cp1!) === 90,
      600_000,
      500,
    );
    const caughtUp = performance.now();
    const catchUpAcked = await allAckedCurrent(cp1).catch(() => Number.NaN);
    process.stderr.write(
      `[kube-scale] caught up ${Math.round(caughtUp - created)} ms after the last create\n`,
    );

    // B. One route change to the last ACK, from kubectl apply and from the API PATCH alone.
    const change = async (weight: number, how: 'kubectl' | 'patch'): Promise<number> => {
      const t0 = performance.now();
      if (how === 'kubectl') {
        const r = await kube.kubectl(['apply', '-f', '-'], { input: JSON.stringify(routeBody(0, weight)) });
        if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`);
      } else {
        await admin.json('PATCH', `${HTTPROUTES}/split-0`, {
          contentType: 'application/merge-patch+json',
          body: { spec: routeBody(0, weight).spec },
        });
      }
      await waitFor(`route weight ${weight} in the snapshot`, () => route0Weight(cp1!) === weight, 60_000, 2);
      const last = await acks.all(cp1!.snapshot!.version, CLIENTS);
      return last - t0;
    };
    // A user's kubectl has its discovery cache warm: one read first, untimed.
    await kube.kubectl(['get', 'httproute', 'split-0', '-n', NS, '-o', 'name']);
    const viaKubectl: number[] = [];
    const viaPatch: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      viaKubectl.push(await change(50 + 2 * r, 'kubectl'));
      viaPatch.push(await change(51 + 2 * r, 'patch'));
    }

    // Baseline of the same run: one full rebuild (model + translation + encoding of the whole mesh),
    // no API server involved, forced as bench/xds-push.ts does.
    const rebuilds: number[] = [];
    for (let r = 0; r < 3; r++) {
      (cp1 as unknown as { fingerprint: string }).fingerprint = '';
      const t0 = performance.now();
      await cp1.reload();
      rebuilds.push(performance.now() - t0);
    }

    // C. Memory with everything loaded and the clients connected.
    await new Promise((r) => setTimeout(r, 2000));
    const collected = gcNow();
    const mem = process.memoryUsage();
    const memory = {
      afterFullGc: collected,
      rssMiB: mib(mem.rss),
      heapUsedMiB: mib(mem.heapUsed),
      heapTotalMiB: mib(mem.heapTotal),
      externalMiB: mib(mem.external),
      cluster: componentRss(kube),
    };
    const counts = a.source.stats();
    await stopClients(clients);
    clients = undefined;
    await cp1.close();
    cp1 = undefined;

    // D. First full sync of a fresh control plane on the populated cluster.
    const t0 = performance.now();
    const b = await startControlPlane(kube.kubeconfig);
    cp2 = b.cp;
    const firstSnapshot = performance.now() - t0;
    if (fullAssignments(cp2) !== SERVICES) throw new Error('the first snapshot lacks endpoints');
    const c2 = startClients(cp2.addresses()[0]!, CLIENTS);
    clients = c2.child;
    const allServed = await c2.ready;

    const result = {
      date: started,
      node: process.version,
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      loadavg: { atStart: loadAtStart, atEnd: loadavg().map(round1) },
      command: `node --import tsx bench/kube-scale.ts --services ${SERVICES} --pods-per-service ${PODS_PER_SERVICE} --routes ${ROUTES} --clients ${CLIENTS} --rounds ${ROUNDS}`,
      size: {
        services: SERVICES,
        pods: SERVICES * PODS_PER_SERVICE,
        httpRoutes: ROUTES,
        nodes: NODES,
        clients: CLIENTS,
        serviceAccounts: SERVICES,
      },
      createMs: { ...phases, total: Object.values(phases).reduce((x, y) => x + y, 0) },
      catchUp: {
        snapshotMs: Math.round(caughtUp - created),
        lastAckMs: Number.isNaN(catchUpAcked) ? null : Math.round(Math.max(catchUpAcked, caughtUp) - created),
      },
      fullRebuildMs: round1(median(rebuilds)),
      routeChangeToLastAckMs: {
        kubectlApply: { median: round1(median(viaKubectl)), rounds: viaKubectl.map(round1) },
        apiPatch: { median: round1(median(viaPatch)), rounds: viaPatch.map(round1) },
      },
      firstFullSync: {
        snapshotMs: Math.round(firstSnapshot),
        clientsConnectToAllServedMs: Math.round(allServed),
      },
      memory,
      reflectors: Object.fromEntries(
        Object.entries(counts).map(([k, s]) => [
          k,
          { lists: s.lists, watches: s.watches, gone: s.gone, errors: s.errors },
        ]),
      ),
      note: 'The control plane runs in this process (RSS, heap); the ADS clients and object creation run in child processes. Push times include the control plane debounce (20 ms), the watch delivery, translation of the whole mesh and the ACK of every client.',
    };
    writeFileSync(path.join(RESULTS, 'kube-scale.json'), `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(path.join(RESULTS, 'kube-scale.md'), render(result));
    process.stdout.write(render(result));
    await admin.close();
  } finally {
    await cleanup();
  }
}

function render(r: {
  date: string;
  loadavg: { atStart: number[]; atEnd: number[] };
  cpus: number;
  cpu: string | undefined;
  node: string;
  command: string;
  size: Record<string, number>;
  createMs: Record<string, number>;
  catchUp: { snapshotMs: number; lastAckMs: number | null };
  fullRebuildMs: number;
  routeChangeToLastAckMs: Record<string, { median: number; rounds: number[] }>;
  firstFullSync: { snapshotMs: number; clientsConnectToAllServedMs: number };
  memory: {
    afterFullGc: boolean;
    rssMiB: number;
    heapUsedMiB: number;
    heapTotalMiB: number;
    externalMiB: number;
    cluster: Record<string, number>;
  };
}): string {
  const s = r.size;
  return `# Control plane on a real kube-apiserver at scale (bench/kube-scale.ts)

${r.date}, ${r.cpus} x ${r.cpu}, Node ${r.node}, load average ${r.loadavg.atStart.join(' ')} at the start and
${r.loadavg.atEnd.join(' ')} at the end (the machine is shared: other work inflates the times). Reproduce: \`${r.command}\`
(or \`npm run bench -- --only kube-scale\`).

Size: ${s.services} Services, ${s.pods} Pods (Running, Ready, with a podIP) on ${s.nodes} Nodes,
${s.httpRoutes} HTTPRoutes, ${s.serviceAccounts} ServiceAccounts; EndpointSlices written by the real
kube-controller-manager; ${s.clients} ADS clients (wildcard LDS/RDS/CDS/EDS, every response ACKed).

| measure | ms |
|---|---:|
| route change, \`kubectl apply\` -> last client's ACK (median of ${r.routeChangeToLastAckMs.kubectlApply!.rounds.length}) | ${r.routeChangeToLastAckMs.kubectlApply!.median} |
| route change, API PATCH -> last client's ACK (median of ${r.routeChangeToLastAckMs.apiPatch!.rounds.length}) | ${r.routeChangeToLastAckMs.apiPatch!.median} |
| baseline of this run: one full rebuild of the snapshot (model, translation, encoding; median of 3) | ${r.fullRebuildMs} |
| first full sync: fresh control plane -> first snapshot (list + translate) | ${r.firstFullSync.snapshotMs} |
| first full sync: then ${s.clients} clients connect -> every one holds all four types | ${r.firstFullSync.clientsConnectToAllServedMs} |
| watch catch-up: last object created -> snapshot has every endpoint | ${r.catchUp.snapshotMs} |
| watch catch-up: last object created -> every client ACKed it | ${r.catchUp.lastAckMs ?? 'n/a'} |
| creating the objects (${CONCURRENCY} parallel API requests) | ${r.createMs.total} |

Rounds (ms): kubectl apply ${r.routeChangeToLastAckMs.kubectlApply!.rounds.join(', ')}; PATCH ${r.routeChangeToLastAckMs.apiPatch!.rounds.join(', ')}.
Creation phases (ms): ${Object.entries(r.createMs)
    .filter(([k]) => k !== 'total')
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}.

Control plane memory with all of it loaded and ${s.clients} clients connected${r.memory.afterFullGc ? ', after a full GC' : ' (no GC forced)'}:
RSS ${r.memory.rssMiB} MiB, V8 heap used ${r.memory.heapUsedMiB} MiB (total ${r.memory.heapTotalMiB} MiB), external ${r.memory.externalMiB} MiB.
For scale, the cluster's own processes (RSS MiB): ${Object.entries(r.memory.cluster)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}.
`;
}

if (values.worker) {
  process.send!({ connecting: true });
  const conns = Array.from({ length: CLIENTS }, (_, i) => new AckingClient(values.worker!, i));
  while (conns.some((c) => c.types.size < 4)) await new Promise((r) => setTimeout(r, 20));
  process.send!({ ready: true });
  process.on('message', (m: { stop?: boolean }) => {
    if (!m.stop) return;
    for (const c of conns) c.close();
    process.exit(0);
  });
} else if (values.populate) {
  const phases = await populate(values.populate);
  process.send!(phases);
  process.exit(0);
} else {
  await main();
}
