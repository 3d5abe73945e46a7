import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { SockmeshError } from '../lib/errors.js';
import { createLogger } from '../lib/log.js';
import { ip, run, sysctl } from './command.js';
import { preflightLab } from './host.js';
import {
  DEFAULT_STATE_DIR,
  type LabRecord,
  listRecords,
  pidAlive,
  readRecord,
  removeRecord,
  writeRecord,
} from './state.js';
import type {
  ExecResult,
  LabHost,
  LabNode,
  LabPod,
  LabTarget,
  PodSpec,
  RunOptions,
  TestBedOptions,
} from './types.js';

const log = createLogger('lab');

/** Underlay: every node's eth0 sits on one bridge in the fabric namespace; pod CIDRs are plainly routed. */
const UNDERLAY_PREFIX = '10.10.0';
const FABRIC_BRIDGE = 'fab0';
const NODE_BRIDGE = 'cbr0';
const FIRST_POD_HOST = 10;
const ETC_NETNS = '/etc/netns';

const RUN_ID = /^[a-z0-9]{1,8}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function isPod(t: LabTarget): t is LabPod {
  return (t as LabPod).namespace !== undefined && (t as LabHost).kind !== 'host';
}

function cgroupInode(path: string): bigint {
  return statSync(path, { bigint: true }).ino;
}

/** Beds this process owns; removed on exit, Ctrl-C or SIGTERM unless made persistent. */
const owned = new Set<TestBed>();
let exitHooksInstalled = false;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', () => {
    for (const bed of owned) bed.destroySync();
  });
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    process.once(sig, () => {
      for (const bed of owned) bed.destroySync();
      process.exit(code);
    });
  }
}

/**
 * A small cluster on one Linux machine: a netns per node and per pod, a cgroup
 * per pod under its node's subtree, a bpffs directory per node. See lab/types.ts.
 */
export class TestBed {
  private destroyed = false;

  private constructor(
    private readonly rec: LabRecord,
    private readonly stateDir: string,
  ) {}

