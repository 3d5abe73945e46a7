import type { TcpTagger } from '../../bpf-sockops/index.js';
import type { TrustBundle, X509Svid } from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import type { XdsConfig } from '../../xds/client/ads-client.js';
import { BREAKER_RESOURCES, type BreakerResource } from '../breaker/circuit-breaker.js';
import type { InboundServer } from '../inbound/server.js';
import { type OriginalDestinations, OutboundServer, type RequestRecord } from '../outbound/server.js';
import { MeshStateStore, type XdsSnapshot } from '../state/mesh-state.js';
import type { MeshTelemetry } from '../telemetry/mesh-telemetry.js';
import { identitySni } from '../tunnel/peer.js';
import { TunnelPool } from '../tunnel/pool.js';
import { TunnelServer } from '../tunnel/server.js';
import type { ClusterContext } from './clusters.js';
import { INBOUND_LISTENER, LocalView } from './local-view.js';
import { meshInboundServer } from './permissive.js';
import { MeshPlanner } from './planner.js';

export interface ProxyPorts {
  outbound: number;
  tunnel: number;
}

export interface ProxyRuntimeOptions {
  nodeName: string;
  proxyIp: string;
  tunnelIp: string;
  ports: ProxyPorts;
  /** See AgentOptions.trustTunnelSenders. */
  trustTunnelSenders?: boolean;
  origDst: OriginalDestinations;
  /** Attributes the proxy's connections to workload pairs for kernel TCP health; none = not measured. */
  tcp?: TcpTagger;
  telemetry: MeshTelemetry;
  /** Outlier detection and breaker shares, agent-wide. */
  cluster: ClusterContext;
  log: Logger;
}

export function snapshotOf(cfg: XdsConfig): XdsSnapshot {
  return {
    listeners: cfg.listeners,
    routes: cfg.routes,
    clusters: cfg.clusters,
    endpoints: cfg.endpoints,
    version: Object.values(cfg.versions).join('/'),
  };
}

/**
 * The data path of one agent process (or worker): capture listener, tunnel
 * listener, routing state and the SVIDs it presents. It is fed config and
 * SVIDs; it owns no BPF program and no CA.
 */
export class ProxyRuntime {
  private readonly store = new MeshStateStore();
  private view = LocalView.empty();
  private readonly planner: MeshPlanner;
  private readonly tunnels: TunnelPool;
  private readonly inbound: InboundServer;
  private readonly outbound: OutboundServer;
  private readonly tunnelServer: TunnelServer;
  private readonly svids = new Map<string, X509Svid>();
  private readonly bySni = new Map<string, string>();
  private trust: TrustBundle | undefined;

  constructor(private readonly opts: ProxyRuntimeOptions) {
    const { telemetry, log } = opts;
    this.planner = new MeshPlanner(opts.nodeName, opts.cluster);
    this.tunnels = new TunnelPool({
      log,
      localIp: opts.tunnelIp,
      ...(opts.tcp ? { tcp: opts.tcp } : {}),
    });
    const view = { byIp: (ip: string) => this.view.byIp(ip) };
    this.inbound = meshInboundServer({
      view: () => this.view,
      state: () => this.store.current,
      telemetry,
      log,
      ...(opts.tcp ? { tcp: opts.tcp } : {}),
      trustSenderIdentity: opts.trustTunnelSenders === true,
    });
    this.tunnelServer = new TunnelServer({
      identities: { svidBySni: (sni) => this.svidBySni(sni), bundle: () => this.bundle() },
      handler: this.inbound,
      events: { rejected: (reason) => telemetry.identityRejected({ listener: 'tunnel', reason }) },
      log,
    });
    this.outbound = new OutboundServer({
      planner: this.planner,
      origDst: opts.origDst,
      sources: view,
      svids: { svidFor: (id) => this.svids.get(id) },
      tunnels: this.tunnels,
      inbound: this.inbound,
      localWorkloads: view,
      ...(opts.tcp ? { tcp: opts.tcp } : {}),
      log,
      tracer: {
        startSpan: (name, parent, attrs, kind) => telemetry.startSpan(name, parent ?? null, attrs, kind),
      },
      events: {
        completed: (r) => reportTo(telemetry, r),
        breakerOverflow: (cluster, kind) => telemetry.breakerOverflow(cluster, OVERFLOW_KIND[kind]),
        identityRejected: (reason) => telemetry.identityRejected({ listener: 'outbound', reason }),
      },
    });
  }

  /** `fds`: listening sockets to serve on (from the agent's ListenerSet) instead of binding the ports. */
  async start(fds: { outbound?: number; tunnel?: number } = {}): Promise<void> {
    await this.tunnelServer.listen(this.opts.ports.tunnel, this.opts.tunnelIp, fds.tunnel);
    await this.outbound.listen(this.opts.ports.outbound, this.opts.proxyIp, fds.outbound);
  }

