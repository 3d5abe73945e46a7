import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import tls from 'node:tls';
import type { TcpTagger, WorkloadRef } from '../../bpf-sockops/index.js';
import {
  chainFromPeerCertificate,
  svidSecureContextOptions,
  verifyPeer,
  type X509Svid,
} from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import { nullLogger } from '../../lib/log.js';
import { ignoreError } from '../io/streams.js';
import { identitySni } from './peer.js';

export interface TunnelTarget {
  /** The SVID the source workload is represented by (client certificate). */
  source: X509Svid;
  /** The destination node's tunnel listener, `ip:port`. */
  nodeAddress: string;
  /** What the destination must prove to be (from the endpoint's metadata). */
  expectedServerId: string;
  /** The destination pod `ip:port` (`:authority` of the CONNECT). */
  authority: string;
  /** Original client ip:port, carried as `forwarded: for=`. */
  forwardedFor?: string;
  traceparent?: string;
  baggage?: string;
  /** How long the TLS + h2 handshake and the CONNECT answer may take. */
  connectTimeoutMs?: number;
  /** The workloads this stream is for: a new session's TCP health is attributed to them (kernel TCP health). */
  pair?: { source: WorkloadRef; destination: WorkloadRef | undefined };
}

export class TunnelError extends Error {
  constructor(
    message: string,
    /** `connect` (no session), `refused` (non-200 answer), `reset`, `timeout`. */
    readonly kind: 'connect' | 'refused' | 'reset' | 'timeout',
    readonly status?: number,
    /** The authorization policy the far side named when it refused (403). */
    readonly policy?: string,
  ) {
    super(message);
    this.name = 'TunnelError';
  }
}

interface PooledSession {
  session: ClientHttp2Session;
  ready: Promise<ClientHttp2Session>;
  source: string;
  sourceSerial: string;
}

/**
 * HTTP/2 CONNECT tunnels over mTLS, one multiplexed session per (source
 * identity, destination node, destination identity). A rotated source SVID
 * opens a new session; the old one drains its streams and closes.
 */
export class TunnelPool {
  private readonly sessions = new Map<string, PooledSession>();
  private readonly log: Logger;
  private readonly tcp: TcpTagger | undefined;
  private readonly localIp: string | undefined;

