import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { credentials } from '@grpc/grpc-js';
import { SockopsDataplane } from '../../bpf-sockops/index.js';
import { recordIssued } from '../../certs/ca/store.js';
import { loadAuthority } from '../../certs/index.js';
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import { AdsClient, type XdsConfig } from '../../xds/client/ads-client.js';
import { LrsClient } from '../../xds/client/lrs-client.js';
import { AgentHandoff, type HandedOver, type HandoffOptions } from '../handoff/upgrade.js';
import { MeshStateStore } from '../state/mesh-state.js';
import { clusterOutcomes } from '../telemetry/cluster-load.js';
import { MeshTelemetry } from '../telemetry/mesh-telemetry.js';
import { tcpHealthReport } from '../telemetry/tcp-health.js';
import { explainViews } from './explain-views.js';
import {
  DelegatedIdentitySupply,
  EmbeddedCaSupply,
  NodeIdentities,
  type SvidSupply,
  WorkloadApiSupply,
} from './identities.js';
import { KernelPolicyAgent, OUTBOUND_LISTENER } from './kernel-policy.js';
import { INBOUND_LISTENER, type LocalPod, LocalView } from './local-view.js';
import { OutlierRegistry } from './outliers.js';
import { meshInboundServer, PermissiveInbound } from './permissive.js';
import { type CgroupDriver, PodCgroupLayout } from './pod-cgroups.js';
import { ProxyRuntime, snapshotOf } from './proxy-runtime.js';
import { Warming } from './warming.js';
import { ProxyWorkers } from './workers.js';

/** The well-known ports of a node proxy (same as ztunnel's). */
export const PORTS = { outbound: 15001, inboundPlaintext: 15006, tunnel: 15008, admin: 15020 } as const;

export interface AgentOptions {
  nodeName: string;
  /** Control plane ADS address: `unix:/path` or `host:port`. */
  controlPlane: string;
  /** mTLS to the control plane (PEM): a TCP address off the node needs it, the control plane refuses plaintext there. */
  controlPlaneTls?: { cert: Buffer; key: Buffer; ca: Buffer };
  /** Address the pods of this node reach the proxy at (their gateway): the capture listener binds here. */
  proxyIp: string;
  /** Underlay address other nodes reach this node at: the tunnel listener binds here. */
  tunnelIp: string;
  /** cgroup v2 directory of the node: BPF programs attach here. */
  cgroupPath: string;
  /** Pods without a UID (directory manifests) live in `<podsCgroup>/<namespace>.<pod>`. */
  podsCgroup: string;
  /**
   * The kubelet's cgroup root as a directory (holding `kubepods.slice` or `kubepods`): pods with a
   * UID are found there as the kubelet lays them out (pod-cgroups.ts). Default: `cgroupPath`.
   */
  kubeletCgroupRoot?: string;
  /** The kubelet's cgroup driver; default `auto` (from which top directory exists). */
  cgroupDriver?: CgroupDriver | 'auto';
  bpffsDir: string;
  /** Embedded CA directory (ca.crt, ca.key, config); not read when `workloadApi` is set. */
  caDir?: string;
  /** Take SVIDs and trust bundle from this SPIFFE Workload API (a SPIRE agent) instead of the CA. */
  workloadApi?: string;
  /** Take them from SPIRE's Delegated Identity API on this SPIRE agent admin socket instead. */
  spireAdminSocket?: string;
  /**
   * sk_msg splicing of same-node hops. Off by default: the kernel's sockmap receive path can
   * hand a blocking reader EAGAIN (README, "Backpressure on the sk_msg path").
   */
  accelerate?: boolean;
  /** Kernel TCP health per workload pair (sockops callbacks); default on. */
  tcpHealth?: boolean;
  /**
   * Relay tunnelled HTTP to pods as bytes when the sending agent says it wrote the caller's
   * identity (one L7 hop per request). Off by default: sound only when no workload can hold an
   * SVID of the trust domain, since any holder can dial 15008 and say the same (docs/identity.md).
   */
  trustTunnelSenders?: boolean;
  /** Proxy worker processes; 1 runs the proxy inside the agent process. Default: `defaultWorkers`. */
  workers?: number;
  svidTtlMs?: number;
  ports?: Partial<typeof PORTS>;
  adminHost?: string;
  accessLog?: boolean;
  otlpEndpoint?: string;
  /** Hitless upgrade: take the listeners of the agent running on this node, offer ours to the next one. */
  handoff?: HandoffOptions;
  logger?: Logger;
}

