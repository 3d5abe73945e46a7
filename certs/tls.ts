/**
 * TLS 1.3-only mutual TLS with SPIFFE identities. OpenSSL does the path validation
 * against the trust bundle; verifyPeer then applies the SPIFFE leaf rules and the
 * expected-identity check. Rotation swaps the server's secure context for new
 * handshakes; established connections keep the context they were made with.
 */
import type { PeerCertificate, TLSSocket } from 'node:tls';
import * as tls from 'node:tls';
import { SockmeshError } from '../lib/errors.js';
import type { SvidSource } from './source.js';
import { bundlePem, svidTlsMaterial, type TrustBundle, type X509Svid } from './svid.js';
import { type VerifyResult, verifyPeer } from './verify.js';

/** Secure-context options for an SVID: chain PEM, key, CA bundle PEM, TLS 1.3 only. */
export function svidSecureContextOptions(svid: X509Svid): tls.SecureContextOptions {
  const m = svidTlsMaterial(svid);
  return { cert: m.cert, key: m.key, ca: m.ca, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' };
}

/** The peer's chain as DER, leaf first, from a detailed PeerCertificate (stops at the self-signed root). */
export function chainFromPeerCertificate(cert: tls.DetailedPeerCertificate | PeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  let c: tls.DetailedPeerCertificate | undefined = cert as tls.DetailedPeerCertificate;
  while (c?.raw && out.length < 16) {
    if (out.some((d) => d.equals(c!.raw))) break;
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/** Verifies the peer of an established TLS socket against `bundles`. */
export function verifyTlsPeer(
  socket: TLSSocket,
  bundles: TrustBundle | readonly TrustBundle[],
  expectedSpiffeId?: string,
): VerifyResult {
  const chain = chainFromPeerCertificate(socket.getPeerCertificate(true));
  return verifyPeer(chain, bundles, expectedSpiffeId === undefined ? {} : { expectedSpiffeId });
}

function requireSvid(source: SvidSource): X509Svid {
  const svid = source.current();
  if (!svid) {
    throw new SockmeshError('SOCKMESH_E_SVID', 'no valid SVID to present (not fetched yet, or expired)', {
      hint: 'wait for the rotator to start, and check the CA / Workload API it renews from',
    });
  }
  return svid;
}

export interface MtlsServerOptions {
  /** Where the server's SVID comes from (SvidRotator, WorkloadApiSvidSource). */
  rotator: SvidSource;
  /** Extra bundles (federated trust domains) besides the SVID's own. */
  federatedBundles?: readonly TrustBundle[];
  /** Decide on an authenticated peer; return false to close the connection. */
  authorize?: (spiffeId: string, socket: TLSSocket) => boolean;
  /** Called for each authenticated, authorized connection. */
  onConnection: (socket: TLSSocket, peerSpiffeId: string) => void;
  /** Called when a handshake or SPIFFE check refuses a peer. */
  onRefused?: (reason: string, code: string) => void;
}

/**
 * A TLS server that requires a client SVID. Follows the rotator: each new SVID
 * becomes the context for new handshakes; with no valid SVID it refuses handshakes.
 */
export function createMtlsServer(opts: MtlsServerOptions): tls.Server {
  const first = requireSvid(opts.rotator);
  const server = tls.createServer({
    ...svidSecureContextOptions(first),
    requestCert: true,
    rejectUnauthorized: true,
  });
  const bundles = (): TrustBundle[] => {
    const svid = opts.rotator.current();
    return [...(svid ? [svid.bundle] : []), ...(opts.federatedBundles ?? [])];
  };
  const unsubscribe = opts.rotator.subscribe((svid) => {
    // Without a valid SVID the context holds no certificate, so handshakes fail instead of showing an expired one.
    server.setSecureContext(
      svid ? svidSecureContextOptions(svid) : { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' },
    );
  });
  server.on('close', unsubscribe);
  server.on('tlsClientError', (err) => opts.onRefused?.(err.message, 'handshake'));
  server.on('secureConnection', (socket: TLSSocket) => {
    if (!opts.rotator.current()) {
      opts.onRefused?.('this server has no valid SVID', 'no-svid');
      socket.destroy();
      return;
    }
    const res = verifyTlsPeer(socket, bundles());
    if (!res.ok) {
      opts.onRefused?.(res.reason, res.code);
      socket.destroy();
      return;
    }
    if (opts.authorize && !opts.authorize(res.spiffeId, socket)) {
      opts.onRefused?.(`peer '${res.spiffeId}' is not authorized`, 'unauthorized');
      socket.destroy();
      return;
    }
    opts.onConnection(socket, res.spiffeId);
  });
  return server;
}

export interface MtlsConnectOptions {
  host: string;
  port: number;
  /** The client's identity: a source (its current SVID is used) or a fixed SVID. */
  identity: SvidSource | X509Svid;
  /** The server must present exactly this SPIFFE ID. */
  expectedServerId: string;
  federatedBundles?: readonly TrustBundle[];
  servername?: string;
}

/** Opens a TLS 1.3 mTLS connection that fails unless the server proves `expectedServerId`. */
export function mtlsConnect(opts: MtlsConnectOptions): TLSSocket {
  const svid = 'subscribe' in opts.identity ? requireSvid(opts.identity) : opts.identity;
  const bundles = [svid.bundle, ...(opts.federatedBundles ?? [])];
  return tls.connect({
    ...svidSecureContextOptions(svid),
    ca: bundles.map(bundlePem),
    host: opts.host,
    port: opts.port,
    ...(opts.servername ? { servername: opts.servername } : {}),
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      const res = verifyPeer(chainFromPeerCertificate(cert), bundles, {
        expectedSpiffeId: opts.expectedServerId,
      });
      if (res.ok) return undefined;
      const err = new Error(`server identity refused (${res.code}): ${res.reason}`) as Error & {
        code: string;
      };
      err.code = `SPIFFE_${res.code.toUpperCase().replace(/-/g, '_')}`;
      return err;
    },
  });
}