  /**
   * `tcp` attributes each session's TCP connection to the workload pair that
   * opened it (sessions are per identity pair, so its streams are that pair's
   * or another workload's of the same identities); `localIp` is the address
   * sessions leave from, for the dial tag that attributes a failed connect.
   */
  constructor(opts: { log?: Logger; tcp?: TcpTagger; localIp?: string } = {}) {
    this.log = opts.log ?? nullLogger;
    this.tcp = opts.tcp;
    this.localIp = opts.localIp;
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Opens a CONNECT stream; resolves once the far side answered 200. */
  async open(t: TunnelTarget): Promise<ClientHttp2Stream> {
    const timeoutMs = t.connectTimeoutMs ?? 5000;
    const session = await withTimeout(this.sessionFor(t), timeoutMs, 'tunnel session');
    const headers: http2.OutgoingHttpHeaders = { ':method': 'CONNECT', ':authority': t.authority };
    if (t.forwardedFor) headers.forwarded = `for="${t.forwardedFor}"`;
    if (t.traceparent) headers.traceparent = t.traceparent;
    if (t.baggage) headers.baggage = t.baggage;
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: false });
    } catch (err) {
      throw new TunnelError(`tunnel to ${t.nodeAddress} failed: ${(err as Error).message}`, 'connect');
    }
    return await new Promise<ClientHttp2Stream>((resolve, reject) => {
      // Every listener and the timer go once answered: a tunnel stream can live for hours, and
      // these would keep the target's strings, the timer and the promise alive with it.
      const settle = () => {
        clearTimeout(timer);
        stream.off('error', onError);
        stream.off('close', onClose);
        stream.off('response', onResponse);
      };
      const timer = setTimeout(() => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new TunnelError(`CONNECT ${t.authority} via ${t.nodeAddress} timed out`, 'timeout'));
      }, timeoutMs);
      const onError = (err: Error) => {
        settle();
        reject(new TunnelError(`CONNECT ${t.authority} via ${t.nodeAddress} reset: ${err.message}`, 'reset'));
      };
      const onClose = () => {
        settle();
        reject(
          new TunnelError(`CONNECT ${t.authority} via ${t.nodeAddress} closed before an answer`, 'reset'),
        );
      };
      const onResponse = (h: http2.IncomingHttpHeaders) => {
        settle();
        const status = Number(h[':status']);
        if (status === 200) {
          resolve(stream);
          return;
        }
        stream.close();
        reject(
          new TunnelError(
            `CONNECT ${t.authority} via ${t.nodeAddress} answered ${status}`,
            'refused',
            status,
            typeof h['x-sockmesh-policy'] === 'string' ? h['x-sockmesh-policy'] : undefined,
          ),
        );
      };
      // Errors after the answer end in 'close', which the stream's user handles.
      stream.on('error', ignoreError);
      stream.on('error', onError);
      stream.on('close', onClose);
      stream.on('response', onResponse);
    });
  }

  /**
   * Sessions presenting an SVID that is no longer the source's current one (rotated, or
   * the identity is gone) close once their streams are done; new opens use a new session.
   */
  prune(currentSerial: (spiffeId: string) => string | undefined): number {
    let dropped = 0;
    for (const [key, s] of this.sessions) {
      if (currentSerial(s.source) === s.sourceSerial) continue;
      this.sessions.delete(key);
      dropped++;
      // One still in its handshake closes once the opens waiting for it have made their streams.
      s.ready.then(
        () => setImmediate(() => s.session.close()),
        () => {},
      );
    }
    return dropped;
  }

  close(): void {
    for (const s of this.sessions.values()) s.session.close();
    this.sessions.clear();
  }

  private sessionFor(t: TunnelTarget): Promise<ClientHttp2Session> {
    const key = `${t.source.spiffeId.uri}|${t.nodeAddress}|${t.expectedServerId}`;
    const pooled = this.sessions.get(key);
    if (pooled && !pooled.session.destroyed && !pooled.session.closed) {
      if (pooled.sourceSerial === t.source.serial) return pooled.ready;
      // Rotated: new streams go to a fresh session; the old one drains. One still in its handshake
      // is closed only once the opens waiting for it have made their streams (a macrotask later).
      const old = pooled.session;
      pooled.ready.then(
        () => setImmediate(() => old.close()),
        () => {},
      );
    }
    const fresh = this.connect(t);
    this.sessions.set(key, fresh);
    const drop = () => {
      if (this.sessions.get(key) === fresh) this.sessions.delete(key);
    };
    fresh.session.on('close', drop);
    fresh.session.on('goaway', drop);
    fresh.session.on('error', (err) => {
      drop();
      this.log.debug('tunnel session error', { node: t.nodeAddress, err });
    });
    return fresh.ready;
  }

  private connect(t: TunnelTarget): PooledSession {
    const [host, portStr] = splitHostPort(t.nodeAddress);

    const bundle = t.source.bundle;
    const session = http2.connect(`https://${t.nodeAddress}`, {
      settings: { initialWindowSize: 4 << 20, enablePush: false },
      createConnection: () => {
        const socket = tls.connect({
          host,
          port: Number(portStr),
          servername: identitySni(t.expectedServerId),
          ...svidSecureContextOptions(t.source),
          ALPNProtocols: ['h2'],
          rejectUnauthorized: true,
          checkServerIdentity: (_name, cert) => {
            const verdict = verifyPeer(chainFromPeerCertificate(cert), bundle, {
              expectedSpiffeId: t.expectedServerId,
            });
            return verdict.ok
              ? undefined
              : new Error(`tunnel peer refused (${verdict.code}): ${verdict.reason}`);
          },
        });
        // Small request/response frames must not wait for Nagle and delayed ACKs (~40-200 ms stalls).
        socket.setNoDelay(true);
        if (this.tcp && t.pair) tagSession(this.tcp, this.localIp, socket, host, Number(portStr), t.pair);
        return socket;
      },
    });
    const ready = new Promise<ClientHttp2Session>((resolve, reject) => {
      session.once('connect', () => {
        // The session may have been closed or destroyed during its handshake: an exception
        // thrown from this event callback would take the whole agent down.
        if (session.closed || session.destroyed) {
          reject(new TunnelError(`tunnel to ${t.nodeAddress} closed during its handshake`, 'connect'));
          return;
        }
        try {
          session.setLocalWindowSize(16 << 20);
        } catch (err) {
          reject(new TunnelError(`tunnel to ${t.nodeAddress}: ${(err as Error).message}`, 'connect'));
          return;
        }
        resolve(session);
      });
      session.once('error', (err) =>
        reject(new TunnelError(`tunnel to ${t.nodeAddress}: ${err.message}`, 'connect')),
      );
      session.once('close', () => reject(new TunnelError(`tunnel to ${t.nodeAddress} closed`, 'connect')));
    });
    ready.catch(() => {});
    // Idle sessions must not keep the agent alive or hold sockets forever.
    session.unref();
    return { session, ready, source: t.source.spiffeId.uri, sourceSerial: t.source.serial };
  }
}

/** The TLS connect has not reached the kernel yet (it is issued on the next tick): dial tag now, exact tag once connected. */
function tagSession(
  tcp: TcpTagger,
  localIp: string | undefined,
  socket: tls.TLSSocket,
  host: string,
  port: number,
  pair: { source: WorkloadRef; destination: WorkloadRef | undefined },
): void {
  const tcpPair = { source: pair.source, destination: pair.destination, leg: 'tunnel' as const };
  if (localIp) tcp.dial(localIp, { ip: host, port }, tcpPair);
  socket.once('connect', () => {
    const conn = {
      localIp: socket.localAddress,
      localPort: socket.localPort,
      remoteIp: socket.remoteAddress,
      remotePort: socket.remotePort,
    };
    if (tcp.tag(conn, tcpPair)) socket.once('close', () => tcp.untag(conn));
  });
}

function splitHostPort(addr: string): [string, string] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), addr.slice(i + 1)];
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new TunnelError(`${what} timed out after ${ms} ms`, 'timeout')),
      ms,
    );
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
