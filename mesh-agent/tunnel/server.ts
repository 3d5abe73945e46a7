import http2, {
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import {
  svidSecureContextOptions,
  type TrustBundle,
  verifyTlsPeer,
  type X509Svid,
} from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import { nullLogger } from '../../lib/log.js';
import { ConnectionDrain } from '../handoff/drain.js';
import { closeOnPrematureResets, closeWhenIdle } from '../io/h2c.js';
import { ignoreError } from '../io/streams.js';
import { identitySni } from './peer.js';

/** What the tunnel learned about one CONNECT before handing it to the inbound side. */
export interface TunnelRequest {
  /** Verified SPIFFE ID of the client certificate. */
  sourcePrincipal: string;
  /** `for=` of the Forwarded header: the original client ip:port, as the source node saw it. */
  forwardedFor: string | undefined;
  destIp: string;
  destPort: number;
  traceparent: string | undefined;
  baggage: string | undefined;
  /** The TLS server name the client asked for: which local workload's certificate it was shown. */
  serverName: string | undefined;
  /** The h2 stream: a Duplex carrying the connection's bytes once answered. */
  stream: ServerHttp2Stream;
}

/** The inbound side decides and serves; the tunnel only authenticates and frames. */
export interface TunnelHandler {
  handle(req: TunnelRequest): void;
}

export interface LocalIdentities {
  /** The SVID the node presents for a local workload, looked up by the client's SNI. */
  svidBySni(sni: string): X509Svid | undefined;
  bundle(): TrustBundle;
}

export interface TunnelEvents {
  /** A handshake or session refused because the client's identity did not verify; `reason` is a closed set. */
  rejected(reason: string): void;
}

export interface TunnelServerOptions {
  identities: LocalIdentities;
  handler: TunnelHandler;
  /** How long a TLS handshake may take before the connection closes (default TUNNEL_HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
  /** How long a session may stay without a CONNECT stream open before it closes (default TUNNEL_IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number;
  events?: TunnelEvents;
  log?: Logger;
}

/** Node's default is 120 s: a peer sending nothing, or a handshake byte now and then, would hold a socket that long. */
export const TUNNEL_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Envoy's idle_timeout default: a peer's idle session is not worth keeping longer (its pool dials again). */
export const TUNNEL_IDLE_TIMEOUT_MS = 3_600_000;
/** Marks the SNI callback's refusal, so the handshake error can be told from the others. */
const UNKNOWN_SERVER_NAME = 'SOCKMESH_E_UNKNOWN_SERVER_NAME';

/** OpenSSL's verdicts on a client certificate, as the X509-SVID verifier names the same faults. */
const VERIFY_ERRORS: Record<string, string> = {
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not-yet-valid',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'untrusted-issuer',
  SELF_SIGNED_CERT_IN_CHAIN: 'untrusted-issuer',
  UNABLE_TO_GET_ISSUER_CERT: 'untrusted-issuer',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'untrusted-issuer',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'untrusted-issuer',
  CERT_SIGNATURE_FAILURE: 'bad-signature',
  CERT_REJECTED: 'untrusted-issuer',
  CERT_UNTRUSTED: 'untrusted-issuer',
  INVALID_PURPOSE: 'bad-key-usage',
};

/**
 * Why a tunnel handshake failed, as a closed set for the rejection counter: Node reports a
 * refused client certificate as a reset with the verdict on the socket (`authorizationError`).
 */
export function handshakeRefusal(
  err: Error & { code?: string },
  socket?: { authorizationError?: unknown },
): string {
  if (err.code === UNKNOWN_SERVER_NAME) return 'unknown-server-name';
  if (err.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'no-client-certificate';
  const verdict = socket?.authorizationError;
  if (typeof verdict === 'string') return VERIFY_ERRORS[verdict] ?? 'bad-certificate';
  if (err.code === 'ERR_SSL_UNSUPPORTED_PROTOCOL' || err.code === 'ERR_SSL_NO_APPLICATION_PROTOCOL')
    return 'tls-version-or-alpn';
  return 'handshake-failed';
}

/**
 * HBONE-style inbound tunnel: HTTP/2 CONNECT over mutual TLS 1.3. The client
 * must present an SVID from the trust bundle; the server answers with the SVID
 * of the workload the client asked for by SNI.
 */
export class TunnelServer {
  private readonly server: Http2SecureServer;
  private readonly contexts = new Map<string, { serial: string; ctx: SecureContext }>();
  private readonly peers = new WeakMap<object, string>();
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly drainer = new ConnectionDrain();
  private readonly log: Logger;

  constructor(private readonly opts: TunnelServerOptions) {
    this.log = opts.log ?? nullLogger;
    this.server = http2.createSecureServer({
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
      // The default context only serves to fail handshakes that name no local workload.
      SNICallback: (name, cb) => {
        const ctx = this.contextFor(name);
        if (ctx) cb(null, ctx);
        else
          cb(
            Object.assign(new Error(`no local workload answers to server name ${name}`), {
              code: UNKNOWN_SERVER_NAME,
            }),
          );
      },
      settings: { maxConcurrentStreams: 16384, initialWindowSize: 4 << 20 },
      maxSessionMemory: 64,
      handshakeTimeout: opts.handshakeTimeoutMs ?? TUNNEL_HANDSHAKE_TIMEOUT_MS,
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('secureConnection', (socket) => {
      socket.setNoDelay(true);
      // The SPIFFE rules OpenSSL does not know (one URI SAN, a valid SPIFFE ID of this trust
      // domain, a leaf that is no CA) are checked before the client can open a stream.
      if (!this.verify(socket)) socket.destroy();
    });
    this.server.on('session', (session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      this.drainer.h2(session);
      const idle = opts.idleTimeoutMs ?? TUNNEL_IDLE_TIMEOUT_MS;
      closeWhenIdle(session, { headersTimeoutMs: idle, idleTimeoutMs: idle });
      closeOnPrematureResets(session);
      session.setLocalWindowSize(16 << 20);
      session.on('error', () => {});
    });
    this.server.on('tlsClientError', (err, socket) => {
      const reason = handshakeRefusal(err, socket);
      this.opts.events?.rejected(reason);
      this.log.debug('tunnel handshake refused', { reason, err });
    });
  }

  /** `fd`: an already listening socket (an agent's ListenerSet). */
  async listen(port: number, host: string, fd?: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(fd === undefined ? { port, host } : { fd }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  /**
   * Stops accepting and sends GOAWAY on every session: peers open new sessions (to the agent
   * that took the listening socket over) while streams in flight finish. Resolves when all are gone.
   */
  drain(): Promise<void> {
    this.drainer.start();
    return new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Stops listening and ends every session: a peer that keeps its session open cannot hold shutdown hostage. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) =>
      this.server.listening ? this.server.close(() => resolve()) : resolve(),
    );
    for (const s of this.sessions) s.destroy();
    await closed;
  }

  /** Keeps only the TLS contexts of identities held now, with their current serial. */
  prune(): number {
    let dropped = 0;
    for (const [sni, c] of this.contexts) {
      if (this.opts.identities.svidBySni(sni)?.serial === c.serial) continue;
      this.contexts.delete(sni);
      dropped++;
    }
    return dropped;
  }

  /** TLS contexts cached (one per local identity). */
  get contextCount(): number {
    return this.contexts.size;
  }

  private contextFor(sni: string): SecureContext | undefined {
    const svid = this.opts.identities.svidBySni(sni);
    if (!svid) return undefined;
    const cached = this.contexts.get(sni);
    // Rotation: a new serial gets a new context; sessions already up keep theirs.
    if (cached?.serial === svid.serial) return cached.ctx;
    const ctx = createSecureContext(svidSecureContextOptions(svid));
    this.contexts.set(sni, { serial: svid.serial, ctx });
    return ctx;
  }

  /** The client's SPIFFE ID, or undefined (counted and logged) when its SVID breaks a rule. */
  private verify(socket: TLSSocket): string | undefined {
    const verdict = verifyTlsPeer(socket, this.opts.identities.bundle());
    if (verdict.ok) return verdict.spiffeId;
    this.opts.events?.rejected(verdict.code);
    this.log.warn('tunnel peer refused', { code: verdict.code, reason: verdict.reason });
    return undefined;
  }

  private principalOf(stream: ServerHttp2Stream): string | undefined {
    const session = stream.session;
    if (!session) return undefined;
    const known = this.peers.get(session);
    if (known) return known;
    // session.socket is a proxy of the TLS socket, so it is verified (again) once per session.
    const principal = this.verify(session.socket as TLSSocket);
    if (!principal) {
      session.destroy();
      return undefined;
    }
    this.peers.set(session, principal);
    return principal;
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', ignoreError);
    if (headers[':method'] !== 'CONNECT') {
      stream.respond({ ':status': 400 }, { endStream: true });
      return;
    }
    const principal = this.principalOf(stream);
    if (!principal) return;
    const authority = headers[':authority'] ?? '';
    const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(authority);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535) {
      stream.respond({ ':status': 400 }, { endStream: true });
      return;
    }
    const fwd =
      typeof headers.forwarded === 'string' ? /for="?([^;",]+)"?/.exec(headers.forwarded)?.[1] : undefined;
    this.opts.handler.handle({
      sourcePrincipal: principal,
      forwardedFor: fwd,
      destIp: m[1]!,
      destPort: port,
      traceparent: header(headers.traceparent),
      baggage: header(headers.baggage),
      serverName: serverNameOf(stream),
      stream,
    });
  }
}

function serverNameOf(stream: ServerHttp2Stream): string | undefined {
  const name = (stream.session?.socket as TLSSocket | undefined)?.servername;
  return typeof name === 'string' ? name : undefined;
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export { identitySni };