  static async create(opts: TestBedOptions = {}): Promise<TestBed> {
    const { cgroup2, bpffs } = preflightLab();
    const stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
    TestBed.reapStale(stateDir);
    const runId = opts.runId ?? randomBytes(4).toString('hex').slice(0, 6);
    if (!RUN_ID.test(runId)) {
      throw new SockmeshError('SOCKMESH_E_LAB', `run id '${runId}' is invalid`, {
        hint: 'use 1-8 lowercase letters or digits',
      });
    }
    if (readRecord(stateDir, runId)) {
      throw new SockmeshError('SOCKMESH_E_LAB', `a test bed with run id '${runId}' already exists`, {
        hint: `remove it with: sockmesh down --run ${runId}`,
      });
    }
    const nodeNames =
      typeof opts.nodes === 'number' || opts.nodes === undefined
        ? Array.from({ length: typeof opts.nodes === 'number' ? opts.nodes : 2 }, (_, i) => `node${i + 1}`)
        : opts.nodes;
    if (nodeNames.length < 1 || nodeNames.length > 200) {
      throw new SockmeshError('SOCKMESH_E_LAB', `a test bed needs 1 to 200 nodes, got ${nodeNames.length}`);
    }
    for (const n of nodeNames) {
      if (!DNS_LABEL.test(n) || n.length > 30) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `node name '${n}' is not a DNS label of at most 30 characters`,
        );
      }
    }
    const prefix = `sm-${runId}`;
    const rec: LabRecord = {
      version: 1,
      runId,
      ownerPid: process.pid,
      persistent: false,
      createdAt: new Date().toISOString(),
      cgroup2,
      bpffs,
      cgroupRoot: join(cgroup2, `sockmesh-${runId}`),
      bpffsRoot: join(bpffs, `sockmesh-${runId}`),
      fabricNetns: `${prefix}-fabric`,
      nodes: [],
      pods: [],
      hosts: {},
      created: { netns: [], cgroups: [], etcNetns: [], bpffsDirs: [], dirs: [] },
      extra: {},
    };
    const bed = new TestBed(rec, stateDir);
    owned.add(bed);
    installExitHooks();
    try {
      bed.build(nodeNames);
    } catch (err) {
      bed.destroySync();
      throw err;
    }
    log.debug('test bed ready', { runId, nodes: nodeNames });
    return bed;
  }

  /** Re-opens a bed recorded in the state directory (for CLI verbs run after `sockmesh up`). */
  static attach(runId: string, stateDir = DEFAULT_STATE_DIR): TestBed {
    const rec = readRecord(stateDir, runId);
    if (!rec) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no test bed with run id '${runId}' in ${stateDir}`, {
        hint: 'list the running ones with `sockmesh status`, or start one with `sockmesh up`',
      });
    }
    return new TestBed(rec, stateDir);
  }

  static list(stateDir = DEFAULT_STATE_DIR): LabRecord[] {
    return listRecords(stateDir);
  }

  /** Removes beds whose owner process died without tearing down (crash, SIGKILL). Returns their run ids. */
  static reapStale(stateDir = DEFAULT_STATE_DIR): string[] {
    const reaped: string[] = [];
    for (const rec of listRecords(stateDir)) {
      if (rec.persistent || pidAlive(rec.ownerPid)) continue;
      log.info('removing stale test bed left by a dead process', {
        runId: rec.runId,
        ownerPid: rec.ownerPid,
      });
      new TestBed(rec, stateDir).destroySync();
      reaped.push(rec.runId);
    }
    return reaped;
  }

  get runId(): string {
    return this.rec.runId;
  }
  get prefix(): string {
    return `sm-${this.rec.runId}`;
  }
  get cgroupRoot(): string {
    return this.rec.cgroupRoot;
  }
  get bpffsRoot(): string {
    return this.rec.bpffsRoot;
  }
  get fabricNetns(): string {
    return this.rec.fabricNetns;
  }
  get nodes(): readonly LabNode[] {
    return this.rec.nodes;
  }
  get pods(): readonly LabPod[] {
    return this.rec.pods.map((p) => ({ ...p, cgroupId: BigInt(p.cgroupId) }));
  }
  get hosts(): Readonly<Record<string, string>> {
    return this.rec.hosts;
  }
  get persistent(): boolean {
    return this.rec.persistent;
  }

  /** The host (root netns) as a place to run the bed's own daemons, inside the bed's cgroup. */
  get host(): LabHost {
    return { kind: 'host', netns: undefined, systemCgroupPath: join(this.rec.cgroupRoot, 'host') };
  }

  /** A per-run directory for configs, sockets and logs; removed with the bed. */
  get runDir(): string {
    return join(this.stateDir, this.rec.runId);
  }

  node(name: string): LabNode {
    const n = this.rec.nodes.find((x) => x.name === name);
    if (!n) {
      throw new SockmeshError(
        'SOCKMESH_E_NOT_FOUND',
        `node '${name}' is not part of test bed ${this.runId}`,
        {
          hint: `known nodes: ${this.rec.nodes.map((x) => x.name).join(', ')}`,
        },
      );
    }
    return n;
  }

  pod(namespace: string, name: string): LabPod {
    const p = this.pods.find((x) => x.namespace === namespace && x.name === name);
    if (!p) {
      throw new SockmeshError(
        'SOCKMESH_E_NOT_FOUND',
        `pod ${namespace}/${name} is not part of test bed ${this.runId}`,
        {
          hint: `known pods: ${this.pods.map((x) => `${x.namespace}/${x.name}`).join(', ') || '(none)'}`,
        },
      );
    }
    return p;
  }

  /** Keeps the bed after this process exits (for `sockmesh up`); only `sockmesh down` removes it. */
  persist(): void {
    this.reload();
    this.rec.persistent = true;
    this.save();
    owned.delete(this);
  }

  /**
   * Re-reads the record from the state file: another process (the lab kubelet) may add and remove
   * pods of this bed. Only one process writes the record at a time; readers reload.
   */
  reload(): void {
    const disk = readRecord(this.stateDir, this.rec.runId);
    if (disk && !this.destroyed)
      Object.assign(this.rec, disk, { persistent: this.rec.persistent || disk.persistent });
  }

  /**
   * A daemon that must be stopped with SIGTERM (and waited for, up to 20 s) before the bed's
   * cgroups are killed, because it cleans up after itself outside the bed (the lab's Kubernetes
   * cluster). Recorded with its start time, so a reused pid is never signalled.
   */
  addGracefulDaemon(pid: number): void {
    const list = (this.rec.extra[GRACEFUL_KEY] as GracefulDaemon[] | undefined) ?? [];
    this.setExtra(GRACEFUL_KEY, [...list, { pid, startTime: processStartTime(pid) }]);
  }

  /** Data that higher layers keep with the bed (daemons started, config paths). */
  getExtra<T>(key: string): T | undefined {
    return this.rec.extra[key] as T | undefined;
  }
  setExtra(key: string, value: unknown): void {
    this.rec.extra[key] = value;
    this.save();
  }

  async addPod(spec: PodSpec): Promise<LabPod> {
    return this.addPodSync(spec);
  }

  addPodSync(spec: PodSpec): LabPod {
    for (const [what, v] of [
      ['pod name', spec.name],
      ['namespace', spec.namespace],
    ] as const) {
      if (!DNS_LABEL.test(v) || v.length > 40) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `${what} '${v}' is not a DNS label of at most 40 characters`,
        );
      }
    }
    if (this.rec.pods.some((p) => p.namespace === spec.namespace && p.name === spec.name)) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `pod ${spec.namespace}/${spec.name} already exists in test bed ${this.runId}`,
      );
    }
    const node = this.node(spec.node);
    const ipAddr = spec.ip ?? this.nextPodIp(node);
    this.checkPodIp(node, ipAddr);
    const host = Number(ipAddr.split('.')[3]);
    const netns = `${this.prefix}-${spec.namespace}-${spec.name}`;
    const cgroupPath = join(node.cgroupPath, spec.cgroup ?? join('pods', `${spec.namespace}.${spec.name}`));
    if (!cgroupPath.startsWith(`${node.cgroupPath}/`)) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `pod cgroup ${spec.cgroup} is not below node ${node.name}'s cgroup`,
      );
    }
    const hostVeth = `vp${host}`;

    this.record('netns', netns);
    ip(['netns', 'add', netns]);
    ip(['link', 'set', 'lo', 'up'], netns);
    ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns], node.netns);
    ip(['link', 'set', hostVeth, 'master', NODE_BRIDGE, 'up'], node.netns);
    ip(['addr', 'add', `${ipAddr}/24`, 'dev', 'eth0'], netns);
    ip(['link', 'set', 'eth0', 'up'], netns);
    ip(['route', 'add', 'default', 'via', node.gatewayIp], netns);

    // Parents shared by pods (kubepods.slice, the QoS slices) are made once and live as long as the bed.
    const parents: string[] = [];
    for (let d = dirname(cgroupPath); d !== node.cgroupPath && !existsSync(d); d = dirname(d))
      parents.unshift(d);
    for (const d of parents) {
      this.record('cgroups', d);
      mkdirSync(d);
    }
    this.record('cgroups', cgroupPath);
    mkdirSync(cgroupPath);
    const containerCgroups: Record<string, string> = {};
    for (const [container, dir] of Object.entries(spec.containerCgroups ?? {})) {
      if (!/^[A-Za-z0-9_.:-]+$/.test(dir) || dir.startsWith('.')) {
        throw new SockmeshError(
          'SOCKMESH_E_LAB',
          `container cgroup name '${dir}' is not a plain directory name`,
        );
      }
      const path = join(cgroupPath, dir);
      this.record('cgroups', path);
      mkdirSync(path);
      containerCgroups[container] = path;
    }
    this.record('etcNetns', join(ETC_NETNS, netns));
    mkdirSync(join(ETC_NETNS, netns), { recursive: true });

    const pod: LabPod = {
      name: spec.name,
      namespace: spec.namespace,
      node: node.name,
      netns,
      ip: ipAddr,
      cgroupPath,
      cgroupId: cgroupInode(cgroupPath),
      labels: { ...(spec.labels ?? {}) },
      serviceAccount: spec.serviceAccount ?? 'default',
      ...(spec.containerCgroups ? { containerCgroups } : {}),
    };
    this.rec.pods.push({ ...pod, cgroupId: pod.cgroupId.toString() });
    this.save();
    this.writeHosts(pod);
    return pod;
  }

  /** Stops the pod's processes and removes its namespace, cgroup and hosts file. */
  async removePod(namespace: string, name: string): Promise<void> {
    const pod = this.pod(namespace, name);
    killCgroup(pod.cgroupPath);
    ip(['netns', 'del', pod.netns], undefined, { allowFail: true });
    const containers = Object.values(pod.containerCgroups ?? {});
    for (const c of containers) removeCgroupDir(c);
    removeCgroupDir(pod.cgroupPath);
    rmSync(join(ETC_NETNS, pod.netns), { recursive: true, force: true });
    this.rec.pods = this.rec.pods.filter((p) => !(p.namespace === namespace && p.name === name));
    this.rec.created.netns = this.rec.created.netns.filter((n) => n !== pod.netns);
    const gone = new Set([pod.cgroupPath, ...containers]);
    this.rec.created.cgroups = this.rec.created.cgroups.filter((c) => !gone.has(c));
    this.rec.created.etcNetns = this.rec.created.etcNetns.filter((e) => e !== join(ETC_NETNS, pod.netns));
    this.save();
  }

  /** Sets name -> IP entries (service names) in every pod's /etc/hosts, now and for pods added later. */
  setHosts(entries: Record<string, string>): void {
    this.rec.hosts = { ...entries };
    this.save();
    for (const p of this.pods) this.writeHosts(p);
  }

  /** Starts a process inside a pod or on a node; see commandIn. */
  spawn(target: LabTarget, argv: string[], opts: RunOptions = {}): ChildProcess {
    const [file, args] = commandIn(target, argv);
    if (opts.logFile) {
      const fd = openSync(opts.logFile, 'a');
      try {
        const child = spawn(file, args, {
          env: { ...process.env, ...opts.env },
          cwd: opts.cwd,
          stdio: ['ignore', fd, fd],
          detached: true,
        });
        child.unref();
        return child;
      } finally {
        closeSync(fd);
      }
    }
    return spawn(file, args, {
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  }

  exec(target: LabTarget, argv: string[], opts: RunOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const child = this.spawn(target, argv, opts);
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (b: Buffer) => out.push(b));
      child.stderr?.on('data', (b: Buffer) => err.push(b));
      const timer =
        opts.timeoutMs === undefined
          ? undefined
          : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs).unref();
      child.on('error', reject);
      child.on('close', (code, signal) => {
        if (timer) clearTimeout(timer);
        resolve({
          code,
          signal,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        });
      });
      if (opts.input !== undefined) child.stdin?.end(opts.input);
      else child.stdin?.end();
    });
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** Removes everything the record lists and nothing else; safe to call twice and from an exit handler. */
  destroySync(): void {
    if (this.destroyed) return;
    // What another process (the lab kubelet) made is in the state file: remove that too.
    const disk = readRecord(this.stateDir, this.rec.runId);
    if (disk) {
      for (const k of Object.keys(this.rec.created) as (keyof LabRecord['created'])[]) {
        const mine = this.rec.created[k] ?? [];
        const extra = (disk.created[k] ?? []).filter((x) => !mine.includes(x));
        this.rec.created[k] = [...mine, ...extra];
      }
    }
    this.destroyed = true;
    owned.delete(this);
    const { created } = this.rec;
    stopGracefully((disk ?? this.rec).extra[GRACEFUL_KEY] as GracefulDaemon[] | undefined);
    killCgroup(this.rec.cgroupRoot);
    for (const dir of [...created.bpffsDirs].reverse()) rmSync(dir, { recursive: true, force: true });
    for (const ns of [...created.netns].reverse()) ip(['netns', 'del', ns], undefined, { allowFail: true });
    for (const cg of [...created.cgroups].reverse()) removeCgroupDir(cg);
    for (const dir of created.etcNetns) rmSync(dir, { recursive: true, force: true });
    for (const dir of created.dirs ?? []) rmSync(dir, { recursive: true, force: true });
    removeRecord(this.stateDir, this.rec.runId);
  }

  // --- construction -------------------------------------------------------

  private build(nodeNames: string[]): void {
    const rec = this.rec;
    this.record('cgroups', rec.cgroupRoot);
    mkdirSync(rec.cgroupRoot);
    this.record('cgroups', this.host.systemCgroupPath);
    mkdirSync(this.host.systemCgroupPath);
    this.record('dirs', this.runDir);
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    this.record('bpffsDirs', rec.bpffsRoot);
    mkdirSync(rec.bpffsRoot);

    this.record('netns', rec.fabricNetns);
    ip(['netns', 'add', rec.fabricNetns]);
    ip(['link', 'set', 'lo', 'up'], rec.fabricNetns);
    ip(['link', 'add', FABRIC_BRIDGE, 'type', 'bridge'], rec.fabricNetns);
    ip(['link', 'set', FABRIC_BRIDGE, 'up'], rec.fabricNetns);

    nodeNames.forEach((name, i) => {
      const index = i + 1;
      const netns = `${this.prefix}-${name}`;
      const node: LabNode = {
        name,
        index,
        netns,
        underlayIp: `${UNDERLAY_PREFIX}.${index}`,
        podCidr: `10.244.${index}.0/24`,
        gatewayIp: `10.244.${index}.1`,
        cgroupPath: join(rec.cgroupRoot, name),
        systemCgroupPath: join(rec.cgroupRoot, name, 'system'),
        bpffsDir: join(rec.bpffsRoot, name),
      };
      this.record('netns', netns);
      ip(['netns', 'add', netns]);
      ip(['link', 'set', 'lo', 'up'], netns);
      sysctl(netns, 'net.ipv4.ip_forward', '1');
      sysctl(netns, 'net.ipv4.conf.all.rp_filter', '0');
      sysctl(netns, 'net.ipv4.conf.default.rp_filter', '0');
      ip(['link', 'add', NODE_BRIDGE, 'type', 'bridge'], netns);
      ip(['addr', 'add', `${node.gatewayIp}/24`, 'dev', NODE_BRIDGE], netns);
      ip(['link', 'set', NODE_BRIDGE, 'up'], netns);
      const fabricPort = `n${index}`;
      ip(
        ['link', 'add', fabricPort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns],
        rec.fabricNetns,
      );
      ip(['link', 'set', fabricPort, 'master', FABRIC_BRIDGE, 'up'], rec.fabricNetns);
      ip(['addr', 'add', `${node.underlayIp}/24`, 'dev', 'eth0'], netns);
      ip(['link', 'set', 'eth0', 'up'], netns);

      for (const dir of [node.cgroupPath, join(node.cgroupPath, 'pods'), node.systemCgroupPath]) {
        this.record('cgroups', dir);
        mkdirSync(dir);
      }
      mkdirSync(node.bpffsDir);
      rec.nodes.push(node);
      this.save();
    });

    for (const node of rec.nodes) {
      for (const peer of rec.nodes) {
        if (peer === node) continue;
        ip(['route', 'add', peer.podCidr, 'via', peer.underlayIp], node.netns);
      }
    }
    this.save();
  }

  private nextPodIp(node: LabNode): string {
    const used = new Set(this.rec.pods.filter((p) => p.node === node.name).map((p) => p.ip));
    const base = node.gatewayIp.split('.').slice(0, 3).join('.');
    for (let h = FIRST_POD_HOST; h < 255; h++) {
      const cand = `${base}.${h}`;
      if (!used.has(cand)) return cand;
    }
    throw new SockmeshError(
      'SOCKMESH_E_LAB',
      `node ${node.name} has no free pod address left in ${node.podCidr}`,
    );
  }

  private checkPodIp(node: LabNode, addr: string): void {
    const base = node.gatewayIp.split('.').slice(0, 3).join('.');
    const parts = addr.split('.');
    const host = Number(parts[3]);
    if (parts.length !== 4 || parts.slice(0, 3).join('.') !== base || !(host >= 2 && host <= 254)) {
      throw new SockmeshError(
        'SOCKMESH_E_LAB',
        `pod IP ${addr} is not a usable address in ${node.podCidr} of ${node.name}`,
      );
    }
    if (this.rec.pods.some((p) => p.ip === addr)) {
      throw new SockmeshError('SOCKMESH_E_LAB', `pod IP ${addr} is already taken`);
    }
  }

  private writeHosts(pod: LabPod): void {
    const lines = ['127.0.0.1\tlocalhost', `${pod.ip}\t${pod.name}`];
    for (const [name, addr] of Object.entries(this.rec.hosts)) lines.push(`${addr}\t${name}`);
    writeFileSync(join(ETC_NETNS, pod.netns, 'hosts'), `${lines.join('\n')}\n`);
  }

  private record(kind: keyof LabRecord['created'], value: string): void {
    this.rec.created[kind].push(value);
    this.save();
  }

  private save(): void {
    if (!this.destroyed) writeRecord(this.stateDir, this.rec);
  }
}

