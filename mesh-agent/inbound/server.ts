import type http from 'node:http';
import { constants as h2constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import { type Duplex, duplexPair } from 'node:stream';
import { Pool } from 'undici';
import type { TcpTagger } from '../../bpf-sockops/index.js';
import type { Logger } from '../../lib/log.js';
import { nullLogger } from '../../lib/log.js';
import { ConnectionDrain } from '../handoff/drain.js';
import { forwardH2, H2cSessions, serveH2c, sniffH2c, upstreamHeaders } from '../io/h2c.js';
import { endToEnd } from '../io/headers.js';
import { type HttpLimits, http1Server, httpLimits } from '../io/http-limits.js';
import { asPlainDuplex, connectTcp, splice } from '../io/streams.js';
import { detectProtocol } from '../outbound/detect.js';
import { identitySni } from '../tunnel/peer.js';
import type { TunnelHandler, TunnelRequest } from '../tunnel/server.js';
import { relayHttp1 } from './http1-relay.js';
import {
  type AuthorizationCheck,
  type AuthzDecision,
  type AuthzRequest,
  callerFromBaggage,
  forwardedClientCert,
  type LocalWorkload,
  type LocalWorkloads,
  namespaceOfPrincipal,
  type PortProtocol,
  protocolFromBaggage,
  senderWroteIdentity,
} from './policy.js';

export interface InboundEvents {
  denied(ev: {
    source: string | undefined;
    destination: LocalWorkload;
    port: number;
    policy: string;
    reason: string;
    method?: string;
    path?: string;
  }): void;
  /** A claimed identity refused or replaced (a forged header, a server name for another workload). */
  identityRejected?(ev: { listener: 'tunnel' | 'inbound'; reason: string }): void;
  request?(ev: {
    source: string | undefined;
    destination: LocalWorkload;
    port: number;
    status: number;
    durationMs: number;
    method: string;
  }): void;
}

export interface InboundOptions {
  workloads: LocalWorkloads;
  authz: AuthorizationCheck;
  events?: InboundEvents;
  log?: Logger;
  /** How long connecting to the local pod may take. */
  connectTimeoutMs?: number;
  /** Attributes tunnelled TCP deliveries to workload pairs for kernel TCP health. */
  tcp?: TcpTagger;
  /** Header size, count and timeouts of the HTTP parsed here (defaults: DEFAULT_HTTP_LIMITS). */
  limits?: Partial<HttpLimits>;
  /**
   * Relay HTTP as bytes when the tunnel client says it wrote the caller's identity
   * (`sockmesh.xfcc=set`) and take its `sockmesh.protocol=tcp` unsniffed. Only sound when no
   * workload can hold an SVID of the trust domain (any holder can dial 15008 and say so);
   * default false: the identity the pod reads is always written here from the mTLS peer.
   */
  trustSenderIdentity?: boolean;
}

interface Caller {
  principal: string | undefined;
  destination: LocalWorkload;
  port: number;
  /** The calling workload as the sender names it (tunnel baggage): a telemetry label, never trusted for policy. */
  source?: { namespace: string; workload: string };
}

/**
 * How one admitted connection is carried: `tcp` and `bytes` (HTTP from a trusted sender that
 * wrote the identity itself) are spliced to the pod as bytes, `relay` (HTTP/1.1 no policy here
 * reads) goes through the lean relay (heads rewritten, XFCC from the mTLS peer), `http` is
 * parsed by node:http and authorized per request. A denial names the policy that decided it.
 */
type Admission = 'tcp' | 'bytes' | 'relay' | 'http' | { denied: string };

/**
 * The destination half of the mesh on a node: admits tunnelled connections to
 * its own pods. TCP is authorized once per connection. HTTP from a sending
 * proxy that routed it and wrote the caller's identity is relayed as bytes
 * too, unless a policy on that workload and port reads method, path or
 * headers: then it is parsed and authorized per request (one L7 hop per
 * request, on the caller's node, in the common case).
 */
export class InboundServer implements TunnelHandler {
  private readonly log: Logger;
  private readonly http: http.Server;
  private readonly callers = new WeakMap<Duplex, Caller>();
  private readonly pools = new Map<string, Pool>();
  private readonly h2c = new H2cSessions();
  private readonly drainer = new ConnectionDrain();
  private readonly limits: HttpLimits;
  /** Open TCP streams admitted by policy, re-checked when it changes (ztunnel does the same). */
  private readonly admitted = new Map<object, { caller: Caller; close: () => void; http: boolean }>();
  /** HTTP streams relayed to a pod as bytes since start (`trustSenderIdentity`: not parsed on this node). */
  relayedHttpStreams = 0;
  /** HTTP/1.1 connections through the lean relay since start (heads parsed and rewritten, bodies as bytes). */
  leanRelayedStreams = 0;

  constructor(private readonly opts: InboundOptions) {
    this.log = opts.log ?? nullLogger;
    this.limits = httpLimits(opts.limits);
    this.http = http1Server(this.limits, (req, res) => this.onRequest(req, res));
    this.drainer.http1(this.http);
  }

  /**
   * Asks the clients of the pods' HTTP to reconnect: `Connection: close` on the next response (the
   * parse path and the lean relay; an idle lean-relayed connection is ended), GOAWAY on h2c.
   */
  drain(): void {
    this.drainer.start();
  }

  /** The proxy -> pod leg of a connection to a local pod, for kernel TCP health: untagged when it closes. */
  private tagPodLeg(upstream: net.Socket, source: Caller['source'], destination: LocalWorkload): void {
    const tcp = this.opts.tcp;
    if (!tcp) return;
    const conn = {
      localIp: upstream.localAddress,
      localPort: upstream.localPort,
      remoteIp: upstream.remoteAddress,
      remotePort: upstream.remotePort,
    };
    const pair = {
      source,
      destination: { namespace: destination.namespace, workload: destination.name },
      leg: 'proxy_pod' as const,
    };
    if (tcp.tag(conn, pair)) upstream.once('close', () => tcp.untag(conn));
  }

  handle(req: TunnelRequest): void {
    const { stream } = req;
    const destination = this.opts.workloads.byIp(req.destIp);
    if (!destination) {
      // Never a relay: only pods of this node are reachable through its tunnel.
      stream.respond(
        { ':status': 404, 'x-sockmesh-reason': 'not a workload of this node' },
        { endStream: true },
      );
      return;
    }
    // The client was shown this workload's certificate (the server name picks it): naming
    // another workload is a client that does not check who answers, not a sockmesh agent.
    if (req.serverName !== identitySni(destination.spiffeId)) {
      this.rejected('tunnel', 'sni-mismatch');
      stream.respond(
        { ':status': 421, 'x-sockmesh-reason': 'the TLS server name names another workload' },
        { endStream: true },
      );
      return;
    }
    const source = callerFromBaggage(req.baggage);
    const caller: Caller = {
      principal: req.sourcePrincipal,
      destination,
      port: req.destPort,
      ...(source ? { source } : {}),
    };
    const declared = destination.protocolOf(req.destPort);
    const said = protocolFromBaggage(req.baggage);
    // The sending proxy's choice wins over the port's declaration: another Service may share this
    // pod port. But what the sender says never vouches for identity unless its senders are trusted
    // (trustSenderIdentity): a TCP stream into a port the pod serves HTTP on is sniffed, and HTTP
    // found there is parsed, so the x-forwarded-client-cert the pod reads is written here.
    const trusted = this.opts.trustSenderIdentity === true;
    const sniff = !trusted && said === 'tcp' && declared === 'http';
    const admitted = this.admit(caller, said ?? declared, trusted && senderWroteIdentity(req.baggage));
    if (typeof admitted === 'object') {
      // The policy travels back, so the caller's node can say which one denied (as it does locally).
      stream.respond(
        {
          ':status': 403,
          'x-sockmesh-reason': 'denied by authorization policy',
          'x-sockmesh-policy': admitted.denied,
        },
        { endStream: true },
      );
      return;
    }
    if (admitted === 'http') {
      stream.respond({ ':status': 200 });
      this.serveHttpOrH2c(asPlainDuplex(stream), caller);
      return;
    }
    if (sniff) {
      this.sniffTunnelled(req, caller);
      return;
    }
    const relayed = admitted === 'bytes';
    connectTcp(req.destIp, req.destPort, this.opts.connectTimeoutMs ?? 5000).then(
      (upstream) => {
        // The sender may have given up while the pod was being connected.
        if (stream.destroyed) {
          upstream.destroy();
          return;
        }
        stream.respond({ ':status': 200 });
        this.tagPodLeg(upstream, source, destination);
        if (admitted === 'relay') {
          this.relayOrH2c(stream, upstream, caller, () => stream.close(h2constants.NGHTTP2_CONNECT_ERROR));
          return;
        }
        splice(stream, upstream);
        if (relayed) this.relayedHttpStreams++;
        this.watchTunnelled(caller, stream, upstream, relayed);
      },
      (err) => {
        if (stream.destroyed) return;
        if (!stream.headersSent)
          stream.respond({ ':status': 503, 'x-sockmesh-reason': 'local pod refused' }, { endStream: true });
        else stream.destroy();
        this.log.debug('inbound connect failed', { dest: `${req.destIp}:${req.destPort}`, err });
      },
    );
  }

  /**
   * Denied later (or, relayed HTTP, a policy now reads requests): RST_STREAM with CONNECT_ERROR,
   * which the sending proxy turns into a reset; its client reconnects. A method of its own, so the
   * close callback, which lives as long as the connection, holds these and not the request.
   */
  private watchTunnelled(
    caller: Caller,
    stream: ServerHttp2Stream,
    upstream: net.Socket,
    relayed: boolean,
  ): void {
    this.watch(
      caller,
      [stream, upstream],
      () => {
        stream.close(h2constants.NGHTTP2_CONNECT_ERROR);
        upstream.resetAndDestroy();
      },
      relayed,
    );
  }

  /**
   * A stream the sender carries as TCP into a port the pod serves HTTP on: answered first
   * (the client sends once it has its 200), then its first bytes decide, however late they
   * come (an HTTP server never speaks first, and a client that waits out a timeout must not
   * get its request past unparsed). HTTP is parsed and authorized per request, on top of the
   * TCP admission it already passed; anything else is spliced to the pod as bytes.
   */
  private sniffTunnelled(req: TunnelRequest, caller: Caller): void {
    const { stream } = req;
    stream.respond({ ':status': 200 });
    this.serveSniffed(asPlainDuplex(stream), caller, () => stream.close(h2constants.NGHTTP2_CONNECT_ERROR));
  }

  /**
   * The same for a same-node caller whose proxy carries TCP into a port the pod serves HTTP
   * on: the outbound side splices the app to the returned end, this side reads the other.
   */
  acceptLocalTcp(caller: Caller): Duplex {
    const [near, far] = duplexPair();
    this.serveSniffed(far, caller, () => far.destroy());
    return near;
  }

  /** HTTP found in the first bytes is parsed; anything else is spliced to the pod. `reset` ends conn abruptly. */
  private serveSniffed(conn: Duplex, caller: Caller, reset: () => void): void {
    conn.on('error', () => {});
    // No timeout decides TCP here (a late request would pass unparsed): a client silent that long is closed.
    const silent = setTimeout(() => {
      reset();
      conn.destroy();
    }, this.limits.headersTimeoutMs);
    conn.once('close', () => clearTimeout(silent));
    detectProtocol(conn, undefined, (p) => {
      clearTimeout(silent);
      if (p !== 'tcp') {
        this.serveDetected(conn, caller, p === 'h2c');
        return;
      }
      const { ip } = caller.destination;
      connectTcp(ip, caller.port, this.opts.connectTimeoutMs ?? 5000).then(
        (upstream) => {
          splice(conn, upstream);
          conn.resume();
          this.watch(caller, [conn, upstream], () => {
            reset();
            upstream.resetAndDestroy();
          });
        },
        (err) => {
          reset();
          this.log.debug('inbound connect failed', { dest: `${ip}:${caller.port}`, err });
        },
      );
    });
  }

  /**
   * Plaintext for a permissive pod, taken in the kernel before it reached the
   * pod (bpf-sockops captureInbound): the socket's local end is the pod's
   * ip:port. The caller is unauthenticated, so only policies that admit
   * plaintext let it through; a denied TCP connection is reset.
   */
  handlePlaintext(socket: net.Socket): void {
    // A client's reset is this connection's end, not the agent's: unheard, 'error' would throw.
    socket.on('error', () => {});
    const ip = (socket.localAddress ?? '').replace(/^::ffff:/, '');
    const destination = this.opts.workloads.byIp(ip);
    if (!destination || socket.localPort === undefined) {
      socket.resetAndDestroy();
      return;
    }
    socket.setNoDelay(true);
    const caller: Caller = { principal: undefined, destination, port: socket.localPort };
    const admitted = this.admit(caller, destination.protocolOf(caller.port));
    if (typeof admitted === 'object') {
      socket.resetAndDestroy();
      return;
    }
    if (admitted === 'http') {
      this.serveHttpOrH2c(socket, caller);
      return;
    }
    socket.pause();
    if (admitted === 'relay') {
      connectTcp(destination.ip, caller.port, this.opts.connectTimeoutMs ?? 5000).then(
        (upstream) => {
          if (socket.destroyed) upstream.destroy();
          else this.relayOrH2c(socket, upstream, caller, () => socket.resetAndDestroy());
        },
        (err) => {
          this.log.debug('inbound plaintext connect failed', { dest: `${ip}:${caller.port}`, err });
          socket.resetAndDestroy();
        },
      );
      return;
    }
    connectTcp(destination.ip, caller.port, this.opts.connectTimeoutMs ?? 5000).then(
      (upstream) => {
        splice(socket, upstream);
        this.watch(caller, [socket, upstream], () => {
          socket.resetAndDestroy();
          upstream.resetAndDestroy();
        });
      },
      (err) => {
        this.log.debug('inbound plaintext connect failed', { dest: `${ip}:${caller.port}`, err });
        socket.resetAndDestroy();
      },
    );
  }

  /**
   * Admission of one connection: TCP is authorized here, once. HTTP on a port no policy
   * reads requests on (method, path, headers) is too, and then goes through the lean relay,
   * or as bytes when a trusted sender says it wrote the caller's identity (`identified`);
   * the decision is re-taken for open streams on every policy change (recheck). HTTP on a
   * port a policy reads is parsed and authorized request by request, and so is HTTP of a
   * caller the connection-level check denies: it gets its 403 per request (plaintext too).
   */
  private admit(caller: Caller, protocol: PortProtocol, identified = false): Admission {
    const httpPort = protocol === 'http';
    if (httpPort && this.opts.authz.needsHttp(caller.destination, caller.port)) return 'http';
    if (httpPort && !identified) {
      // Unreported: a denied caller is reported by the parse path, request by request.
      return this.opts.authz.check(this.authzRequest(caller)).allowed ? 'relay' : 'http';
    }
    const verdict = this.authorize(caller);
    if (!verdict.allowed) return { denied: verdict.policy };
    return httpPort ? 'bytes' : 'tcp';
  }

  /**
   * An admitted HTTP port whose requests no policy reads: h2c (prior knowledge) stays on the
   * parse path, HTTP/1.1 goes through the lean relay to `pod`. `reset` ends conn abruptly.
   */
  private relayOrH2c(conn: Duplex, pod: net.Socket, caller: Caller, reset: () => void): void {
    conn.on('error', () => {});
    pod.on('error', () => {});
    pod.setNoDelay(true);
    // Closed before its first byte: the pod's connection goes too.
    const early = () => pod.destroy();
    conn.once('close', early);
    sniffH2c(
      conn,
      (h2c) => {
        conn.off('close', early);
        if (h2c) {
          pod.destroy();
          this.serveDetected(conn, caller, true);
          return;
        }
        this.leanRelayedStreams++;
        const { principal, destination } = caller;
        const relay = relayHttp1(conn, pod, {
          xfcc: principal && forwardedClientCert(destination.spiffeId, principal),
          defaultHost: `${destination.ip}:${caller.port}`,
          limits: this.limits,
          forgedIdentity: () => this.rejected('inbound', 'forged-xfcc'),
          answered: (method, status, durationMs) =>
            this.opts.events?.request?.({
              source: principal,
              destination: caller.destination,
              port: caller.port,
              status,
              durationMs,
              method,
            }),
        });
        // Draining: `connection: close` on its next answer (the parse path's, ConnectionDrain.http1).
        this.drainer.connection(conn, () => relay.drain());
        // Denied later, or a policy now reads this port's requests: closed, its client reconnects.
        this.watch(
          caller,
          [conn, pod],
          () => {
            reset();
            pod.resetAndDestroy();
          },
          true,
        );
      },
      this.limits.headersTimeoutMs,
    );
  }

  /** An admitted HTTP port: h2c (prior knowledge) or HTTP/1.1, told apart by the first bytes. */
  private serveHttpOrH2c(conn: Duplex, caller: Caller): void {
    conn.on('error', () => {});
    sniffH2c(conn, (h2c) => this.serveDetected(conn, caller, h2c), this.limits.headersTimeoutMs);
  }

  private serveDetected(conn: Duplex, caller: Caller, h2c: boolean): void {
    if (h2c)
      serveH2c(
        conn,
        (s, h) => this.onH2Stream(caller, s, h),
        (session) => this.drainer.h2(session),
        this.limits,
      );
    else {
      this.serveHttp(conn, caller);
      conn.resume();
    }
  }

  private rejected(listener: 'tunnel' | 'inbound', reason: string): void {
    this.opts.events?.identityRejected?.({ listener, reason });
  }

  /**
   * Counts a request that arrived with an x-forwarded-client-cert other than the one this
   * side writes (a sockmesh agent on the caller's node writes exactly that one): it is
   * replaced, the pod reads only the identity the mTLS peer proved (none for plaintext).
   */
  private checkClaimedIdentity(claimed: string | string[] | undefined, caller: Caller): void {
    if (claimed === undefined) return;
    const ours = caller.principal && forwardedClientCert(caller.destination.spiffeId, caller.principal);
    if (claimed !== ours) this.rejected('inbound', 'forged-xfcc');
  }

  /** Parses HTTP/1.1 on an already-admitted byte stream (a tunnel stream or a same-node socket). */
  serveHttp(conn: Duplex, caller: Caller): void {
    this.callers.set(conn, caller);
    this.http.emit('connection', conn);
  }

  /**
   * Keeps an admitted TCP connection under policy until one of its ends closes:
   * `recheck` closes it with `close` once policy no longer allows it, or its
   * destination is no longer a meshed pod here. Same-node TCP from the outbound
   * side registers here too.
   */
  watch(caller: Caller, ends: readonly Duplex[], close: () => void, http = false): void {
    const entry = { caller, close, http };
    this.admitted.set(entry, entry);
    // One listener for all ends, 'on' (a connection closes once; a once-wrapper is three objects more each).
    const forget = () => this.admitted.delete(entry);
    for (const e of ends) e.on('close', forget);
  }

  /**
   * Re-authorizes every open TCP connection against the current policy and pods;
   * an HTTP stream relayed as bytes is closed too once a policy of its port reads
   * requests (it cannot be parsed from the middle; its client reconnects and is
   * parsed). Returns how many were closed.
   */
  recheck(): number {
    let closed = 0;
    const verdicts = new Map<string, boolean>();
    const needsL7 = new Map<string, boolean>();
    for (const [key, w] of this.admitted) {
      const c = w.caller;
      const now = this.opts.workloads.byIp(c.destination.ip);
      let allowed = now !== undefined && now.spiffeId === c.destination.spiffeId;
      if (allowed && w.http) {
        const k = `${c.destination.ip}|${c.port}`;
        const l7 = needsL7.get(k) ?? this.opts.authz.needsHttp(now!, c.port);
        needsL7.set(k, l7);
        allowed = !l7;
      }
      if (allowed) {
        c.destination = now!;
        const k = `${c.principal ?? ''}|${c.destination.ip}|${c.port}`;
        allowed = verdicts.get(k) ?? this.authorize(c).allowed;
        verdicts.set(k, allowed);
      }
      if (allowed) continue;
      this.admitted.delete(key);
      w.close();
      closed++;
    }
    if (closed > 0) this.log.info('closed open connections that policy no longer allows', { closed });
    return closed;
  }

  private authzRequest(caller: Caller, method?: string, path?: string): AuthzRequest {
    return {
      sourcePrincipal: caller.principal,
      sourceNamespace: namespaceOfPrincipal(caller.principal),
      destination: caller.destination,
      port: caller.port,
      ...(method === undefined ? {} : { method }),
      ...(path === undefined ? {} : { path }),
    };
  }

  /** Authorizes one connection or request; logs and reports every denial. */
  authorize(caller: Caller, method?: string, path?: string): AuthzDecision {
    const verdict = this.opts.authz.check(this.authzRequest(caller, method, path));
    if (!verdict.allowed) {
      this.log.info('request denied', {
        source: caller.principal ?? 'plaintext',
        destination: `${caller.destination.namespace}/${caller.destination.name}`,
        port: caller.port,
        policy: verdict.policy,
        reason: verdict.reason,
        method,
        path,
      });
      this.opts.events?.denied({
        source: caller.principal,
        destination: caller.destination,
        port: caller.port,
        policy: verdict.policy,
        reason: verdict.reason,
        ...(method === undefined ? {} : { method }),
        ...(path === undefined ? {} : { path }),
      });
    }
    return verdict;
  }

  async close(): Promise<void> {
    this.http.close();
    await Promise.all([...this.pools.values()].map((p) => p.close()));
    this.pools.clear();
    this.h2c.close();
  }

  /** Pools and h2c sessions of pods no longer on this node close: they stay bounded by its pods. */
  prune(): void {
    const here = (key: string) => {
      const addr = key.split('#')[0]!;
      return this.opts.workloads.byIp(addr.slice(0, addr.lastIndexOf(':'))) !== undefined;
    };
    for (const [key, p] of this.pools) {
      if (here(key)) continue;
      this.pools.delete(key);
      p.close().catch(() => {});
    }
    this.h2c.prune(here);
  }

  /**
   * Keep-alive connections to a pod's port. With kernel TCP health on, one pool per calling
   * workload, so each pooled connection's pod leg is measured for the pair it serves.
   */
  private pool(caller: Caller): Pool {
    const { ip } = caller.destination;
    const tcp = this.opts.tcp;
    const source = tcp ? caller.source : undefined;
    const key = `${ip}:${caller.port}${source ? `#${source.namespace}/${source.workload}` : ''}`;
    let p = this.pools.get(key);
    if (!p) {
      const connect = (_o: unknown, cb: (err: Error | null, socket: net.Socket | null) => void) => {
        connectTcp(ip, caller.port, this.opts.connectTimeoutMs ?? 5000).then(
          (socket) => {
            this.tagPodLeg(socket, source, caller.destination);
            cb(null, socket);
          },
          (err: Error) => cb(err, null),
        );
      };
      p = new Pool(`http://${ip}:${caller.port}`, {
        connections: 256,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        ...(tcp ? { connect: connect as never } : {}),
      });
      this.pools.set(key, p);
    }
    return p;
  }

  /** One h2c stream to a local pod: authorized per request, delivered with the caller's identity. */
  private onH2Stream(caller: Caller, stream: ServerHttp2Stream, h: IncomingHttpHeaders): void {
    const started = performance.now();
    const method = String(h[':method'] ?? 'GET');
    const path = String(h[':path'] ?? '/');
    const verdict = this.authorize(caller, method, path.split('?')[0]);
    if (!verdict.allowed) {
      stream.respond({
        ':status': 403,
        'content-type': 'text/plain',
        'x-sockmesh-reason': 'denied by authorization policy',
      });
      stream.end(`RBAC: access denied (${verdict.policy})\n`);
      return;
    }
    this.checkClaimedIdentity(h['x-forwarded-client-cert'], caller);
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(h))
      if (v !== undefined && k !== 'x-forwarded-client-cert') headers[k] = v;
    if (caller.principal)
      headers['x-forwarded-client-cert'] = forwardedClientCert(caller.destination.spiffeId, caller.principal);
    const { ip } = caller.destination;
    const port = caller.port;
    this.h2c
      .get(`${ip}:${port}`, () => connectTcp(ip, port, this.opts.connectTimeoutMs ?? 5000))
      .then(
        async (session) => {
          const authority = String(h[':authority'] ?? `${ip}:${port}`);
          const status = await forwardH2(stream, session, upstreamHeaders(headers, method, path, authority));
          if (status === undefined) return;
          this.opts.events?.request?.({
            source: caller.principal,
            destination: caller.destination,
            port,
            status,
            durationMs: performance.now() - started,
            method,
          });
        },
        () => {
          // Connecting may take seconds: the client may have reset the stream meanwhile.
          if (stream.closed) return;
          stream.respond({ ':status': 503, 'x-sockmesh-reason': 'local pod unavailable' });
          stream.end();
        },
      );
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const started = performance.now();
    const caller = this.callers.get(req.socket as unknown as Duplex);
    if (!caller) {
      res.writeHead(500).end();
      return;
    }
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const verdict = this.authorize(caller, method, path.split('?')[0]);
    if (!verdict.allowed) {
      res.writeHead(403, {
        'content-type': 'text/plain',
        'x-sockmesh-reason': 'denied by authorization policy',
      });
      res.end(`RBAC: access denied (${verdict.policy})\n`);
      this.opts.events?.request?.({
        source: caller.principal,
        destination: caller.destination,
        port: caller.port,
        status: 403,
        durationMs: performance.now() - started,
        method,
      });
      return;
    }
    this.checkClaimedIdentity(req.headers['x-forwarded-client-cert'], caller);
    const headers = endToEnd(req.headers);
    headers.host = req.headers.host ?? `${caller.destination.ip}:${caller.port}`;
    if (caller.principal)
      headers['x-forwarded-client-cert'] = forwardedClientCert(caller.destination.spiffeId, caller.principal);
    const hasBody =
      req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    this.pool(caller)
      .request({ method: method as 'GET', path, headers, body: hasBody ? req : null })
      .then(
        (up) => {
          const out = endToEnd(up.headers);
          res.writeHead(up.statusCode, out);
          up.body.pipe(res);
          up.body.once('end', () =>
            this.opts.events?.request?.({
              source: caller.principal,
              destination: caller.destination,
              port: caller.port,
              status: up.statusCode,
              durationMs: performance.now() - started,
              method,
            }),
          );
        },
        (err: Error) => {
          this.log.debug('inbound upstream failed', { dest: `${caller.destination.ip}:${caller.port}`, err });
          if (!res.headersSent) res.writeHead(503, { 'x-sockmesh-reason': 'local pod unavailable' });
          res.end();
        },
      );
  }
}
