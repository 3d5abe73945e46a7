/**
 * The local mesh: a test bed built from a directory of manifests, with the
 * control plane, one agent per node and the example workloads running in it.
 * `sockmesh up` and the end-to-end tests both start exactly this.
 */

import type { ChildProcess } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { saveAuthority } from '../certs/ca/store.js';
import { CertificateAuthority, cgroup2MountPoint, workloadSpiffeId } from '../certs/index.js';
import { SockmeshError } from '../lib/errors.js';
import type { TcpHealthReport } from '../mesh-agent/telemetry/tcp-health.js';
import { AdminClient } from '../xds/client/admin.js';
import { buildModel } from '../xds/model/build.js';
import type { MeshModel } from '../xds/model/types.js';
import { DirectorySource } from '../xds/sources/directory.js';
import { formatConfigError } from '../xds/sources/source.js';
import { type KubeLabInfo, kubectlSync, kubeLabInfo, kubeOverlay, waitLabKube } from './kube/mesh.js';
import { TestBed } from './testbed.js';
import type { ExecResult, LabNode, LabPod } from './types.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), import.meta.url.endsWith('.ts') ? '..' : '../..');
const EXAMPLE_APP = join(ROOT, 'examples', 'shop', 'app', 'server.mjs');
const PROBE = join(ROOT, 'lab', 'probe.mjs');

/** How to run the sockmesh CLI from here: compiled output when built, the sources through tsx otherwise. */
export function cliArgv(): string[] {
  if (import.meta.url.endsWith('.ts'))
    return [process.execPath, '--import', 'tsx', join(ROOT, 'cli', 'main.ts')];
  return [process.execPath, join(ROOT, 'dist', 'cli', 'main.js')];
}

/** Where agents run from: `SOCKMESH_LAB_AGENTS=dist|src` forces it; by default dist/ when it is up to date. */
export const AGENTS_FROM_ENV = 'SOCKMESH_LAB_AGENTS';

const DIST_MAIN = join(ROOT, 'dist', 'cli', 'main.js');
/** The folders dist/ is compiled from: a .ts file newer than dist/cli/main.js means dist/ is stale. */
const SOURCE_DIRS = ['bpf-sockops', 'certs', 'cli', 'lab', 'lib', 'mesh-agent', 'xds'];

