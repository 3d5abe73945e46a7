import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { TcpConnection, TcpTagger, WorkloadRef } from '../../bpf-sockops/index.js';
import type { X509Svid } from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import { nullLogger } from '../../lib/log.js';
import { ConnectionDrain } from '../handoff/drain.js';
import {
  forwardedClientCert,
  type LocalWorkload,
  type LocalWorkloads,
  type PortProtocol,
  protocolBaggage,
} from '../inbound/policy.js';
import type { InboundServer } from '../inbound/server.js';
import {
  carrierGoaway,
  type H2Answer,
  H2cSessions,
  relayH2Answer,
  serveH2c,
  sniffH2c,
  upstreamHeaders,
} from '../io/h2c.js';
import { dropHopByHop } from '../io/headers.js';
import { type HttpLimits, httpLimits } from '../io/http-limits.js';
import { type Http1Answer, Http1Server, type Http1ServerRequest } from '../io/http1-server.js';
import { connectTcp, ignoreError, splice } from '../io/streams.js';
import { TunnelError, type TunnelPool } from '../tunnel/pool.js';
import { type AttemptResult, MAX_REPLAY_BODY, runAttempts } from './attempts.js';
import { DETECT_TIMEOUT_MS, detectProtocol } from './detect.js';
import { discardH2, h2cAttempt } from './h2c-upstream.js';
import { type Http1Response, Http1Upstream } from './http1-upstream.js';
import type {
  BreakerKind,
  Endpoint,
  HttpPlan,
  HttpRequestView,
  OutboundPlanner,
  Outcome,
  ResponseFlag,
  RouteDecision,
  TcpPlan,
  UpstreamCluster,
} from './plan.js';
import { ReplayableBody } from './replay-body.js';
import { type PoolOf, UpstreamConnections } from './upstream-connections.js';

export interface OriginalDestinations {
  lookup(
    peerIp: string,
    peerPort: number,
    localIp: string,
    localPort: number,
  ): { ip: string; port: number } | undefined;
}

/** A meshed pod of this node as a caller. */
export type SourceWorkload = Omit<LocalWorkload, 'protocolOf'>;

export interface SourceWorkloads {
  byIp(ip: string): SourceWorkload | undefined;
}

export interface SvidSource {
  svidFor(spiffeId: string): X509Svid | undefined;
}

export interface RequestRecord {
  source: SourceWorkload;
  protocol: 'http' | 'tcp';
  service: string;
  cluster: string | undefined;
  endpoint: Endpoint | undefined;
  status: number;
  flags: ResponseFlag;
  durationMs: number;
  method?: string;
  path?: string;
  route?: string;
  attempts: number;
  /** grpc-status of a gRPC call (HTTP status is 200 for every answered call). */
  grpcStatus?: number;
  bytesSent?: number;
  bytesReceived?: number;
}

export interface RequestSpan {
  readonly traceparent: string;
  end(status?: 'ok' | 'error' | 'unset', message?: string): void;
}

export interface RequestTracer {
  startSpan(
    name: string,
    parent: string | undefined,
    attributes: Record<string, string | number | boolean>,
    kind: 'client',
  ): RequestSpan;
}

export interface OutboundEvents {
  completed(rec: RequestRecord): void;
  /** A breaker limit was hit: `connection` (cx_overflow), `pending`, `request`, `retry` (rq_*_overflow). */
  breakerOverflow(cluster: string, kind: BreakerKind): void;
  /**
   * A claim this listener refused or replaced: `not-captured` (dialed directly, not redirected by
   * the kernel: never an open proxy), `no-mesh-identity` (a captured pod the node holds no SVID
   * for), `forged-xfcc` (an app-sent x-forwarded-client-cert, replaced by the caller's own).
   */
  identityRejected?(reason: 'not-captured' | 'no-mesh-identity' | 'forged-xfcc'): void;
}

export interface OutboundOptions {
  planner: OutboundPlanner;
  origDst: OriginalDestinations;
  sources: SourceWorkloads;
  svids: SvidSource;
  tunnels: TunnelPool;
  /** Same-node destinations are authorized in-process, by the same rules the tunnel applies. */
  inbound: InboundServer;
  localWorkloads: LocalWorkloads;
  /** Attributes connections to workload pairs for kernel TCP health (pod -> proxy, proxy -> pod, tunnel). */
  tcp?: TcpTagger;
  events?: OutboundEvents;
  /** Starts a client span per proxied request; its traceparent replaces the caller's upstream (W3C). */
  tracer?: RequestTracer;
  /** Header size, count and timeouts of the HTTP/1.1 and h2c the pods send (defaults: DEFAULT_HTTP_LIMITS). */
  limits?: Partial<HttpLimits>;
  log?: Logger;
}

interface ConnContext {
  /** Refreshed from the local view on every config change (revalidate). */
  source: SourceWorkload;
  /** The SVID at accept; requests use the current one (svidOf), so a rotation reaches open connections. */
  svid: X509Svid;
  service: string;
  route: (req: HttpRequestView) => RouteDecision;
  peer: string;
}

