/**
 * A real Kubernetes control plane on 127.0.0.1 for tests and the lab: kine (in-memory storage),
 * kube-apiserver (flags as envtest sets them) and kube-controller-manager. No kubelet, no scheduler:
 * callers create Node objects, bind pods with spec.nodeName and patch pod status themselves.
 *
 * Nothing outlives its owner. As root, the cluster is recorded like a test bed (lab/state.ts:
 * a `lab-<id>.json` with the owner pid, one cgroup holding every process), so `sockmesh down`,
 * `TestBed.reapStale()` and this module's own start reap a cluster whose owner died; a watchdog
 * in that cgroup kills it (cgroup.kill) within a second of the owner's death. Without root there
 * is no cgroup: stop() and the process 'exit' hook still kill every pid, a SIGKILLed owner does not.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SockmeshError } from '../../lib/errors.js';
import { findCgroup2Mount } from '../host.js';
import { DEFAULT_STATE_DIR, type LabRecord, writeRecord } from '../state.js';
import { TestBed } from '../testbed.js';
import { type KubeBinaries, kubeBinaries } from './binaries.js';
import { generateKubePki, type KubePki } from './pki.js';
import { Component } from './process.js';

/** The lab's Service VIPs (examples/shop: 10.96.0.10, 10.96.0.20, ...) are in this range. */
export const SERVICE_CIDR = '10.96.0.0/16';
/** The first address of SERVICE_CIDR, which the API server gives the `kubernetes` Service. */
export const KUBERNETES_SERVICE_IP = '10.96.0.1';
export const DEFAULT_CONTROLLERS = [
  'endpointslice',
  'endpointslicemirroring',
  'namespace',
  'serviceaccount',
  'serviceaccount-token',
  'garbagecollector',
];
const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';
const READY_TIMEOUT_MS = 120_000;
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export interface KubeClusterOptions {
  /** A DNS label: the kubeconfig's cluster/context name and the controller-manager's --cluster-name. */
  name: string;
  /** Where certificates, the kubeconfig and logs go; kept after stop(). Default: a temp dir, removed. */
  dir?: string;
  /** kube-controller-manager --controllers; default DEFAULT_CONTROLLERS. */
  controllers?: string[];
  /** More kube-controller-manager flags (the scale bench raises its client rate limits, as large clusters do). */
  controllerManagerArgs?: string[];
  /** Apply the Gateway API standard-channel CRDs and wait until they are Established. */
  gatewayCrds?: boolean;
  /** Every output line of every component, prefixed with its name. */
  log?: (line: string) => void;
  /** How long each component may take to become ready (default 120 s). */
  readyTimeoutMs?: number;
  stateDir?: string;
}

/** Admin credentials (CN=sockmesh-admin, O=system:masters) for a Kubernetes client library. */
export interface KubeTlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