function newestSourceMs(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'build' || e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSourceMs(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Agents are the data path every lab and bench number is taken on, so they run as plain `node` from
 * dist/ (tsx costs ~35 MiB per process, a slower start and a keep-names wrapper on every closure)
 * whenever `npm run build` output is at least as new as every source file; otherwise, or with
 * SOCKMESH_LAB_AGENTS=src, from the sources. `root` and `env` are for tests.
 */
export function agentsFrom(
  root: string = ROOT,
  env: Readonly<Record<string, string | undefined>> = process.env,
): 'dist' | 'src' {
  if (root === ROOT && !import.meta.url.endsWith('.ts')) return 'dist';
  const forced = env[AGENTS_FROM_ENV];
  if (forced === 'src') return 'src';
  const main = join(root, 'dist', 'cli', 'main.js');
  if (!existsSync(main)) {
    if (forced === 'dist') {
      throw new SockmeshError('SOCKMESH_E_LAB', `${main} does not exist`, {
        hint: `run \`npm run build\` first, or unset ${AGENTS_FROM_ENV}`,
      });
    }
    return 'src';
  }
  if (forced === 'dist') return 'dist';
  const built = statSync(main).mtimeMs;
  return SOURCE_DIRS.every((d) => !existsSync(join(root, d)) || newestSourceMs(join(root, d)) <= built)
    ? 'dist'
    : 'src';
}

function agentArgv(from: 'dist' | 'src', flags: readonly string[] = []): string[] {
  const [node, ...rest] = from === 'dist' ? [process.execPath, DIST_MAIN] : cliArgv();
  return [node ?? process.execPath, ...flags, ...rest];
}

export interface LocalMeshOptions {
  /** Directory of manifests (e.g. examples/shop). */
  manifestsDir: string;
  runId?: string;
  trustDomain?: string;
  /** SVID lifetime in seconds (default 3600). */
  svidTtlSeconds?: number;
  /** Start the example workload in every pod that declares a container port (default true). */
  workloads?: boolean;
  accessLog?: boolean;
  /** OTLP/HTTP traces endpoint per node (e.g. a collector in that node's netns); agents export spans there. */
  otlp?: (node: LabNode) => string;
  /** Proxy workers per agent (default: the agent's own default, one per core). */
  agentWorkers?: number;
  /** Node flags the agents run with (workers inherit them), e.g. `--max-semi-space-size=16`. */
  agentNodeFlags?: readonly string[];
  /** Extra `sockmesh agent` options, e.g. `--accelerate`. */
  agentArgs?: readonly string[];
  /**
   * SVIDs from a SPIFFE Workload API instead of the agents' own CA: one `sockmesh identity serve`
   * per node (a SPIRE-agent stand-in) registers that node's agent (its cgroup) for the SPIFFE IDs
   * of the pods scheduled there, and the agents run with --workload-api.
   */
  workloadApi?: boolean;
  /**
   * The flags that choose where each node's agent takes its SVIDs from, instead of `--ca-dir` (or
   * the `workloadApi` stand-in): e.g. a real SPIRE agent's `--workload-api <socket>`.
   */
  agentIdentityArgs?: (node: string) => string[];
  /**
   * On Kubernetes: a real API server, controller-manager and storage on loopback (scripts/k8s/build.sh
   * builds them), the lab kubelet realizing the Pods, the control plane reading the API, and the
   * manifests applied with kubectl (README, "The lab on Kubernetes").
   */
  kube?: boolean;
  onProgress?: (step: string) => void;
}

/** The shape of an agent's `/stats/config` (see MeshAgent.status). */
export interface AgentStatus {
  node: string;
  xds: { connected: boolean; versions: Record<string, string | undefined> };
  pods: { pod: string; ip: string; spiffeId: string }[];
  identities: { spiffeId: string; serial: string; notAfter: string }[];
  bpf: Record<string, number>;
  tunnels: number;
  /** HTTP connections to the node's pods relayed since the agent started (null with proxy workers). */
  inboundRelays?: { lean: number; bytes: number } | null;
  /** Kernel TCP health per workload pair (absent from agents older than it). */
  tcpHealth?: TcpHealthReport;
}

export interface MeshPaths {
  runDir: string;
  manifests: string;
  ca: string;
  xdsSocket: string;
  adminSocket: string;
  logs: string;
}

/** Where a node's agent offers its listeners to the next agent (the hitless upgrade). */
export function agentHandoffSocket(paths: MeshPaths, node: string): string {
  return join(paths.runDir, 'handoff', `agent-${node}.sock`);
}

export function meshPaths(bed: TestBed): MeshPaths {
  const runDir = bed.runDir;
  return {
    runDir,
    manifests: join(runDir, 'manifests'),
    ca: join(runDir, 'ca'),
    xdsSocket: join(runDir, 'xds.sock'),
    adminSocket: join(runDir, 'admin.sock'),
    logs: join(runDir, 'logs'),
  };
}

/** The mesh model of a manifests directory, as `LocalMesh.start` builds it. */
export async function loadModel(dir: string, trustDomain: string): Promise<MeshModel> {
  if (!existsSync(dir)) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `manifest directory ${dir} does not exist`);
  }
  const source = new DirectorySource(dir);
  const state = await source.load();
  await source.close();
  const built =
    state.errors.length > 0
      ? { ok: false as const, errors: state.errors }
      : buildModel(state.objects, { trustDomain });
  if (!built.ok) {
    throw new SockmeshError(
      'SOCKMESH_E_MANIFEST',
      `invalid manifests in ${dir}:\n  ${built.errors.map(formatConfigError).join('\n  ')}`,
    );
  }
  return built.model;
}