/**
 * The outbound half of the node proxy: accepts the connections the kernel
 * redirected, recovers where they were going, and carries them there by the
 * mesh's rules: per request for HTTP ports, per connection otherwise.
 */
export class OutboundServer {
  private readonly server: net.Server;
  private readonly http: Http1Server;
  private readonly contexts = new WeakMap<object, ConnContext>();
  /** Every accepted downstream connection and the source it was accepted for (see revalidate). */
  private readonly accepted = new Map<net.Socket, SourceWorkload>();
  /** Captured connections by peer `ip:port`, until their pod -> proxy leg is attributed (first dial). */
  private readonly untagged = new Map<string, TcpConnection>();
  private readonly baggage = new WeakMap<SourceWorkload, Partial<Record<PortProtocol, string>>>();
  /** HTTP/1.1 upstream connections, counted against their cluster's breaker. */
  private readonly upstream: UpstreamConnections<Http1Upstream>;
  /** h2c upstream sessions, keyed by h2cKey. */
  private readonly h2c = new H2cSessions({ idleTimeoutMs: UPSTREAM_IDLE_MS });
  private readonly drainer = new ConnectionDrain();
  private readonly limits: HttpLimits;
  private readonly log: Logger;

  constructor(private readonly opts: OutboundOptions) {
    this.log = opts.log ?? nullLogger;
    this.upstream = new UpstreamConnections<Http1Upstream>({
      close: (c) => c.close(),
      overflow: (cluster, kind) => this.opts.events?.breakerOverflow(cluster, kind),
    });
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) =>
      this.onConnection(sock),
    );
    this.limits = httpLimits(opts.limits);
    this.http = new Http1Server(
      this.limits,
      (req, res) => {
        this.onRequest(req, res).catch((err: Error) => {
          this.log.warn('outbound request failed unexpectedly', { err });
          if (!res.headersSent) res.respond(500, { 'content-type': 'text/plain' }, 'internal error\n');
          else res.destroy();
        });
      },
      // Draining: answers say `Connection: close`, so the pods reconnect to the agent that took over.
      { draining: () => this.drainer.draining },
    );
  }

  /** `fd`: an already listening socket (an agent's ListenerSet); port and host are then what it is bound to. */
  async listen(port: number, host: string, fd?: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(fd === undefined ? { port, host, backlog: 4096 } : { fd, backlog: 4096 }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  /**
   * Stops accepting (the listening socket lives on in the agent that took over), asks HTTP
   * clients to reconnect (`Connection: close`, GOAWAY) and resolves once every connection is gone.
   */
  drain(): Promise<void> {
    this.drainer.start();
    return new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  async close(): Promise<void> {
    const stopped = new Promise<void>((resolve) =>
      this.server.listening ? this.server.close(() => resolve()) : resolve(),
    );
    // Idle keep-alive connections close now; waiting for the listener first held close()
    // until each one's idle timeout ran out.
    this.http.close();
    await stopped;
    this.upstream.close();
    this.h2c.close();
  }

  /**
   * After a config or SVID change: upstream pools and h2c sessions of endpoints that
   * left their cluster, of clusters that are gone, or presenting an SVID that is no
   * longer the source's current one, close (requests in flight on them finish).
   * `endpointsOf` gives a cluster's endpoint keys now. Returns how many went.
   */
  prune(endpointsOf: (cluster: string) => ReadonlySet<string> | undefined): number {
    const eps = new Map<string, ReadonlySet<string> | undefined>();
    const keep = (of: PoolOf) => {
      if (this.opts.svids.svidFor(of.source)?.serial !== of.serial) return false;
      if (!eps.has(of.cluster)) eps.set(of.cluster, endpointsOf(of.cluster));
      return eps.get(of.cluster)?.has(of.endpoint) ?? false;
    };
    return this.upstream.prune(keep) + this.h2c.prune((key) => keep(poolOfH2cKey(key)));
  }

  /** Open upstream state, for tests and the admin view. */
  upstreamStats(): { pools: number; connections: number; pending: number; h2cSessions: number } {
    return { ...this.upstream.stats(), h2cSessions: this.h2c.size };
  }

  /**
   * After a config or SVID change: a connection whose pod left the mesh, changed
   * identity or lost its SVID is reset (it must not keep an identity the agent no
   * longer holds); the others see the pod as it is now. Returns how many were closed.
   */
  revalidate(): number {
    let closed = 0;
    for (const [sock, was] of this.accepted) {
      const now = this.opts.sources.byIp(was.ip);
      if (now && now.spiffeId === was.spiffeId && this.opts.svids.svidFor(now.spiffeId)) {
        const ctx = this.contexts.get(sock);
        if (ctx) ctx.source = now;
        continue;
      }
      this.accepted.delete(sock);
      sock.resetAndDestroy();
      closed++;
    }
    if (closed > 0) this.log.info('reset connections of pods without a mesh identity', { closed });
    return closed;
  }

  /** The source's current SVID: rotations reach requests on open connections. */
  private svidOf(ctx: ConnContext): X509Svid {
    return this.opts.svids.svidFor(ctx.source.spiffeId) ?? ctx.svid;
  }

  private onConnection(sock: net.Socket): void {
    sock.on('error', ignoreError);
    const peerIp = sock.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    const peerPort = sock.remotePort ?? 0;
    const localIp = sock.localAddress?.replace(/^::ffff:/, '') ?? '';
    const localPort = sock.localPort ?? 0;
    const orig = this.opts.origDst.lookup(peerIp, peerPort, localIp, localPort);
    if (!orig) {
      // Not redirected by the kernel: nobody should dial the capture port directly.
      this.log.debug('connection without original destination refused', { peer: `${peerIp}:${peerPort}` });
      this.opts.events?.identityRejected?.('not-captured');
      sock.destroy();
      return;
    }
    const source = this.opts.sources.byIp(peerIp);
    const svid = source && this.opts.svids.svidFor(source.spiffeId);
    if (!source || !svid) {
      this.log.warn('captured connection from a pod without a mesh identity', {
        peer: peerIp,
        source: source?.spiffeId,
      });
      this.opts.events?.identityRejected?.('no-mesh-identity');
      sock.destroy();
      return;
    }
    this.accepted.set(sock, source);
    // 'on', not 'once', for the 'close' of a connection (it comes once): a once-wrapper is three more objects per connection.
    sock.on('close', () => this.accepted.delete(sock));
    const plan = this.opts.planner.plan(orig.ip, orig.port);
    const peer = `${peerIp}:${peerPort}`;
    if (this.opts.tcp) {
      const tcp = this.opts.tcp;
      const conn = { localIp, localPort, remoteIp: peerIp, remotePort: peerPort };
      this.untagged.set(peer, conn);
      sock.on('close', () => {
        this.untagged.delete(peer);
        tcp.untag(conn);
      });
    }
    if (plan.kind === 'http') {
      // HTTP/1.1 or h2c (prior knowledge, e.g. gRPC): both are routed per request.
      sniffH2c(
        sock,
        (h2c) => this.serveHttp(sock, plan, source, svid, peer, h2c),
        // As Envoy: a connection that says nothing is left to the idle timeout (the headers
        // timeout runs from a request's first byte).
        this.limits.idleTimeoutMs,
      );
      return;
    }
    if (plan.kind === 'detect') {
      detectProtocol(sock, DETECT_TIMEOUT_MS, (p) => {
        if (p === 'tcp') this.serveTcp(sock, plan.tcp, source, svid, peer);
        else this.serveHttp(sock, plan.http, source, svid, peer, p === 'h2c');
      });
      return;
    }
    if (plan.kind === 'tcp') {
      this.serveTcp(sock, plan, source, svid, peer);
      return;
    }
    const ep = this.opts.planner.endpointAt(orig.ip, orig.port);
    if (ep) {
      this.forwardTcp(sock, source, svid, `${orig.ip}:${orig.port}`, null, peer, ep);
      return;
    }
    // Outside the mesh: straight to where the app was going.
    const started = performance.now();
    const up = net.connect({ host: orig.ip, port: orig.port, noDelay: true });
    up.once('connect', () => {
      splice(sock, up);
      sock.resume();
    });
    up.once('error', () => sock.destroy());
    sock.once('close', () =>
      this.opts.events?.completed({
        source,
        protocol: 'tcp',
        service: 'passthrough',
        cluster: undefined,
        endpoint: undefined,
        status: 0,
        flags: '-',
        durationMs: performance.now() - started,
        attempts: 1,
        bytesSent: sock.bytesRead,
        bytesReceived: sock.bytesWritten,
      }),
    );
  }

  /** A connection taken as HTTP (paused, first bytes unread): routed per request or per h2c stream. */
  private serveHttp(
    sock: net.Socket,
    plan: HttpPlan,
    source: SourceWorkload,
    svid: X509Svid,
    peer: string,
    h2c: boolean,
  ): void {
    const ctx: ConnContext = { source, svid, service: plan.service, route: plan.route, peer };
    this.contexts.set(sock, ctx);
    if (h2c) {
      serveH2c(
        sock,
        (stream, headers) =>
          this.onH2Stream(ctx, stream, headers).catch((err: Error) => {
            this.log.warn('outbound h2c stream failed unexpectedly', { err });
            if (!stream.headersSent) stream.respond({ ':status': 500 }, { endStream: true });
          }),
        (session) => this.drainer.h2(session),
        this.limits,
      );
      return;
    }
    this.http.serve(sock);
  }

  private serveTcp(
    sock: net.Socket,
    plan: TcpPlan,
    source: SourceWorkload,
    svid: X509Svid,
    peer: string,
  ): void {
    const cluster = plan.cluster();
    // Envoy's tcp_proxy idle timeout: a connection silent that long in both directions is closed.
    // Every connection has one (Envoy's default is an hour): a shared listener, not a closure and a once-wrapper each.
    if (plan.idleTimeoutMs) {
      sock.setTimeout(plan.idleTimeoutMs);
      sock.on('timeout', destroyIdle);
    }
    this.forwardTcp(sock, source, svid, plan.service, cluster, peer);
  }

  private forwardTcp(
    sock: net.Socket,
    source: SourceWorkload,
    svid: X509Svid,
    service: string,
    cluster: UpstreamCluster | null,
    peer: string,
    fixed?: Endpoint,
  ): void {
    const started = performance.now();
    const done = (flags: ResponseFlag, ep: Endpoint | undefined) =>
      this.opts.events?.completed({
        source,
        protocol: 'tcp',
        service,
        cluster: cluster?.name,
        endpoint: ep,
        status: 0,
        flags,
        durationMs: performance.now() - started,
        attempts: 1,
        bytesSent: sock.bytesRead,
        bytesReceived: sock.bytesWritten,
      });
    const ep = fixed ?? cluster?.pick() ?? null;
    if (!ep) {
      sock.destroy();
      done('UH', undefined);
      return;
    }
    if (!cluster) {
      this.connectTcp(sock, source, svid, cluster, peer, ep, () => {}, done);
      return;
    }
    // At max_connections the stream waits as pending (paused), for no longer than a connect may take.
    const slot = (s: Awaited<ReturnType<UpstreamConnections<Http1Upstream>['slot']>>) => {
      if (sock.destroyed) {
        if (s.kind === 'slot') s.release();
        done('DC', ep);
        return;
      }
      if (s.kind === 'slot') {
        this.connectTcp(sock, source, svid, cluster, peer, ep, s.release, done);
        return;
      }
      sock.destroy();
      done(s.flag, ep);
    };
    const got = this.upstream.slot(cluster, { budgetMs: cluster.connectTimeoutMs, gone: watchClose(sock) });
    if ('then' in got) void got.then(slot);
    else slot(got);
  }

  private connectTcp(
    sock: net.Socket,
    source: SourceWorkload,
    svid: X509Svid,
    cluster: UpstreamCluster | null,
    peer: string,
    ep: Endpoint,
    release: () => void,
    done: (flags: ResponseFlag, ep: Endpoint | undefined) => void,
  ): void {
    const untrack = cluster?.track(ep) ?? (() => {});
    this.dial(source, svid, ep, ep.port, peer, cluster?.connectTimeoutMs ?? 5000, 'tcp').then(
      (up) => {
        cluster?.report(ep, { kind: 'success' });
        // A reset upstream (a tunnel stream ended with CONNECT_ERROR, a pod's RST) is a reset here
        // too; before the splice, whose error listener would end it with a FIN.
        up.on('error', () => sock.resetAndDestroy());
        up.on('close', () => {
          if ((up as { rstCode?: number }).rstCode === http2.constants.NGHTTP2_CONNECT_ERROR)
            sock.resetAndDestroy();
        });
        splice(sock, up);
        // Same node: policy is re-checked on this connection when it changes, as the tunnel does.
        const destination = ep.local ? this.opts.localWorkloads.byIp(ep.ip) : undefined;
        if (destination)
          this.opts.inbound.watch(
            { principal: source.spiffeId, destination, port: ep.port },
            [sock, up],
            () => {
              sock.resetAndDestroy();
              up.destroy();
            },
          );
        sock.on('close', () => {
          release();
          untrack();
          done('-', ep);
        });
      },
      (err: Error) => {
        release();
        untrack();
        const denied = err instanceof TunnelError && err.status === 403;
        if (!denied) cluster?.report(ep, { kind: 'connect-failure' });
        // A refusal is a reset, whichever node decided (a FIN would read as an empty answer).
        if (denied) sock.resetAndDestroy();
        else sock.destroy();
        done(denied ? 'UAEX' : 'UF', ep);
      },
    );
  }

  /**
   * The CONNECT's baggage, built once per source workload and protocol: the tunnel stream keeps
   * its request headers for its whole life, and a string built per connection is a dozen
   * string pieces (400 bytes) per open connection.
   */
  private baggageOf(source: SourceWorkload, protocol: PortProtocol): string {
    let built = this.baggage.get(source);
    if (!built) {
      built = {};
      this.baggage.set(source, built);
    }
    built[protocol] ??=
      `k8s.namespace.name=${source.namespace},k8s.workload.name=${source.name},app.version=${source.version ?? 'unknown'},${protocolBaggage(protocol)}`;
    return built[protocol];
  }

  /** A byte stream to the endpoint: direct on this node, the mTLS tunnel otherwise. */
  private dial(
    source: SourceWorkload,
    svid: X509Svid,
    ep: Endpoint,
    port: number,
    peer: string,
    timeoutMs: number,
    /** How this proxy carries the connection; the receiving node follows it. */
    protocol: PortProtocol,
  ): Promise<Duplex> {
    const pair = {
      source: { namespace: source.namespace, workload: source.name },
      destination:
        ep.namespace && ep.workload ? { namespace: ep.namespace, workload: ep.workload } : undefined,
    };
    this.tagDownstream(peer, pair);
    if (ep.local) {
      const destination = this.opts.localWorkloads.byIp(ep.ip);
      if (!destination) return Promise.reject(new Error(`no local workload at ${ep.ip}`));
      // HTTP is authorized per request (admit); a connection check here would read its rules as TCP.
      if (protocol === 'tcp') {
        const verdict = this.opts.inbound.authorize({ principal: source.spiffeId, destination, port });
        if (!verdict.allowed)
          return Promise.reject(new TunnelError('denied by authorization policy', 'refused', 403));
        // The pod serves HTTP on this port: HTTP in the stream is parsed on the inbound side, so
        // the pod reads the caller's identity from the mesh, never one the app wrote.
        if (destination.protocolOf(port) === 'http')
          return Promise.resolve(
            this.opts.inbound.acceptLocalTcp({ principal: source.spiffeId, destination, port }),
          );
      }
      const up = connectTcp(ep.ip, port, timeoutMs);
      const tcp = this.opts.tcp;
      if (!tcp) return up;
      const local = { namespace: destination.namespace, workload: destination.name };
      return up.then((s) => {
        const conn = {
          localIp: s.localAddress,
          localPort: s.localPort,
          remoteIp: s.remoteAddress,
          remotePort: s.remotePort,
        };
        if (tcp.tag(conn, { source: pair.source, destination: local, leg: 'proxy_pod' }))
          s.once('close', () => tcp.untag(conn));
        return s;
      });
    }
    if (!ep.tunnelAddress || !ep.spiffeId) {
      return Promise.reject(new Error(`endpoint ${ep.ip} has no tunnel address or identity in its metadata`));
    }
    return this.opts.tunnels.open({
      source: svid,
      nodeAddress: ep.tunnelAddress,
      expectedServerId: ep.spiffeId,
      authority: `${ep.ip}:${port}`,
      forwardedFor: peer,
      baggage: this.baggageOf(source, protocol),
      connectTimeoutMs: timeoutMs,
      pair,
    });
  }

  /**
   * A captured connection's pod -> proxy leg belongs to the source and the
   * destination of its first routed request or connection (later requests on a keep-alive connection
   * may go elsewhere; the leg is attributed once).
   */
  private tagDownstream(
    peer: string,
    pair: { source: WorkloadRef; destination: WorkloadRef | undefined },
  ): void {
    const conn = this.opts.tcp && this.untagged.get(peer);
    if (!conn) return;
    this.untagged.delete(peer);
    this.opts.tcp!.tag(conn, { ...pair, leg: 'pod_proxy' });
  }

  /**
   * One HTTP/1.1 connection to ep for the upstream pool: it presents the SVID and carries
   * the context (forwarded for, baggage) of the request that opened it. It leaves the
   * pool (and frees its breaker slot) when its socket closes or it fails to connect.
   */
  private client(ctx: ConnContext, svid: X509Svid, ep: Endpoint, timeoutMs: number): Http1Upstream {
    const gone = (c: Http1Upstream) => this.upstream.gone(c);
    const conn: Http1Upstream = new Http1Upstream(
      () =>
        this.dial(ctx.source, svid, ep, ep.port, ctx.peer, timeoutMs, 'http').then((s) => {
          // The far agent drains (an upgrade): this connection takes no new request and closes
          // once its request is done, so the next one goes through the agent that took over.
          carrierGoaway(s, () => conn.retire());
          return s;
        }),
      gone,
      `${ep.ip}:${ep.port}`,
    );
    return conn;
  }

  /** The client span and the completion record of one proxied request, for HTTP/1.1 and h2c alike. */
  private tracking(
    ctx: ConnContext,
    view: HttpRequestView,
    decision: RouteDecision,
    protocol: 'http/1.1' | 'h2c',
  ) {
    const started = performance.now();
    const tp = view.headers.traceparent;
    const span = this.opts.tracer?.startSpan(
      `${ctx.service} ${view.method}`,
      Array.isArray(tp) ? tp[0] : (tp as string | undefined),
      {
        'http.request.method': view.method,
        'url.path': view.path.split('?')[0]!,
        'sockmesh.source': ctx.source.spiffeId,
        'network.protocol.name': protocol,
      },
      'client',
    );
    const record = (
      status: number,
      flags: ResponseFlag,
      cluster?: UpstreamCluster,
      ep?: Endpoint,
      attempts = ep ? 1 : 0,
      grpcStatus?: number,
    ) => {
      // A gRPC client span is an error for any status but OK (OpenTelemetry's gRPC conventions).
      const failed = status >= 500 || flags !== '-' || (grpcStatus !== undefined && grpcStatus !== 0);
      span?.end(failed ? 'error' : 'ok', flags === '-' ? undefined : flags);
      this.opts.events?.completed({
        source: ctx.source,
        protocol: 'http',
        service: ctx.service,
        cluster: cluster?.name,
        endpoint: ep,
        status,
        flags,
        durationMs: performance.now() - started,
        method: view.method,
        path: view.path,
        ...(decision.kind === 'forward' ? { route: decision.routeName } : {}),
        attempts,
        ...(grpcStatus !== undefined ? { grpcStatus } : {}),
      });
    };
    return { span, record };
  }

  /** Same decisions as onRequest, for one h2c stream: route, weights, breaker, authorization, identity, trace. */
  private async onH2Stream(
    ctx: ConnContext,
    stream: ServerHttp2Stream,
    h: IncomingHttpHeaders,
  ): Promise<void> {
    const method = String(h[':method'] ?? 'GET');
    const path = String(h[':path'] ?? '/');
    const authority = String(h[':authority'] ?? h.host ?? '');
    const view: HttpRequestView = { sourceIp: ctx.source.ip, authority, path, method, headers: h };
    const decision = ctx.route(view);
    const { span, record } = this.tracking(ctx, view, decision, 'h2c');
    const answer = (
      status: number,
      flag: ResponseFlag,
      body: string,
      cluster?: UpstreamCluster,
      ep?: Endpoint,
      attempts?: number,
    ) => {
      if (!stream.headersSent && !stream.closed)
        stream.respond({ ':status': status, 'content-type': 'text/plain', 'x-sockmesh-flags': flag });
      if (!stream.closed) stream.end(body);
      record(status, flag, cluster, ep, attempts);
    };
    if (decision.kind === 'reject') {
      answer(decision.status, decision.flag, decision.body);
      return;
    }
    const { cluster } = decision;
    const release = cluster.tryAcquire('request');
    if (!release) {
      this.opts.events?.breakerOverflow(cluster.name, 'request');
      answer(503, 'UO', 'upstream overflow: circuit breaker open (max requests)\n', cluster);
      return;
    }
    const headers = decision.headers;
    this.noteClaimedIdentity(headers);
    if (span) headers.traceparent = span.traceparent;
    // Kept for replay (up to MAX_REPLAY_BODY, when the route retries) while it streams to the first try.
    const body = stream.endAfterHeaders
      ? null
      : new ReplayableBody(stream, decision.retry ? MAX_REPLAY_BODY : 0);
    try {
      const end = await runAttempts<H2Answer>({
        cluster,
        hashKey: decision.hashKey,
        retry: decision.retry,
        replayable: () => body === null || body.replayable,
        deadline: decision.timeoutMs === undefined ? undefined : performance.now() + decision.timeoutMs,
        admit: (ep) => this.admit(ctx, ep, headers, method, path),
        attempt: async (ep, budgetMs) => {
          let session: ClientHttp2Session;
          const svid = this.svidOf(ctx);
          const key = h2cKey({
            cluster: cluster.name,
            source: ctx.source.spiffeId,
            serial: svid.serial,
            endpoint: ep.key,
          });
          try {
            session = await this.h2c.get(
              key,
              () => this.dial(ctx.source, svid, ep, ep.port, ctx.peer, cluster.connectTimeoutMs, 'http'),
              this.h2c.has(key) ? undefined : this.h2cSlot(cluster),
            );
          } catch (err) {
            return failure(err);
          }
          return h2cAttempt(
            session,
            upstreamHeaders(headers, method, path, authority),
            body,
            budgetMs,
            decision.idleTimeoutMs,
          );
        },
        discard: discardH2,
        retryOverflow: () => this.opts.events?.breakerOverflow(cluster.name, 'retry'),
      });
      if (end.kind === 'response') {
        const relayed = await relayH2Answer(
          stream,
          end.response,
          end.flag === '-' ? {} : { 'x-sockmesh-flags': end.flag },
        );
        end.done(relayed.grpcStatus);
        record(end.status, end.flag, cluster, end.ep, end.attempts, relayed.grpcStatus);
      } else if (end.kind === 'denied') {
        answer(403, 'UAEX', denial(end.policy), cluster, end.ep, end.attempts);
      } else {
        answer(end.flag === 'UT' ? 504 : 503, end.flag, failureBody(end.flag), cluster, end.ep, end.attempts);
      }
    } finally {
      release();
    }
  }

  /**
   * An h2c session multiplexes every stream to its endpoint on one connection: it
   * holds a max_connections slot, and, as in Envoy, an endpoint without a
   * connection gets one even at the limit (counted as cx_overflow), so h2c
   * requests never wait for a connection.
   */
  private h2cSlot(cluster: UpstreamCluster): () => void {
    const slot = cluster.tryAcquire('connection');
    if (slot) return slot;
    this.opts.events?.breakerOverflow(cluster.name, 'connection');
    return () => {};
  }

  /** An app-sent x-forwarded-client-cert is counted once per request; admit replaces it. */
  private noteClaimedIdentity(headers: Record<string, string | string[]>): void {
    if (headers['x-forwarded-client-cert'] !== undefined) this.opts.events?.identityRejected?.('forged-xfcc');
  }

  /**
   * A local endpoint is authorized here, by the rules its node's tunnel would
   * apply; a remote one by its node. Both get the caller's identity from here.
   */
  private admit(
    ctx: ConnContext,
    ep: Endpoint,
    headers: Record<string, string | string[]>,
    method: string,
    path: string,
  ): { denied: string } | undefined {
    // A pooled upstream connection needs no dial: the routed request attributes the pod's leg.
    this.tagDownstream(ctx.peer, workloadPair(ctx.source, ep));
    delete headers['x-forwarded-client-cert'];
    if (!ep.local) {
      // The destination node relays HTTP as bytes unless a policy there reads requests, so the
      // caller's identity is written here; ep.spiffeId is what the tunnel's server must prove.
      if (ep.spiffeId)
        headers['x-forwarded-client-cert'] = forwardedClientCert(ep.spiffeId, ctx.source.spiffeId);
      return undefined;
    }
    const destination = this.opts.localWorkloads.byIp(ep.ip);
    if (!destination) return { denied: '-' };
    const verdict = this.opts.inbound.authorize(
      { principal: ctx.source.spiffeId, destination, port: ep.port },
      method,
      path.split('?')[0],
    );
    if (!verdict.allowed) return { denied: verdict.policy };
    headers['x-forwarded-client-cert'] = forwardedClientCert(destination.spiffeId, ctx.source.spiffeId);
    return undefined;
  }

  private async onRequest(req: Http1ServerRequest, res: Http1Answer): Promise<void> {
    const started = performance.now();
    const ctx = this.contexts.get(req.socket);
    if (!ctx) {
      res.respond(500, { 'content-type': 'text/plain' }, 'no context for this connection\n');
      return;
    }
    const view: HttpRequestView = {
      sourceIp: ctx.source.ip,
      authority: (req.headers.host as string | undefined) ?? '',
      path: req.path,
      method: req.method,
      headers: req.headers,
    };
    const decision = ctx.route(view);
    const { span, record } = this.tracking(ctx, view, decision, 'http/1.1');
    if (decision.kind === 'reject') {
      res.respond(
        decision.status,
        { 'content-type': 'text/plain', 'x-sockmesh-flags': decision.flag },
        decision.body,
      );
      record(decision.status, decision.flag);
      return;
    }
    const { cluster } = decision;
    const headers = decision.headers;
    this.noteClaimedIdentity(headers);
    dropHopByHop(headers);
    if (span) headers.traceparent = span.traceparent;
    let body: Buffer | Readable | null = null;
    const retry = decision.retry;
    if (req.body) {
      const len = Number(req.headers['content-length'] ?? Number.NaN);
      body = retry && len <= MAX_REPLAY_BODY ? await readAll(req.body) : req.body;
    }
    const deadline = decision.timeoutMs === undefined ? undefined : started + decision.timeoutMs;
    const { hashKey } = decision;

    const requestRelease = cluster.tryAcquire('request');
    if (!requestRelease) {
      this.opts.events?.breakerOverflow(cluster.name, 'request');
      res.respond(
        503,
        { 'content-type': 'text/plain', 'x-sockmesh-flags': 'UO' },
        'upstream overflow: circuit breaker open (max requests)\n',
      );
      record(503, 'UO', cluster);
      return;
    }
    // A caller that leaves stops waiting for a connection.
    const gone = (leave: () => void) => res.gone(leave);
    try {
      const end = await runAttempts<Http1Response>({
        cluster,
        hashKey,
        retry,
        replayable: () => body === null || Buffer.isBuffer(body),
        deadline,
        admit: (ep) => this.admit(ctx, ep, headers, view.method, view.path),
        attempt: async (ep, budget) => {
          const until = budget === undefined ? undefined : performance.now() + budget;
          const svid = this.svidOf(ctx);
          const of = {
            cluster: cluster.name,
            source: ctx.source.spiffeId,
            serial: svid.serial,
            endpoint: ep.key,
          };
          const open = () => this.client(ctx, svid, ep, cluster.connectTimeoutMs);
          const got = await this.upstream.lease(cluster, of, open, { budgetMs: budget, gone });
          if (got.kind === 'local') return got;
          try {
            const rest = until === undefined ? undefined : Math.max(1, Math.ceil(until - performance.now()));
            const up = await got.conn.request({
              method: view.method,
              path: view.path,
              headers,
              body,
              timeoutMs: rest,
              // The route's stream idle timeout: no byte from upstream for that long ends the request.
              idleTimeoutMs: decision.idleTimeoutMs,
            });
            // The connection serves the next request once this answer is read or dropped.
            up.body.once('close', got.done);
            return { kind: 'response', status: up.statusCode, response: up };
          } catch (err) {
            got.done();
            this.log.debug('upstream attempt failed', { cluster: cluster.name, endpoint: ep.key, err });
            return failure(err);
          }
        },
        discard: (up) => {
          up.body.on('error', () => {});
          up.body.resume();
        },
        retryOverflow: () => this.opts.events?.breakerOverflow(cluster.name, 'retry'),
      });
      if (end.kind === 'response') {
        const up = end.response;
        // Hop-by-hop headers and those the upstream's Connection names are already left out (Http1Upstream).
        const out = up.headers;
        if (end.flag !== '-') out['x-sockmesh-flags'] = end.flag;
        // Written at the pod's pace; a pod that leaves mid-answer drops the upstream body (and its connection).
        await res.relay(up.statusCode, out, up.body);
        end.done();
        record(up.statusCode, end.flag, cluster, end.ep, end.attempts);
        return;
      }
      if (end.kind === 'denied') {
        res.respond(403, { 'content-type': 'text/plain', 'x-sockmesh-flags': 'UAEX' }, denial(end.policy));
        record(403, 'UAEX', cluster, end.ep, end.attempts);
        return;
      }
      const status = end.flag === 'UT' ? 504 : 503;
      if (!res.headersSent)
        res.respond(
          status,
          { 'content-type': 'text/plain', 'x-sockmesh-flags': end.flag },
          failureBody(end.flag),
        );
      else res.destroy();
      record(status, end.flag, cluster, end.ep, end.attempts);
    } finally {
      requestRelease();
    }
  }
}

/** A failed attempt as the loop needs it: the outcome for retry and outlier decisions, the flag to log. */
function failure<R>(err: unknown): AttemptResult<R> {
  const outcome = classify(err);
  const flag: ResponseFlag =
    outcome.kind === 'timeout'
      ? 'UT'
      : err instanceof TunnelError && err.status === 403
        ? 'UAEX'
        : outcome.kind === 'reset'
          ? 'UR'
          : 'UF';
  return { kind: 'failed', outcome, flag, err };
}

function denial(policy: string | undefined): string {
  return policy === undefined ? 'RBAC: access denied\n' : `RBAC: access denied (${policy})\n`;
}

function failureBody(flag: ResponseFlag): string {
  return `upstream ${flag === 'UT' ? 'request timeout' : 'unavailable'} (${flag})\n`;
}

function classify(err: unknown): Outcome {
  const e = err as { name?: string; code?: string; kind?: string };
  if (e.name === 'TimeoutError' || e.name === 'AbortError' || e.code === 'UND_ERR_HEADERS_TIMEOUT')
    return { kind: 'timeout' };
  if (err instanceof TunnelError)
    return err.kind === 'reset'
      ? { kind: 'reset' }
      : err.kind === 'timeout'
        ? { kind: 'timeout' }
        : { kind: 'connect-failure' };
  if (e.code === 'ECONNREFUSED' || e.code === 'EHOSTUNREACH' || e.code === 'UND_ERR_CONNECT_TIMEOUT')
    return { kind: 'connect-failure' };
  if (e.code === 'UND_ERR_SOCKET' || e.code === 'ECONNRESET') return { kind: 'reset' };
  return { kind: 'connect-failure' };
}

function readAll(req: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** How long an upstream connection (HTTP/1.1 or h2c) may stay idle before it closes. */
const UPSTREAM_IDLE_MS = 30_000;

/** Cluster names hold `|`, so the cluster goes last: the other parts have none. */
function h2cKey(of: PoolOf): string {
  return `${of.source}|${of.serial}|${of.endpoint}|${of.cluster}`;
}

function poolOfH2cKey(key: string): PoolOf {
  const [source = '', serial = '', endpoint = '', ...cluster] = key.split('|');
  return { source, serial, endpoint, cluster: cluster.join('|') };
}

/** `gone` for a pending wait: the caller's socket or response closing. */
function watchClose(e: NodeJS.EventEmitter): (leave: () => void) => () => void {
  return (leave) => {
    e.once('close', leave);
    return () => e.off('close', leave);
  };
}

/** The workloads a connection serves, as kernel TCP health labels them. */
function workloadPair(
  source: SourceWorkload,
  ep: Endpoint,
): { source: WorkloadRef; destination: WorkloadRef | undefined } {
  return {
    source: { namespace: source.namespace, workload: source.name },
    destination: ep.namespace && ep.workload ? { namespace: ep.namespace, workload: ep.workload } : undefined,
  };
}

/** tcp_proxy's idle timeout ran out on a pod's connection ('timeout' of its socket). */
function destroyIdle(this: net.Socket): void {
  this.destroy();
}