/**
 * The host command that runs argv inside a pod (netns + cgroup + /etc/netns
 * hosts) or on a node (node netns, system cgroup). The shell joins the cgroup
 * before exec, so not even the command's first syscall runs outside it.
 */
export function commandIn(target: LabTarget, argv: string[]): [string, string[]] {
  if (argv.length === 0) throw new SockmeshError('SOCKMESH_E_USAGE', 'no command given to run');
  const cgroup = isPod(target) ? target.cgroupPath : target.systemCgroupPath;
  if (target.netns === undefined) {
    return [
      '/bin/sh',
      ['-c', 'cg="$1"; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"', 'sh', cgroup, ...argv],
    ];
  }
  if (!isPod(target)) {
    // Node daemons (the agent) need the host's /sys mounts (cgroup2, bpffs): join only the network
    // namespace. `ip netns exec` would remount /sys and hide them.
    const script =
      'cg="$1"; ns="$2"; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" -- "$@"';
    return ['/bin/sh', ['-c', script, 'sh', cgroup, target.netns, ...argv]];
  }
  const script = 'cg="$1"; ns="$2"; shift 2; echo $$ > "$cg/cgroup.procs" && exec ip netns exec "$ns" "$@"';
  return ['/bin/sh', ['-c', script, 'sh', cgroup, target.netns, ...argv]];
}