export class LocalMesh {
  private constructor(
    readonly bed: TestBed,
    readonly model: MeshModel,
    readonly paths: MeshPaths,
  ) {}

  static async start(opts: LocalMeshOptions): Promise<LocalMesh> {
    const progress = opts.onProgress ?? (() => {});
    const trustDomain = opts.trustDomain ?? 'cluster.local';
    const model = await loadModel(opts.manifestsDir, trustDomain);
    const nodeNames = [...model.nodes.keys()].sort();
    if (nodeNames.length === 0) {
      throw new SockmeshError('SOCKMESH_E_MANIFEST', `no Node objects in ${opts.manifestsDir}`, {
        hint: 'declare the nodes (kind: Node, apiVersion: sockmesh.io/v1alpha1) the pods run on',
      });
    }
    progress(`building ${nodeNames.length} nodes`);
    const bed = await TestBed.create({ nodes: nodeNames, ...(opts.runId ? { runId: opts.runId } : {}) });
    try {
      const mesh = new LocalMesh(bed, model, meshPaths(bed));
      await mesh.boot(opts, trustDomain, progress);
      return mesh;
    } catch (err) {
      await bed.destroy();
      throw err;
    }
  }

  /** Connects to the control plane's admin endpoint (apply, status). */
  admin(): AdminClient {
    return new AdminClient(`unix:${this.paths.adminSocket}`);
  }

  /** What a node's agent reports about itself (`/stats/config`), or its error. */
  async agentStatus(node: string): Promise<AgentStatus | { error: string }> {
    try {
      const r = await this.agentGet(node, '/stats/config');
      return r.status === 200 ? (JSON.parse(r.body) as AgentStatus) : { error: `HTTP ${r.status}` };
    } catch (err) {
      return { error: (err as Error).message };
    }
  }

  /** Re-opens the mesh of a running bed (CLI verbs after `sockmesh up`). */
  static async attach(bed: TestBed): Promise<LocalMesh> {
    const paths = meshPaths(bed);
    return new LocalMesh(
      bed,
      await loadModel(paths.manifests, bed.getExtra<string>('trustDomain') ?? 'cluster.local'),
      paths,
    );
  }

  private async boot(
    opts: LocalMeshOptions,
    trustDomain: string,
    progress: (s: string) => void,
  ): Promise<void> {
    const { bed, model, paths } = this;
    for (const node of bed.nodes) {
      const declared = model.nodes.get(node.name)?.address;
      if (declared !== undefined && declared !== node.underlayIp) {
        throw new SockmeshError(
          'SOCKMESH_E_MANIFEST',
          `Node ${node.name} declares address ${declared}, but the local mesh gives it ${node.underlayIp}`,
          {
            hint: `set spec.address: ${node.underlayIp} (nodes are numbered in name order from 10.10.0.1)`,
          },
        );
      }
    }
    mkdirSync(paths.logs, { recursive: true });
    cpSync(opts.manifestsDir, paths.manifests, {
      recursive: true,
      filter: (src) => !/\/app(\/|$)/.test(src.slice(opts.manifestsDir.length)),
    });
    bed.setExtra('trustDomain', trustDomain);

    progress(`creating the ${trustDomain} certificate authority`);
    const ca = await CertificateAuthority.createRoot({ trustDomain });
    await saveAuthority(paths.ca, ca, 'generated');

    if (opts.kube) {
      await this.bootKube(opts, progress);
      return;
    }

    progress(`creating ${model.workloads.size} pods`);
    for (const w of model.workloads.values()) {
      if (!w.node) continue;
      bed.addPodSync({
        name: w.name,
        namespace: w.namespace,
        node: w.node,
        labels: { ...w.labels },
        serviceAccount: w.serviceAccount,
        ...(w.ip ? { ip: w.ip } : {}),
      });
    }
    const hosts: Record<string, string> = {};
    for (const s of model.services.values()) {
      if (!s.clusterIP) continue;
      for (const name of [
        `${s.name}.${s.namespace}.svc.${model.clusterDomain}`,
        `${s.name}.${s.namespace}.svc`,
        `${s.name}.${s.namespace}`,
      ]) {
        hosts[name] = s.clusterIP;
      }
    }
    bed.setHosts(hosts);

    progress('starting the control plane');
    await this.startControlPlane();
    if (opts.workloadApi) {
      progress('starting a Workload API server per node');
      for (const node of bed.nodes) await this.startWorkloadApi(node.name);
    }
    this.startAgents(opts);

    if (opts.workloads !== false) {
      progress('starting the workloads');
      this.startWorkloads();
    }
    progress('waiting for agents and workloads to be ready');
    await this.waitReady(30_000);
  }

