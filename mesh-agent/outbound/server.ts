import http from 'node:http';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Dispatcher, Pool } from 'undici';
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
import { DeadlineSignal } from '../io/deadline.js';
import { type H2Answer, H2cSessions, relayH2Answer, serveH2c, sniffH2c, upstreamHeaders } from '../io/h2c.js';
import { HOP_BY_HOP } from '../io/headers.js';
import { connectTcp, splice } from '../io/streams.js';
import { TunnelError, type TunnelPool } from '../tunnel/pool.js';
import { type AttemptResult, MAX_REPLAY_BODY, runAttempts } from './attempts.js';
import { DETECT_TIMEOUT_MS, detectProtocol } from './detect.js';
import { discardH2, h2cAttempt } from './h2c-upstream.js';
import type {
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
  breakerOverflow(cluster: string, kind: string): void;
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
  events?: OutboundEvents;
  /** Starts a client span per proxied request; its traceparent replaces the caller's upstream (W3C). */
  tracer?: RequestTracer;
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
  private readonly http: http.Server;
  private readonly contexts = new WeakMap<object, ConnContext>();
  /** Every accepted downstream connection and the source it was accepted for (see revalidate). */
  private readonly accepted = new Map<net.Socket, SourceWorkload>();
  /** What a pool's next upstream connection carries: the latest request's context, not the first one's. */
  private readonly dialContext = new WeakMap<Pool, { ctx: ConnContext; timeoutMs: number }>();
  private readonly pools = new Map<string, Pool>();
  private readonly h2c = new H2cSessions();
  private readonly drainer = new ConnectionDrain();
  private readonly log: Logger;

  constructor(private readonly opts: OutboundOptions) {
    this.log = opts.log ?? nullLogger;
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) =>
      this.onConnection(sock),
    );
    this.http = http.createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
      this.onRequest(req, res).catch((err: Error) => {
        this.log.warn('outbound request failed unexpectedly', { err });
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    this.http.on('clientError', (_err, socket) => socket.destroy());
    this.drainer.http1(this.http);
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
    await new Promise<void>((resolve) =>
      this.server.listening ? this.server.close(() => resolve()) : resolve(),
    );
    this.http.close();
    await Promise.all([...this.pools.values()].map((p) => p.destroy()));
    this.pools.clear();
    this.h2c.close();
  }

  /** Drops pooled upstream connections of a source identity (e.g. after its SVID rotated). */
  dropPoolsOf(spiffeId: string): void {
    this.h2c.drop(`${spiffeId}|`);
    for (const [key, pool] of this.pools) {
      if (key.startsWith(`${spiffeId}|`)) {
        this.pools.delete(key);
        pool.close().catch(() => {});
      }
    }
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
    sock.on('error', () => {});
    const peerIp = sock.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    const peerPort = sock.remotePort ?? 0;
    const localIp = sock.localAddress?.replace(/^::ffff:/, '') ?? '';
    const localPort = sock.localPort ?? 0;
    const orig = this.opts.origDst.lookup(peerIp, peerPort, localIp, localPort);
    if (!orig) {
      // Not redirected by the kernel: nobody should dial the capture port directly.
      this.log.debug('connection without original destination refused', { peer: `${peerIp}:${peerPort}` });
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
      sock.destroy();
      return;
    }
    this.accepted.set(sock, source);
    sock.once('close', () => this.accepted.delete(sock));
    const plan = this.opts.planner.plan(orig.ip, orig.port);
    const peer = `${peerIp}:${peerPort}`;
    if (plan.kind === 'http') {
      // HTTP/1.1 or h2c (prior knowledge, e.g. gRPC): both are routed per request.
      sniffH2c(sock, (h2c) => this.serveHttp(sock, plan, source, svid, peer, h2c));
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
      );
      return;
    }
    this.contexts.set(sock, ctx);
    this.http.emit('connection', sock);
    sock.resume();
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
    if (plan.idleTimeoutMs) sock.setTimeout(plan.idleTimeoutMs, () => sock.destroy());
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
    const release = cluster ? cluster.tryAcquire('connection') : () => {};
    if (!release) {
      this.opts.events?.breakerOverflow(cluster!.name, 'connection');
      sock.destroy();
      done('UO', ep);
      return;
    }
    const untrack = cluster?.track(ep) ?? (() => {});
    this.dial(source, svid, ep, ep.port, peer, cluster?.connectTimeoutMs ?? 5000, 'tcp').then(
      (up) => {
        cluster?.report(ep, { kind: 'success' });
        // A reset upstream (a tunnel stream ended with CONNECT_ERROR, a pod's RST) is a reset here too.
        up.once('error', () => sock.resetAndDestroy());
        up.once('close', () => {
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
        sock.resume();
        sock.once('close', () => {
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
        sock.destroy();
        done(denied ? 'UAEX' : 'UF', ep);
      },
    );
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
    if (ep.local) {
      const destination = this.opts.localWorkloads.byIp(ep.ip);
      if (!destination) return Promise.reject(new Error(`no local workload at ${ep.ip}`));
      // HTTP is authorized per request (admit); a connection check here would read its rules as TCP.
      if (protocol === 'tcp') {
        const verdict = this.opts.inbound.authorize({ principal: source.spiffeId, destination, port });
        if (!verdict.allowed)
          return Promise.reject(new TunnelError('denied by authorization policy', 'refused', 403));
      }
      return connectTcp(ep.ip, port, timeoutMs);
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
      baggage: `k8s.namespace.name=${source.namespace},k8s.workload.name=${source.name},app.version=${source.version ?? 'unknown'},${protocolBaggage(protocol)}`,
      connectTimeoutMs: timeoutMs,
    });
  }

  private pool(ctx: ConnContext, ep: Endpoint, timeoutMs: number): Pool {
    const svid = this.svidOf(ctx);
    const key = `${ctx.source.spiffeId}|${svid.serial}|${ep.ip}:${ep.port}`;
    let p = this.pools.get(key);
    if (!p) {
      const port = ep.port;
      const pool: Pool = new Pool(`http://${ep.ip}:${port}`, {
        connections: 512,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        connect: (_o, cb) => {
          const d = this.dialContext.get(pool) ?? { ctx, timeoutMs };
          this.dial(d.ctx.source, svid, ep, port, d.ctx.peer, d.timeoutMs, 'http').then(
            (s) => cb(null, s as net.Socket),
            (err: Error) => cb(err, null),
          );
        },
      });
      p = pool;
      this.pools.set(key, p);
    }
    this.dialContext.set(p, { ctx, timeoutMs });
    return p;
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
    ) => {
      span?.end(status >= 500 || flags !== '-' ? 'error' : 'ok', flags === '-' ? undefined : flags);
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
          try {
            session = await this.h2c.get(
              `${ctx.source.spiffeId}|${this.svidOf(ctx).serial}|${ep.ip}:${ep.port}`,
              () =>
                this.dial(
                  ctx.source,
                  this.svidOf(ctx),
                  ep,
                  ep.port,
                  ctx.peer,
                  cluster.connectTimeoutMs,
                  'http',
                ),
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
        await relayH2Answer(stream, end.response, end.flag === '-' ? {} : { 'x-sockmesh-flags': end.flag });
        end.untrack();
        record(end.status, end.flag, cluster, end.ep, end.attempts);
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

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const ctx = this.contexts.get(req.socket);
    if (!ctx) {
      res.writeHead(500).end();
      return;
    }
    const view: HttpRequestView = {
      sourceIp: ctx.source.ip,
      authority: req.headers.host ?? '',
      path: req.url ?? '/',
      method: req.method ?? 'GET',
      headers: req.headers,
    };
    const decision = ctx.route(view);
    const { span, record } = this.tracking(ctx, view, decision, 'http/1.1');
    if (decision.kind === 'reject') {
      res.writeHead(decision.status, { 'content-type': 'text/plain', 'x-sockmesh-flags': decision.flag });
      res.end(decision.body);
      record(decision.status, decision.flag);
      return;
    }
    const { cluster } = decision;
    const headers = decision.headers;
    for (const name of HOP_BY_HOP) delete headers[name];
    if (span) headers.traceparent = span.traceparent;
    const hasBody =
      req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    let body: Buffer | http.IncomingMessage | null = null;
    const retry = decision.retry;
    if (hasBody) {
      const len = Number(req.headers['content-length'] ?? Number.NaN);
      body = retry && len <= MAX_REPLAY_BODY ? await readAll(req) : req;
    }
    const deadline = decision.timeoutMs === undefined ? undefined : started + decision.timeoutMs;
    const { hashKey } = decision;

    const pendingRelease = cluster.tryAcquire('request');
    if (!pendingRelease) {
      this.opts.events?.breakerOverflow(cluster.name, 'request');
      res.writeHead(503, { 'content-type': 'text/plain', 'x-sockmesh-flags': 'UO' });
      res.end('upstream overflow: circuit breaker open (max requests)\n');
      record(503, 'UO', cluster);
      return;
    }
    try {
      const end = await runAttempts<Dispatcher.ResponseData>({
        cluster,
        hashKey,
        retry,
        replayable: () => body === null || Buffer.isBuffer(body),
        deadline,
        admit: (ep) => this.admit(ctx, ep, headers, view.method, view.path),
        attempt: async (ep, budget) => {
          try {
            const up = await this.pool(ctx, ep, cluster.connectTimeoutMs).request({
              method: view.method as 'GET',
              path: view.path,
              headers,
              body,
              ...(budget === undefined ? {} : { signal: new DeadlineSignal(Math.max(1, Math.ceil(budget))) }),
              // The route's stream idle timeout: no byte from upstream for that long ends the request.
              ...(decision.idleTimeoutMs
                ? { headersTimeout: decision.idleTimeoutMs, bodyTimeout: decision.idleTimeoutMs }
                : {}),
            });
            return { kind: 'response', status: up.statusCode, response: up };
          } catch (err) {
            this.log.debug('upstream attempt failed', { cluster: cluster.name, endpoint: ep.key, err });
            return failure(err);
          }
        },
        discard: (up) => {
          up.body.dump().catch(() => {});
        },
        retryOverflow: () => this.opts.events?.breakerOverflow(cluster.name, 'retry'),
      });
      if (end.kind === 'response') {
        const up = end.response;
        const out: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(up.headers))
          if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
        if (end.flag !== '-') out['x-sockmesh-flags'] = end.flag;
        res.writeHead(up.statusCode, out);
        up.body.on('error', () => res.destroy());
        up.body.pipe(res);
        await new Promise<void>((resolve) => res.once('close', resolve));
        end.untrack();
        record(up.statusCode, end.flag, cluster, end.ep, end.attempts);
        return;
      }
      if (end.kind === 'denied') {
        res.writeHead(403, { 'content-type': 'text/plain', 'x-sockmesh-flags': 'UAEX' });
        res.end(denial(end.policy));
        record(403, 'UAEX', cluster, end.ep, end.attempts);
        return;
      }
      const status = end.flag === 'UT' ? 504 : 503;
      if (!res.headersSent) {
        res.writeHead(status, { 'content-type': 'text/plain', 'x-sockmesh-flags': end.flag });
        res.end(failureBody(end.flag));
      } else res.destroy();
      record(status, end.flag, cluster, end.ep, end.attempts);
    } finally {
      pendingRelease();
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

function readAll(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