const GRACEFUL_KEY = 'gracefulDaemons';
interface GracefulDaemon {
  pid: number;
  startTime: string | undefined;
}

/** Field 22 of /proc/<pid>/stat: tells a process from a later one that got the same pid. */
function processStartTime(pid: number): string | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = fields.slice(fields.lastIndexOf(')') + 2).split(' ');
    // A zombie has exited; only its parent's wait is missing (and a sync loop cannot run it).
    return f[0] === 'Z' ? undefined : f[19];
  } catch {
    return undefined;
  }
}

function stopGracefully(daemons: GracefulDaemon[] | undefined): void {
  const alive = (d: GracefulDaemon) => d.startTime !== undefined && processStartTime(d.pid) === d.startTime;
  const running = (daemons ?? []).filter(alive);
  for (const d of running) {
    try {
      process.kill(d.pid, 'SIGTERM');
    } catch {
      // gone
    }
  }
  const deadline = Date.now() + 20_000;
  while (running.some(alive) && Date.now() < deadline) run('sleep', ['0.05']);
  if (running.some(alive))
    log.warn('daemons did not stop on SIGTERM within 20s', { pids: running.map((d) => d.pid) });
}

/** Kills every process in a cgroup subtree (cgroup.kill, Linux >= 5.14) and waits until it is empty. */
function killCgroup(path: string): void {
  if (!existsSync(path)) return;
  try {
    writeFileSync(join(path, 'cgroup.kill'), '1');
  } catch (err) {
    log.warn('cgroup.kill failed', { path, err });
    return;
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (/populated 0/.test(readFileSync(join(path, 'cgroup.events'), 'utf8'))) return;
    run('sleep', ['0.02']);
  }
  log.warn('processes still alive in cgroup after cgroup.kill', { path });
}

function removeCgroupDir(path: string): void {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      rmdirSync(path);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') {
        log.warn('could not remove cgroup', { path, err });
        return;
      }
      run('sleep', ['0.02']);
    }
  }
  log.warn('cgroup still busy, left in place', { path });
}

/** Runs `fn` with a fresh bed and always tears it down, also when `fn` throws. */
export async function withTestBed<T>(opts: TestBedOptions, fn: (bed: TestBed) => Promise<T>): Promise<T> {
  const bed = await TestBed.create(opts);
  try {
    return await fn(bed);
  } finally {
    await bed.destroy();
  }
}