  /**
   * Stops accepting (another agent took the listening sockets over) and lets clients go:
   * `Connection: close` on HTTP/1.1, GOAWAY on HTTP/2 and the tunnel. Resolves once every
   * accepted connection has closed; the caller bounds the wait.
   */
  async drain(): Promise<void> {
    this.inbound.drain();
    await Promise.all([this.outbound.drain(), this.tunnelServer.drain()]);
  }

  /** Parses and installs a full config; throws (keeping the old one) if it does not parse. */
  applyConfig(config: XdsConfig): LocalView {
    const state = this.store.apply(snapshotOf(config));
    this.planner.update(state);
    this.view = LocalView.build(
      config.listeners.get(INBOUND_LISTENER) as Record<string, unknown> | undefined,
      state,
    );
    // Open connections follow the change: TCP streams policy no longer allows, and
    // connections of pods that left the mesh, are closed.
    this.inbound.recheck();
    this.outbound.revalidate();
    this.prune();
    this.opts.cluster.outliers.retain?.(new Set(state.clusterNames()));
    return this.view;
  }

  /** Replaces the set of SVIDs this proxy presents; pools of a rotated identity reconnect with the new one. */
  setSvids(svids: readonly X509Svid[]): void {
    this.svids.clear();
    this.bySni.clear();
    for (const s of svids) {
      this.svids.set(s.spiffeId.uri, s);
      this.bySni.set(identitySni(s.spiffeId.uri), s.spiffeId.uri);
      this.trust = s.bundle;
    }
    this.outbound.revalidate();
    this.prune();
  }

  /**
   * Per-peer state stays bounded by the config and the SVIDs held now: upstream pools of
   * endpoints that left or of a rotated SVID, inbound pools of pods that left, tunnel
   * sessions and TLS contexts of old serials.
   */
  private prune(): void {
    this.outbound.prune((c) => this.planner.cluster(c)?.endpointKeys());
    this.inbound.prune();
    this.tunnels.prune((id) => this.svids.get(id)?.serial);
    this.tunnelServer.prune();
  }

  get localView(): LocalView {
    return this.view;
  }

  /** In-use counts of a cluster's circuit breaker in this process (sockmesh explain). */
  breakerInUse(cluster: string): Record<BreakerResource, number> | undefined {
    const b = this.planner.cluster(cluster)?.breaker;
    if (!b) return undefined;
    return Object.fromEntries(BREAKER_RESOURCES.map((r) => [r, b.inUse(r)])) as Record<
      BreakerResource,
      number
    >;
  }

  get tunnelSessions(): number {
    return this.tunnels.size;
  }

  /** HTTP connections to local pods relayed since start: through the lean relay, and as bytes (trusted senders). */
  get inboundRelays(): { lean: number; bytes: number } {
    return { lean: this.inbound.leanRelayedStreams, bytes: this.inbound.relayedHttpStreams };
  }

  async stop(): Promise<void> {
    await this.outbound.close();
    await this.tunnelServer.close();
    await this.inbound.close();
    this.tunnels.close();
    this.planner.close();
  }

  private svidBySni(sni: string): X509Svid | undefined {
    const id = this.bySni.get(sni);
    return id === undefined ? undefined : this.svids.get(id);
  }

  private bundle(): TrustBundle {
    if (!this.trust) throw new Error('no trust bundle yet');
    return this.trust;
  }
}

const OVERFLOW_KIND = {
  connection: 'connections',
  pending: 'pending',
  request: 'requests',
  retry: 'retries',
} as const;

/** Turns the proxy's record of a request or connection into metrics and access log lines. */
export function reportTo(t: MeshTelemetry, r: RequestRecord): void {
  const source = {
    workload: r.source.name,
    namespace: r.source.namespace,
    version: r.source.version ?? '',
    principal: r.source.spiffeId,
  };
  const destination = {
    service: r.service,
    workload: r.endpoint?.workload ?? '',
    namespace: r.endpoint?.namespace ?? '',
    version: r.endpoint?.version ?? '',
    cluster: r.cluster ?? '',
  };
  if (r.protocol === 'http') {
    t.requestCompleted({
      source,
      destination,
      protocol: 'http',
      reporter: 'source',
      code: r.status,
      flags: r.flags,
      durationMs: r.durationMs,
      ...(r.grpcStatus !== undefined ? { grpcStatus: r.grpcStatus } : {}),
      ...(r.method ? { method: r.method } : {}),
      ...(r.path ? { path: r.path } : {}),
      ...(r.route ? { route: r.route } : {}),
      ...(r.endpoint ? { upstreamHost: `${r.endpoint.ip}:${r.endpoint.port}` } : {}),
    });
    return;
  }
  t.tcpOpened({ source, destination, reporter: 'source' });
  t.tcpClosed({
    source,
    destination,
    reporter: 'source',
    bytesSent: r.bytesSent ?? 0,
    bytesReceived: r.bytesReceived ?? 0,
    flags: r.flags,
    durationMs: r.durationMs,
  });
}