export interface KubectlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface KubeCluster {
  readonly name: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** Path of an admin kubeconfig with the credentials embedded. */
  readonly kubeconfig: string;
  readonly dir: string;
  readonly caPem: string;
  /** The state record's run id when recorded (root), else undefined. */
  readonly runId: string | undefined;
  /** Every process of the cluster that is running now (components and the watchdog). */
  pids(): number[];
  adminTls(): KubeTlsMaterial;
  /** The built kubectl against this cluster. */
  kubectl(args: string[], opts?: { input?: string }): Promise<KubectlResult>;
  /** Stops and starts kube-apiserver on the same port; kine keeps the data. */
  restartApiServer(): Promise<void>;
  /** Stops every process (SIGTERM, SIGKILL after 5 s) and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

/** Clusters this process owns: killed on process exit if stop() never ran. */
const owned = new Set<LocalKubeCluster>();
let exitHookInstalled = false;

export async function startKubeCluster(opts: KubeClusterOptions): Promise<KubeCluster> {
  if (!NAME.test(opts.name) || opts.name.length > 40) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `cluster name '${opts.name}' is not a DNS label`);
  }
  const bins = kubeBinaries();
  const cluster = new LocalKubeCluster(opts, bins);
  owned.add(cluster);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of owned) c.killSync();
    });
  }
  try {
    await cluster.start();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

class LocalKubeCluster implements KubeCluster {
  readonly name: string;
  readonly dir: string;
  readonly kubeconfig: string;
  server = '';
  caPem = '';
  runId: string | undefined;
  private readonly keepDir: boolean;
  private readonly stateDir: string;
  private readonly readyTimeoutMs: number;
  private readonly logDir: string;
  private readonly pkiDir: string;
  private pki: KubePki | undefined;
  private cgroup: string | undefined;
  private record: LabRecord | undefined;
  private watchdog: Component | undefined;
  private kine: Component | undefined;
  private apiserver: Component | undefined;
  private kcm: Component | undefined;
  private apiserverArgv: string[] = [];
  private stopped = false;

  constructor(
    private readonly opts: KubeClusterOptions,
    private readonly bins: KubeBinaries,
  ) {
    this.name = opts.name;
    this.keepDir = opts.dir !== undefined;
    this.dir = opts.dir ?? mkdtempSync(join(tmpdir(), `sockmesh-kube-${opts.name}-`));
    this.stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS;
    this.logDir = join(this.dir, 'logs');
    this.pkiDir = join(this.dir, 'pki');
    this.kubeconfig = join(this.dir, 'kubeconfig');
    mkdirSync(this.logDir, { recursive: true });
    mkdirSync(this.pkiDir, { recursive: true, mode: 0o700 });
  }

  async start(): Promise<void> {
    if (process.getuid?.() === 0) this.recordAndGuard();
    const [kinePort, apiPort, kcmPort] = (await freePorts(3)) as [number, number, number];
    this.server = `https://127.0.0.1:${apiPort}`;
    this.pki = await generateKubePki({ serviceIps: [KUBERNETES_SERVICE_IP] });
    this.caPem = this.pki.caPem;
    const f = this.writePki(this.pki);
    writeFileSync(this.kubeconfig, this.kubeconfigYaml(), { mode: 0o600 });

    this.kine = this.spawn('kine', [
      this.bins.kine,
      '--endpoint',
      'memory://',
      '--listen-address',
      `127.0.0.1:${kinePort}`,
      '--metrics-bind-address',
      '0',
    ]);
    await this.waitReady(this.kine, `tcp://127.0.0.1:${kinePort}`, () => canConnect(kinePort));

    this.apiserverArgv = [
      this.bins.kubeApiserver,
      `--etcd-servers=http://127.0.0.1:${kinePort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      // The reconciler refuses a loopback advertise address; the `kubernetes` Service then has no endpoints.
      '--endpoint-reconciler-type=none',
      `--secure-port=${apiPort}`,
      `--cert-dir=${join(this.pkiDir, 'apiserver')}`,
      `--tls-cert-file=${f.servingCert}`,
      `--tls-private-key-file=${f.servingKey}`,
      `--client-ca-file=${f.ca}`,
      `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
      `--service-account-key-file=${f.saPub}`,
      `--service-account-signing-key-file=${f.saKey}`,
      '--authorization-mode=RBAC',
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      '--allow-privileged=true',
      '--profiling=false',
    ];
    await this.startApiServer();

    this.kcm = this.spawn('kube-controller-manager', [
      this.bins.kubeControllerManager,
      `--kubeconfig=${this.kubeconfig}`,
      `--authentication-kubeconfig=${this.kubeconfig}`,
      `--authorization-kubeconfig=${this.kubeconfig}`,
      `--controllers=${(this.opts.controllers ?? DEFAULT_CONTROLLERS).join(',')}`,
      '--leader-elect=false',
      '--use-service-account-credentials=true',
      `--root-ca-file=${f.ca}`,
      `--service-account-private-key-file=${f.saKey}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${kcmPort}`,
      `--cert-dir=${join(this.pkiDir, 'kube-controller-manager')}`,
      `--cluster-name=${this.name}`,
      '--profiling=false',
      ...(this.opts.controllerManagerArgs ?? []),
    ]);
    // The controller-manager serves a self-signed certificate from --cert-dir: only liveness is checked.
    await this.waitReady(this.kcm, `https://127.0.0.1:${kcmPort}/healthz`, () =>
      httpsOk(`https://127.0.0.1:${kcmPort}/healthz`, { rejectUnauthorized: false }),
    );

    if (this.opts.gatewayCrds) await this.applyGatewayCrds();
  }

  pids(): number[] {
    return [this.kine, this.apiserver, this.kcm, this.watchdog]
      .filter((c): c is Component => c !== undefined && c.exit === undefined)
      .map((c) => c.pid);
  }

  adminTls(): KubeTlsMaterial {
    if (!this.pki) throw new SockmeshError('SOCKMESH_E_LAB', `cluster ${this.name} has not started`);
    return { ca: this.pki.caPem, cert: this.pki.adminCertPem, key: this.pki.adminKeyPem };
  }

  kubectl(args: string[], opts: { input?: string } = {}): Promise<KubectlResult> {
    return runCapture(this.bins.kubectl, [`--kubeconfig=${this.kubeconfig}`, ...args], {
      input: opts.input,
      env: { ...process.env, KUBECONFIG: this.kubeconfig, KUBECACHEDIR: join(this.dir, 'kubectl-cache') },
    });
  }

  async restartApiServer(): Promise<void> {
    if (this.stopped) throw new SockmeshError('SOCKMESH_E_LAB', `cluster ${this.name} is stopped`);
    await this.apiserver?.stop();
    await this.startApiServer();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // Dependents first, storage last, the watchdog once nothing is left to guard.
    for (const c of [this.kcm, this.apiserver, this.kine, this.watchdog]) await c?.stop();
    owned.delete(this);
    if (this.runId) {
      // The record lists the cgroup and (for a temp dir) the dir: the test bed's teardown removes both.
      TestBed.attach(this.runId, this.stateDir).destroySync();
    } else if (!this.keepDir) {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  killSync(): void {
    if (this.stopped) return;
    for (const c of [this.kcm, this.apiserver, this.kine, this.watchdog]) c?.killSync();
    if (this.runId) TestBed.attach(this.runId, this.stateDir).destroySync();
    else if (!this.keepDir) rmSync(this.dir, { recursive: true, force: true });
    this.stopped = true;
  }

  // --- internals ------------------------------------------------------------

  /** Writes the state record before the cgroup exists, then starts the watchdog inside it. */
  private recordAndGuard(): void {
    TestBed.reapStale(this.stateDir);
    const cgroup2 = findCgroup2Mount();
    this.runId = `k${randomBytes(3).toString('hex').slice(0, 5)}`;
    this.cgroup = join(cgroup2, `sockmesh-${this.runId}`);
    this.record = {
      version: 1,
      runId: this.runId,
      ownerPid: process.pid,
      persistent: false,
      createdAt: new Date().toISOString(),
      cgroup2,
      bpffs: '',
      cgroupRoot: this.cgroup,
      bpffsRoot: '',
      fabricNetns: '',
      nodes: [],
      pods: [],
      hosts: {},
      created: { netns: [], cgroups: [this.cgroup], etcNetns: [], bpffsDirs: [], dirs: [] },
      extra: { kubeCluster: { name: this.name, dir: this.dir } },
    };
    if (!this.keepDir) this.record.created.dirs.push(this.dir);
    writeRecord(this.stateDir, this.record);
    mkdirSync(this.cgroup);
    // Polls the owner; when it is gone, kills everything in the cgroup (itself included).
    this.watchdog = this.spawn('watchdog', [
      '/bin/sh',
      '-c',
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done; echo 1 > "$2/cgroup.kill"',
      'sh',
      String(process.pid),
      this.cgroup,
    ]);
  }

  private saveRecord(): void {
    if (!this.record) return;
    this.record.extra = {
      kubeCluster: { name: this.name, dir: this.dir, server: this.server, pids: this.pids() },
    };
    writeRecord(this.stateDir, this.record);
  }

  private spawn(name: string, argv: string[]): Component {
    if (this.stopped) throw new SockmeshError('SOCKMESH_E_LAB', `cluster ${this.name} is stopped`);
    const c = new Component({
      name,
      argv,
      logFile: join(this.logDir, `${name}.log`),
      cgroup: this.cgroup,
      log: this.opts.log,
    });
    return c;
  }

  private async startApiServer(): Promise<void> {
    this.apiserver = this.spawn('kube-apiserver', this.apiserverArgv);
    this.saveRecord();
    const url = `${this.server}/readyz`;
    const tls = this.adminTls();
    await this.waitReady(this.apiserver, url, () => httpsOk(url, tls));
    this.saveRecord();
  }

  private async applyGatewayCrds(): Promise<void> {
    const args = ['apply', '--server-side', '--force-conflicts', '-o', 'name'];
    for (const file of this.bins.gatewayCrds) args.push('-f', file);
    const applied = await this.kubectl(args);
    if (applied.code !== 0) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `applying the Gateway API ${this.bins.versions.gatewayApi} CRDs failed: ${applied.stderr.trim()}`,
      );
    }
    const crds = applied.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('customresourcedefinition.'));
    const waited = await this.kubectl([
      'wait',
      '--for=condition=Established',
      `--timeout=${Math.round(this.readyTimeoutMs / 1000)}s`,
      ...crds,
    ]);
    if (waited.code !== 0) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `the Gateway API CRDs did not become Established: ${waited.stderr.trim()}`,
      );
    }
  }

  /** Polls `probe` until it succeeds; fails early (with the log tail) if the component exits. */
  private async waitReady(c: Component, what: string, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    while (true) {
      if (c.exit) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `${c.name} of cluster ${this.name} exited (code ${c.exit.code}, signal ${c.exit.signal}) before ${what} was ready; ${c.logFile} ends with:\n${c.tail()}`,
        );
      }
      if (await probe()) return;
      if (Date.now() > deadline) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `${c.name} of cluster ${this.name} was not ready at ${what} within ${this.readyTimeoutMs / 1000} s; ${c.logFile} ends with:\n${c.tail()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  private writePki(pki: KubePki): Record<'ca' | 'servingCert' | 'servingKey' | 'saKey' | 'saPub', string> {
    const files = {
      ca: ['ca.crt', pki.caPem],
      servingCert: ['apiserver.crt', pki.servingCertPem],
      servingKey: ['apiserver.key', pki.servingKeyPem],
      saKey: ['sa.key', pki.serviceAccountKeyPem],
      saPub: ['sa.pub', pki.serviceAccountPubPem],
      adminCert: ['admin.crt', pki.adminCertPem],
      adminKey: ['admin.key', pki.adminKeyPem],
    } as const;
    const out: Record<string, string> = {};
    for (const [k, [name, pem]] of Object.entries(files)) {
      out[k] = join(this.pkiDir, name);
      writeFileSync(out[k], pem, { mode: 0o600 });
    }
    return out as Record<'ca' | 'servingCert' | 'servingKey' | 'saKey' | 'saPub', string>;
  }

  private kubeconfigYaml(): string {
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const tls = this.adminTls();
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: ${this.name}`,
      '  cluster:',
      `    server: ${this.server}`,
      `    certificate-authority-data: ${b64(tls.ca)}`,
      'users:',
      '- name: admin',
      '  user:',
      `    client-certificate-data: ${b64(tls.cert)}`,
      `    client-key-data: ${b64(tls.key)}`,
      'contexts:',
      `- name: ${this.name}`,
      '  context:',
      `    cluster: ${this.name}`,
      '    user: admin',
      `current-context: ${this.name}`,
      '',
    ].join('\n');
  }
}

/** Ports the kernel hands out for port 0 on 127.0.0.1, all held at once so they differ. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === 'string') throw new Error('no port');
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

function httpsOk(
  url: string,
  tls: Partial<KubeTlsMaterial> & { rejectUnauthorized?: boolean },
): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { ...tls, timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(false));
    req.end();
  });
}

function runCapture(
  file: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv },
): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.once('error', reject);
    child.once('close', (code) =>
      resolve({
        code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
    child.stdin.end(opts.input ?? '');
  });
}