  /**
   * The same mesh with Kubernetes as the source of truth: the lab-kube daemon (API server, storage,
   * controller-manager, lab kubelet), the control plane on the API, the agents, then the manifests
   * applied with kubectl; the lab kubelet creates the pods and starts their workloads.
   */
  private async bootKube(opts: LocalMeshOptions, progress: (s: string) => void): Promise<void> {
    const { bed, model, paths } = this;
    progress('starting Kubernetes (kine, kube-apiserver, kube-controller-manager) and the lab kubelet');
    const logFile = join(paths.logs, 'lab-kube.log');
    const daemon = bed.spawn(bed.host, [...cliArgv(), 'lab-kube', '--run', bed.runId], {
      logFile,
      cwd: ROOT,
    });
    const info = await waitLabKube(bed, daemon.pid ?? -1, logFile, 180_000);
    bed.reload();
    progress('starting the control plane (on the Kubernetes API)');
    await this.startControlPlane();
    this.startAgents(opts);
    const pods = [...model.workloads.values()].filter((w) => w.node);
    progress(`applying ${opts.manifestsDir} with kubectl (${pods.length} pods)`);
    const applied = kubectlSync(info, ['apply', '-f', '-'], kubeOverlay(opts.manifestsDir));
    if (applied.code !== 0) {
      throw new SockmeshError('SOCKMESH_E_MANIFEST', `kubectl apply failed: ${applied.stderr.trim()}`);
    }
    progress('waiting for the lab kubelet, agents and workloads to be ready');
    const deadline = Date.now() + 60_000;
    for (;;) {
      bed.reload();
      const have = new Set(bed.pods.map((p) => `${p.namespace}/${p.name}`));
      const missing = pods.filter((w) => !have.has(`${w.namespace}/${w.name}`));
      if (missing.length === 0) break;
      if (Date.now() > deadline) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `the lab kubelet did not realize ${missing.map((w) => `${w.namespace}/${w.name}`).join(', ')} in 60s\n--- last lines of lab-kube.log ---\n${tail(logFile, 15)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await this.waitReady(30_000);
  }

  /** The Kubernetes API of a `kube` mesh (KUBECONFIG, server), or undefined. */
  get kube(): KubeLabInfo | undefined {
    return kubeLabInfo(this.bed);
  }

  /** Runs the built kubectl against a `kube` mesh's API server. */
  kubectl(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
    const info = this.kube;
    if (!info)
      throw new SockmeshError('SOCKMESH_E_USAGE', `local mesh ${this.bed.runId} does not run on Kubernetes`);
    return kubectlSync(info, args, input);
  }

  private startAgents(opts: LocalMeshOptions): void {
    const { bed, paths } = this;
    const from = agentsFrom();
    opts.onProgress?.(
      `starting ${bed.nodes.length} agents (from ${from === 'dist' ? 'dist/' : 'the sources through tsx'})`,
    );
    const cli = agentArgv(from, opts.agentNodeFlags);
    for (const node of bed.nodes) {
      const argv = [
        ...cli,
        'agent',
        '--node',
        node.name,
        '--control-plane',
        `unix:${paths.xdsSocket}`,
        '--proxy-ip',
        node.gatewayIp,
        '--tunnel-ip',
        node.underlayIp,
        '--cgroup',
        node.cgroupPath,
        '--bpffs',
        node.bpffsDir,
        ...(opts.agentIdentityArgs
          ? opts.agentIdentityArgs(node.name)
          : opts.workloadApi
            ? ['--workload-api', this.workloadApiSocket(node.name)]
            : ['--ca-dir', paths.ca]),
        ...(opts.svidTtlSeconds ? ['--svid-ttl', String(opts.svidTtlSeconds)] : []),
        ...(opts.accessLog ? ['--access-log'] : []),
        ...(opts.agentWorkers ? ['--workers', String(opts.agentWorkers)] : []),
        ...(opts.otlp ? ['--otlp', opts.otlp(node)] : []),
        ...(opts.agentArgs ?? []),
        '--handoff-socket',
        agentHandoffSocket(paths, node.name),
      ];
      // Kept with the bed: `sockmesh lab restart-agent` starts the next agent with the same command.
      bed.setExtra(`agentArgv:${node.name}`, argv);
      bed.spawn(node, argv, { logFile: join(paths.logs, `agent-${node.name}.log`), cwd: ROOT });
    }
  }

  /** Starts the control plane on the host, serving the run's manifests directory over a unix socket. */
  async startControlPlane(): Promise<void> {
    const { bed, paths } = this;
    rmSync(paths.xdsSocket, { force: true });
    const kube = this.kube;
    bed.spawn(
      bed.host,
      [
        ...cliArgv(),
        'control-plane',
        ...(kube ? ['--kubeconfig', kube.kubeconfig] : ['--manifests', paths.manifests]),
        '--unix',
        paths.xdsSocket,
        '--admin',
        `unix:${paths.adminSocket}`,
        '--trust-domain',
        bed.getExtra<string>('trustDomain') ?? 'cluster.local',
        // On Kubernetes the nodes' addresses come from the Node objects the lab kubelet registered.
        ...(kube ? [] : bed.nodes.flatMap((n) => ['--node', `${n.name}=${n.underlayIp}`])),
      ],
      { logFile: join(paths.logs, 'control-plane.log'), cwd: ROOT },
    );
    await this.waitFor(bed.host, [{ kind: 'file', path: paths.xdsSocket }], 20_000, 'the control plane');
  }

  workloadApiSocket(node: string): string {
    return join(this.paths.runDir, 'workload-api', `${node}.sock`);
  }

  workloadApiRegistrations(node: string): string {
    return join(this.paths.runDir, 'workload-api', `${node}.yaml`);
  }

  private readonly workloadApis = new Map<string, ChildProcess>();

  /**
   * Starts (or restarts) a node's Workload API server on the host. Its registration table,
   * written on first start, grants the node's agent (by cgroup) every pod identity of that node.
   */
  async startWorkloadApi(node: string): Promise<void> {
    const { bed, paths } = this;
    const n = bed.node(node);
    const socket = this.workloadApiSocket(node);
    const table = this.workloadApiRegistrations(node);
    if (!existsSync(table)) {
      const mount = await cgroup2MountPoint();
      const ids = [...this.model.workloads.values()]
        .filter((w) => w.node === node)
        .map((w) => workloadSpiffeId(this.model.trustDomain, w.namespace, w.serviceAccount).uri);
      mkdirSync(dirname(table), { recursive: true });
      writeFileSync(
        table,
        `# ${node}'s agent, as SPIRE would register a node proxy: one entry, every local pod identity\n` +
          `entries:\n  - selectors: {cgroup: ${JSON.stringify(n.systemCgroupPath.slice((mount ?? '').length))}}\n` +
          `    spiffeIds: ${JSON.stringify([...new Set(ids)])}\n`,
      );
    }
    rmSync(socket, { force: true });
    const child = bed.spawn(
      bed.host,
      [...cliArgv(), 'identity', 'serve', '--socket', socket, '--registrations', table, '--ca', paths.ca],
      { logFile: join(paths.logs, `workload-api-${node}.log`), cwd: ROOT },
    );
    this.workloadApis.set(node, child);
    await this.waitFor(bed.host, [{ kind: 'file', path: socket }], 20_000, `the Workload API of ${node}`);
  }

  /** Stops a node's Workload API server (SIGHUP instead: reload its table and renew every SVID). */
  async signalWorkloadApi(node: string, signal: NodeJS.Signals): Promise<void> {
    const child = this.workloadApis.get(node);
    const gone = () => !child || child.exitCode !== null || child.signalCode !== null;
    if (gone()) return;
    child!.kill(signal);
    if (signal === 'SIGHUP') return;
    // The child is unref'd (it must not keep a CLI alive): poll for its exit instead of awaiting the event.
    for (let i = 0; i < 200 && !gone(); i++) await new Promise((r) => setTimeout(r, 50));
  }

  /** Kills the control plane (agents keep serving their last config). */
  stopControlPlane(): void {
    const procs = join(this.bed.host.systemCgroupPath, 'cgroup.procs');
    // The nodes' Workload API servers run in the same cgroup and are not the control plane.
    const keep = new Set([...this.workloadApis.values()].map((c) => String(c.pid)));
    // Nor is the lab's Kubernetes (its daemon and the cluster live on the host too).
    const kube = this.kube;
    if (kube) for (const pid of [kube.pid, ...kube.clusterPids]) keep.add(String(pid));
    for (const pid of readFileSync(procs, 'utf8').split('\n').filter(Boolean)) {
      if (keep.has(pid)) continue;
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  /** Writes one manifest file into the live manifests directory; the control plane applies it within a second. */
  writeManifest(name: string, text: string): void {
    const tmp = join(this.paths.manifests, `.${name}.tmp`);
    writeFileSync(tmp, text);
    renameSync(tmp, join(this.paths.manifests, name));
  }

  removeManifest(name: string): void {
    rmSync(join(this.paths.manifests, name), { force: true });
  }

  /** GET on a node agent's admin port (15020), from inside the node. */
  async agentGet(node: string, path: string): Promise<{ status: number; body: string }> {
    const n = this.bed.node(node);
    const script = `fetch(${JSON.stringify(`http://${n.underlayIp}:15020${path}`)}).then(async r=>process.stdout.write(JSON.stringify({status:r.status,body:await r.text()}))).catch(e=>{console.error(String(e.cause??e));process.exit(1)})`;
    const res = await this.bed.exec(n, [process.execPath, '-e', script], { timeoutMs: 10_000 });
    if (res.code !== 0)
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `agent on ${node} did not answer ${path}: ${res.stderr.trim()}`,
      );
    return JSON.parse(res.stdout) as { status: number; body: string };
  }

  /**
   * Several GETs on agents' admin ports in one process inside `from` (the underlay reaches every
   * node): one exec instead of one per request. Each answer is its status and body, or its error.
   */
  async agentGetMany(
    gets: ReadonlyArray<{ node: string; path: string }>,
    from: string = this.bed.nodes[0]?.name ?? '',
  ): Promise<Array<{ status: number; body: string } | { error: string }>> {
    if (gets.length === 0) return [];
    const urls = gets.map((g) => `http://${this.bed.node(g.node).underlayIp}:15020${g.path}`);
    const script = `Promise.all(${JSON.stringify(urls)}.map(u=>fetch(u,{signal:AbortSignal.timeout(8000)}).then(async r=>({status:r.status,body:await r.text()}),e=>({error:String(e.cause??e)})))).then(a=>process.stdout.write(JSON.stringify(a)))`;
    const res = await this.bed.exec(this.bed.node(from), [process.execPath, '-e', script], {
      timeoutMs: 10_000,
    });
    if (res.code !== 0)
      throw new SockmeshError('SOCKMESH_E_LAB', `cannot reach the agents from ${from}: ${res.stderr.trim()}`);
    return JSON.parse(res.stdout) as Array<{ status: number; body: string } | { error: string }>;
  }

  /** The example app in every pod that declares a container port, told who it is by environment. */
  private startWorkloads(): void {
    const declared = this.exampleUpstreams();
    for (const pod of this.bed.pods) {
      const w = this.model.workloads.get(`${pod.namespace}/${pod.name}`);
      const port = w ? Object.values(w.namedPorts)[0] : undefined;
      if (port === undefined) continue;
      const service = pod.labels.app ?? pod.name;
      this.bed.spawn(pod, [process.execPath, EXAMPLE_APP], {
        env: {
          SERVICE: service,
          VERSION: pod.labels.version ?? 'v1',
          POD_NAME: pod.name,
          POD_NAMESPACE: pod.namespace,
          NODE_NAME: pod.node,
          PORT: String(port),
          ...(w?.namedPorts.grpc ? { H2C_PORT: String(w.namedPorts.grpc) } : {}),
          UPSTREAMS: (declared[service] ?? []).join(','),
        },
        logFile: join(this.paths.logs, `pod-${pod.namespace}-${pod.name}.log`),
      });
    }
  }

  /** `examples/<x>/app/upstreams.json`: which services each example service calls. */
  private exampleUpstreams(): Record<string, string[]> {
    const f = join(dirname(EXAMPLE_APP), 'upstreams.json');
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, string[]>) : {};
  }

  /** Agents ready (config applied) and every workload listening. */
  async waitReady(timeoutMs: number): Promise<void> {
    for (const node of this.bed.nodes) {
      const checks: Probe[] = [{ kind: 'http', url: `http://${node.underlayIp}:15020/ready` }];
      for (const pod of this.bed.pods.filter((p) => p.node === node.name)) {
        const w = this.model.workloads.get(`${pod.namespace}/${pod.name}`);
        const port = w ? Object.values(w.namedPorts)[0] : undefined;
        if (port !== undefined) checks.push({ kind: 'tcp', host: pod.ip, port });
      }
      await this.waitFor(node, checks, timeoutMs, `node ${node.name}`);
    }
  }

  private async waitFor(
    target: LabNode | TestBed['host'],
    probes: Probe[],
    timeoutMs: number,
    what: string,
  ): Promise<void> {
    const res = await this.bed.exec(
      target,
      [process.execPath, PROBE, String(timeoutMs), JSON.stringify(probes)],
      {
        timeoutMs: timeoutMs + 5000,
      },
    );
    if (res.code !== 0) {
      const logName = 'index' in target ? `agent-${target.name}.log` : 'control-plane.log';
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `${what} did not become ready in ${timeoutMs / 1000}s: ${res.stderr.trim() || res.stdout.trim()}\n--- last lines of ${logName} ---\n${tail(join(this.paths.logs, logName), 15)}`,
        { hint: `see the logs in ${this.paths.logs}` },
      );
    }
  }

  pod(ref: string): LabPod {
    const [ns, name] = ref.split('/');
    return this.bed.pod(ns ?? '', name ?? '');
  }

  /** Runs a command in a pod, the way `sockmesh exec` does. */
  exec(ref: string, argv: string[], timeoutMs = 30_000): Promise<ExecResult> {
    return this.bed.exec(this.pod(ref), argv, { timeoutMs });
  }

  async stop(): Promise<void> {
    await this.bed.destroy();
  }
}

type Probe =
  | { kind: 'http'; url: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'file'; path: string };

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