/**
 * Proxy processes when not told: one worker per core on nodes with 4 or more
 * cores, else the proxy in the agent process. On a 2-vCPU node two workers
 * bought no throughput (they compete with the workloads they serve), cost
 * ~190 MiB and ~20% more CPU per L4 request than one process (README, Benchmarks).
 */
export function defaultWorkers(cores: number): number {
  return cores >= 4 ? cores : 1;
}

/**
 * One per node. The primary owns the node's BPF programs, follows the control
 * plane, enrols pods, holds the CA-issued identities of local workloads and
 * serves metrics; the proxy itself runs in-process or in one worker per core.
 */
export class MeshAgent {
  private readonly log: Logger;
  private readonly ports: typeof PORTS;
  private readonly podCgroups: PodCgroupLayout;
  /** The primary's own parse of the config: validation (NACK), membership, identities. */
  private readonly store = new MeshStateStore();
  private view = LocalView.empty();
  private dataplane: SockopsDataplane | undefined;
  private tcpHealth = false;
  private kernelPolicy: KernelPolicyAgent | undefined;
  private identities: NodeIdentities | undefined;
  private telemetry: MeshTelemetry | undefined;
  private ads: AdsClient | undefined;
  private lrs: LrsClient | undefined;
  private runtime: ProxyRuntime | undefined;
  private workers: ProxyWorkers | undefined;
  private outliers: OutlierRegistry | undefined;
  private readonly enrolled = new Map<string, { cg: bigint; mode: 'strict' | 'permissive' }>();
  private permissive: PermissiveInbound | undefined;
  private svidPushQueued = false;
  private xdsConnected = false;
  private versions: XdsConfig['versions'] = {
    LDS: undefined,
    RDS: undefined,
    CDS: undefined,
    EDS: undefined,
  };
  private applying: Promise<void> = Promise.resolve();
  private readonly warming = new Warming();
  private latest: XdsConfig | undefined;
  private warmTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: AgentOptions) {
    this.log = (opts.logger ?? createLogger('agent')).child({ node: opts.nodeName });
    this.ports = { ...PORTS, ...opts.ports };
    this.podCgroups = new PodCgroupLayout({
      kubeletRoot: opts.kubeletCgroupRoot ?? opts.cgroupPath,
      driver: opts.cgroupDriver ?? 'auto',
      labPodsDir: opts.podsCgroup,
    });
  }

  get workerPids(): number[] {
    return this.workers?.pids ?? [process.pid];
  }

  private handoff: AgentHandoff | undefined;

  /** Resolves once a newer agent took over and this one drained (or hit the bound): then exit. */
  get handedOver(): Promise<HandedOver> {
    return this.handoff?.handedOver ?? new Promise(() => {});
  }

  async start(): Promise<void> {
    const o = this.opts;
    // Listening sockets come from a ListenerSet: the running agent's (handed over), else new ones.
    const handoff = AgentHandoff.begin(workersOf(o) > 1 ? undefined : o.handoff, this.log);
    this.handoff = handoff;
    const adminFd = () => handoff.listeners.take('admin', o.adminHost ?? '0.0.0.0', this.ports.admin, 511);
    const telemetry = new MeshTelemetry({
      nodeName: o.nodeName,
      metricsPort: this.ports.admin,
      metricsHost: o.adminHost ?? '0.0.0.0',
      accessLog: o.accessLog ? process.stdout : null,
      ...(o.otlpEndpoint ? { otlpEndpoint: o.otlpEndpoint } : {}),
      logger: this.log,
    });
    this.telemetry = telemetry;
    if (!handoff.deferListening) await telemetry.start(workersOf(o) > 1 ? undefined : adminFd());
    telemetry.setReady(false, 'waiting for the first config from the control plane');

    const identities = new NodeIdentities(await this.svidSupply(), this.log);
    this.identities = identities;
    // One rotation can renew many identities at once (a Workload API response): push the list once.
    identities.onRotate(() => {
      if (this.svidPushQueued) return;
      this.svidPushQueued = true;
      queueMicrotask(() => {
        this.svidPushQueued = false;
        this.pushSvids();
      });
    });

    const dataplane = SockopsDataplane.open({
      cgroupPath: o.cgroupPath,
      bpffsDir: o.bpffsDir,
      logger: this.log,
    });
    this.dataplane = dataplane;
    dataplane.setProxy({ ip: o.proxyIp, port: this.ports.outbound });
    dataplane.setAcceleration(o.accelerate === true);
    const tcpHealth = o.tcpHealth !== false;
    dataplane.tcpHealth.setEnabled(tcpHealth);
    this.tcpHealth = tcpHealth;
    for (const cg of dataplane.pods())
      this.enrolled.set(`adopted:${cg}`, { cg, mode: dataplane.podMode(cg) ?? 'strict' });
    const kernelPolicy = new KernelPolicyAgent(dataplane, this.log);
    this.kernelPolicy = kernelPolicy;
    this.permissive = new PermissiveInbound({
      dataplane,
      inbound: meshInboundServer({
        view: () => this.view,
        state: () => this.store.current,
        telemetry,
        log: this.log,
      }),
      log: this.log,
      inherited: (ip) => handoff.listeners.adopt(`inbound-plaintext/${ip}`),
    });

    const workers = workersOf(o);
    this.outliers = new OutlierRegistry((cluster, ev) => {
      telemetry.outlierEvent(cluster, ev);
      const eps = this.store.current.endpoints(cluster).map((e) => e.key);
      this.workers?.setEjections(cluster, this.outliers!.ejected(cluster, eps));
    });
    const proxy = {
      nodeName: o.nodeName,
      proxyIp: o.proxyIp,
      tunnelIp: o.tunnelIp,
      ports: { outbound: this.ports.outbound, tunnel: this.ports.tunnel },
      ...(o.trustTunnelSenders ? { trustTunnelSenders: true } : {}),
    };
    if (workers > 1) {
      this.workers = new ProxyWorkers(
        workers,
        {
          ...proxy,
          bpffsDir: o.bpffsDir,
          tcpHealth,
          ...(o.otlpEndpoint ? { otlpEndpoint: o.otlpEndpoint } : {}),
        },
        telemetry,
        this.outliers,
        this.log,
      );
    } else {
      this.runtime = new ProxyRuntime({
        ...proxy,
        origDst: dataplane,
        ...(tcpHealth ? { tcp: dataplane.tcpHealth } : {}),
        telemetry,
        cluster: { outliers: this.outliers, worker: { index: 0, count: 1 } },
        log: this.log,
      });
      if (!handoff.deferListening) await this.runtime.start(this.proxyFds());
    }
    // With a predecessor, this agent listens (and takes over) once its first config is applied.
    if (!handoff.deferListening) await handoff.offer(() => this.plaintextListeners(), releasable(this));

    telemetry.observeXds(() => ({
      connected: this.xdsConnected,
      versions: Object.fromEntries(
        Object.entries(this.versions).filter(([, v]) => v !== undefined),
      ) as Record<string, string>,
    }));
    telemetry.observeSvids(() =>
      identities.list().map((s) => ({ spiffeId: s.spiffeId.uri, notAfter: s.notAfter })),
    );
    telemetry.observeBpfCounters(() => dataplane.counters());
    if (tcpHealth) telemetry.observeTcpHealth(() => dataplane.tcpHealth.read());
    telemetry.observeKernelPolicy(() => kernelPolicy.counters());
    // Without a pair: the rule set in force and its counters; with one: the kernel's verdict for it.
    telemetry.setView('/kernel/policy', (q) => {
      const destination = q.get('destination');
      if (destination === null) return kernelPolicy.report();
      return kernelPolicy.verdict(
        q.get('source') ?? 'plaintext',
        destination,
        Number(q.get('port') ?? ''),
        this.localPodCgroups(),
      );
    });
    telemetry.setConfigDump(() => this.status());
    for (const [path, view] of Object.entries(
      explainViews({
        node: o.nodeName,
        xds: () => this.versions,
        state: () => this.store.current,
        view: () => this.view,
        podCgroups: this.podCgroups,
        dataplane: () => this.dataplane,
        svid: (id) => {
          const s = this.identities?.list().find((x) => x.spiffeId.uri === id);
          return s && { spiffeId: id, serial: s.serial, notAfter: s.notAfter.toISOString() };
        },
        runtime: {
          ejected: (cluster, eps) => this.outliers?.ejected(cluster, eps) ?? [],
          // With proxy workers each holds its own share of the breaker: not one number to show.
          breakerInUse: (cluster) => this.runtime?.breakerInUse(cluster),
        },
        plaintextPods: () => this.permissive?.pods() ?? [],
      }),
    ))
      telemetry.setView(path, view);

    this.ads = new AdsClient({
      target: o.controlPlane,
      ...(o.controlPlaneTls
        ? {
            credentials: credentials.createSsl(
              o.controlPlaneTls.ca,
              o.controlPlaneTls.key,
              o.controlPlaneTls.cert,
            ),
          }
        : {}),
      node: { id: o.nodeName, locality: { zone: o.nodeName }, metadata: { underlayIp: o.tunnelIp } },
      logger: this.log,
      // A restarted control plane should find its agents back within seconds, not minutes.
      backoff: { initialMs: 200, maxMs: 5000 },
      validate: (typeUrl, resources) => this.validate(typeUrl, resources),
    });
    this.ads.on('connected', () => {
      this.xdsConnected = true;
    });
    this.ads.on('disconnected', (reason) => {
      this.xdsConnected = false;
      this.log.warn('control plane lost; serving the last good config', { reason });
    });
    this.ads.on('update', (config) => this.schedule(config));
    this.ads.start();
    // Canary guards: the control plane asks for the guarded clusters' outcomes (LRS, same target).
    this.lrs = new LrsClient({
      target: o.controlPlane,
      ...(o.controlPlaneTls
        ? {
            credentials: credentials.createSsl(
              o.controlPlaneTls.ca,
              o.controlPlaneTls.key,
              o.controlPlaneTls.cert,
            ),
          }
        : {}),
      node: { id: o.nodeName, locality: { zone: o.nodeName } },
      collect: async () => clusterOutcomes(await telemetry.mergedSnapshot()),
      logger: this.log,
      backoff: { initialMs: 200, maxMs: 5000 },
    });
    this.lrs.start();
    this.log.info('agent started', {
      proxy: `${o.proxyIp}:${this.ports.outbound}`,
      tunnel: `${o.tunnelIp}:${this.ports.tunnel}`,
      workers,
    });
  }

  /** SPIRE's Delegated Identity API or a Workload API when given (the CA key is never read then), else the embedded CA. */
  private async svidSupply(): Promise<SvidSupply> {
    const { workloadApi, spireAdminSocket, caDir, svidTtlMs } = this.opts;
    if (spireAdminSocket) return new DelegatedIdentitySupply(spireAdminSocket, this.log);
    if (workloadApi) return new WorkloadApiSupply(workloadApi, this.log);
    if (!caDir) {
      throw new SockmeshError('SOCKMESH_E_USAGE', 'the agent needs a CA directory or a Workload API', {
        hint: 'pass --ca-dir <dir> or --workload-api <socket> (or set SPIFFE_ENDPOINT_SOCKET)',
      });
    }
    return new EmbeddedCaSupply(await loadAuthority(caDir), this.log, {
      ...(svidTtlMs === undefined ? {} : { ttlMs: svidTtlMs }),
      onIssued: (svid) => recordIssued(caDir, svid),
    });
  }

  /** Refuses an update whose resources do not parse together with the rest of the current config (NACK). */
  private validate(typeUrl: string, resources: ReadonlyMap<string, unknown>): string | undefined {
    const cfg = this.ads?.config();
    if (!cfg) return undefined;
    const snap = snapshotOf(cfg);
    const key = typeUrl.endsWith('Listener')
      ? 'listeners'
      : typeUrl.endsWith('RouteConfiguration')
        ? 'routes'
        : typeUrl.endsWith('Cluster')
          ? 'clusters'
          : 'endpoints';
    try {
      new MeshStateStore().apply({ ...snap, [key]: resources });
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }

  /** Applies the newest config the client holds, warmed into one consistent set (see warming.ts). */
  private schedule(latest: XdsConfig): void {
    this.latest = latest;
    this.applying = this.applying
      .then(() => {
        if (this.latest !== latest) return; // a newer update is queued behind this one
        const warm = this.warming.next(latest, Date.now());
        clearTimeout(this.warmTimer);
        if (warm.retryAtMs !== undefined) {
          this.log.info('config warming: listeners and routes wait for what they name', {
            waiting: warm.waiting,
          });
          this.warmTimer = setTimeout(() => this.schedule(latest), Math.max(0, warm.retryAtMs - Date.now()));
          this.warmTimer.unref();
        }
        return this.apply(warm.config);
      })
      .catch((err: Error) => this.log.error('applying config failed', { err }));
  }

  private async apply(config: XdsConfig): Promise<void> {
    const state = this.store.apply(snapshotOf(config));
    this.versions = config.versions;
    this.outliers?.update(state);
    this.view = LocalView.build(
      config.listeners.get(INBOUND_LISTENER) as Record<string, unknown> | undefined,
      state,
    );
    // Identities first: a pod must be able to prove who it is before its traffic is captured.
    await this.identities!.reconcile(this.view.all().map((p) => p.spiffeId));
    this.pushSvids();
    this.runtime?.applyConfig(config);
    if (this.workers) {
      this.workers.setConfig(config);
      if (!this.workersStarted) {
        this.workersStarted = true;
        await this.workers.start();
      }
    }
    // Membership comes from LDS: before it arrives, the pods adopted from the pins stay enrolled
    // (a restarted or upgraded agent must not un-capture them on a partial first config).
    if (config.versions.LDS !== undefined) {
      this.reconcileMembership();
      this.kernelPolicy?.update(config.listeners.get(OUTBOUND_LISTENER), this.localPodCgroups());
    }
    const complete = Object.values(config.versions).every((v) => v !== undefined);
    if (complete && this.handoff?.deferListening && !this.tookOver) {
      this.tookOver = true;
      await this.takeOver();
    }
    if (complete) this.telemetry?.setReady(true);
    this.log.info('config applied', { versions: config.versions, localPods: this.view.size });
  }

  private workersStarted = false;
  private tookOver = false;

  /** Serves on the sockets the old agent handed over, then has it stop accepting and drain. */
  private async takeOver(): Promise<void> {
    const h = this.handoff!;
    const o = this.opts;
    await this.runtime?.start(this.proxyFds());
    // Claimed now, served once the old agent stopped answering on it (/ready then is this agent's).
    const adminFd = h.listeners.take('admin', o.adminHost ?? '0.0.0.0', this.ports.admin, 511);
    try {
      await h.takeOver();
    } catch (err) {
      this.log.error('handoff incomplete', { err });
    }
    await this.telemetry?.start(adminFd);
    await h.offer(() => this.plaintextListeners(), releasable(this));
  }

  private proxyFds(): { outbound: number; tunnel: number } {
    const l = this.handoff!.listeners;
    return {
      outbound: l.take('outbound', this.opts.proxyIp, this.ports.outbound),
      tunnel: l.take('tunnel', this.opts.tunnelIp, this.ports.tunnel),
    };
  }

  private plaintextListeners() {
    return (this.permissive?.listeners() ?? []).map((p) => ({
      name: `inbound-plaintext/${p.ip}`,
      ip: '0.0.0.0',
      port: this.ports.inboundPlaintext,
      fd: p.fd,
    }));
  }

  /** @internal for releasable(): a successor serves; see handoff/upgrade.ts. */
  stopControlForSuccessor(): void {
    this.ads?.close();
    this.lrs?.close();
    clearTimeout(this.warmTimer);
    this.identities?.stop();
  }

  /** @internal for releasable(). */
  stopAccepting(): Promise<void> {
    this.permissive?.stop();
    this.telemetry?.stopServing().catch(() => {});
    this.drainDone = this.runtime?.drain() ?? Promise.resolve();
    return Promise.resolve();
  }

  private drainDone: Promise<void> | undefined;

  /** @internal for releasable(). */
  drained(): Promise<void> {
    return this.drainDone ?? Promise.resolve();
  }

  private pushSvids(): void {
    const list = this.identities?.list() ?? [];
    this.runtime?.setSvids(list);
    this.workers?.setSvids(list);
  }

  /**
   * Enrols exactly the local meshed pods in the kernel's membership map, in
   * their namespace's mTLS mode: joining, leaving and switching are live. The
   * inbound plaintext of permissive pods goes to the proxy (port 15006).
   */
  private reconcileMembership(): void {
    const dp = this.dataplane!;
    const want = new Map<string, { cg: bigint; mode: 'strict' | 'permissive'; ip: string; dir: string }>();
    for (const pod of this.view.all()) {
      // By path, every time: pods that started before the agent are found the same way.
      const found = this.podCgroups.resolve(pod);
      try {
        if (!found.found) throw new Error('not found');
        const cg = statSync(found.dir, { bigint: true }).ino;
        want.set(`${pod.namespace}/${pod.name}`, { cg, mode: pod.mtlsMode, ip: pod.ip, dir: found.dir });
      } catch {
        this.log.warn('meshed pod has no cgroup on this node yet', {
          pod: `${pod.namespace}/${pod.name}`,
          ...(pod.uid ? { uid: pod.uid } : {}),
          tried: found.found ? [found.dir] : found.tried,
        });
      }
    }
    for (const [key, e] of this.enrolled) {
      if (want.get(key)?.cg === e.cg) continue;
      dp.removePod(e.cg);
      this.enrolled.delete(key);
      this.log.info('pod left the mesh', { pod: key });
    }
    for (const [key, w] of want) {
      const e = this.enrolled.get(key);
      if (e?.cg === w.cg && e.mode === w.mode) continue;
      dp.enrolPod(w.cg, { mode: w.mode });
      this.enrolled.set(key, { cg: w.cg, mode: w.mode });
      this.log.info(e ? 'pod changed mTLS mode' : 'pod joined the mesh', { pod: key, mode: w.mode });
    }
    this.permissive?.reconcile(
      new Map(
        [...want]
          .filter(([, w]) => w.mode === 'permissive')
          .map(([key, w]) => [key, { ip: w.ip, cgroupDir: w.dir }]),
      ),
    );
  }

  /** This node's meshed pods with the cgroup they are enrolled by. */
  private localPodCgroups(): { pod: LocalPod; cgroupId: bigint }[] {
    const out: { pod: LocalPod; cgroupId: bigint }[] = [];
    for (const pod of this.view.all()) {
      const e = this.enrolled.get(`${pod.namespace}/${pod.name}`);
      if (e) out.push({ pod, cgroupId: e.cg });
    }
    return out;
  }

  status(): Record<string, unknown> {
    return {
      node: this.opts.nodeName,
      xds: { connected: this.xdsConnected, versions: this.versions },
      pods: this.view
        .all()
        .map((p) => ({ pod: `${p.namespace}/${p.name}`, ip: p.ip, spiffeId: p.spiffeId, mtls: p.mtlsMode })),
      /** Permissive pods whose inbound plaintext the proxy takes on 15006. */
      plaintextInbound: this.permissive?.pods() ?? [],
      identities:
        this.identities
          ?.list()
          .map((s) => ({ spiffeId: s.spiffeId.uri, serial: s.serial, notAfter: s.notAfter.toISOString() })) ??
        [],
      identitySupply: this.identities?.status() ?? null,
      bpf: this.dataplane
        ? Object.fromEntries(Object.entries(this.dataplane.counters()).map(([k, v]) => [k, Number(v)]))
        : {},
      kernelPolicy: this.kernelPolicy?.report().status ?? null,
      workers: { pids: this.workerPids, restarts: this.workers?.restarts.length ?? 0 },
      tunnels: this.runtime?.tunnelSessions ?? null,
      /** Without proxy workers: HTTP connections to this node's pods relayed since start (lean relay, bytes). */
      inboundRelays: this.runtime?.inboundRelays ?? null,
      tcpHealth: tcpHealthReport(
        this.dataplane && this.tcpHealth ? () => this.dataplane!.tcpHealth.read() : null,
      ),
      handoff: this.handoff?.status ?? null,
    };
  }

  /** Stops serving; BPF programs stay pinned so connections keep flowing through a restart. */
  async stop(): Promise<void> {
    clearTimeout(this.warmTimer);
    this.ads?.close();
    this.lrs?.close();
    await this.handoff?.close();
    this.permissive?.stop();
    await this.runtime?.stop();
    await this.workers?.stop();
    this.identities?.stop();
    this.outliers?.close();
    this.dataplane?.close();
    await this.telemetry?.close();
  }
}

function workersOf(o: AgentOptions): number {
  return o.workers ?? defaultWorkers(availableParallelism());
}

/** The calls the handoff makes on an agent that a successor replaced. */
function releasable(agent: MeshAgent) {
  return {
    stopControl: () => agent.stopControlForSuccessor(),
    stopAccepting: () => agent.stopAccepting(),
    drained: () => agent.drained(),
  };
}

export function requireAgentPaths(o: Pick<AgentOptions, 'cgroupPath' | 'kubeletCgroupRoot'>): void {
  // The lab's pods directory and the kubelet's kubepods tree may appear after the agent starts.
  for (const p of [o.cgroupPath, ...(o.kubeletCgroupRoot ? [o.kubeletCgroupRoot] : [])]) {
    try {
      statSync(p);
    } catch {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `cgroup directory ${p} does not exist`, {
        hint: 'pass the node cgroup with --cgroup and the kubelet cgroup root with --kubelet-cgroup-root',
      });
    }
  }
}
