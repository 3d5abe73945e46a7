import { createHash } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { TrustBundle } from '../../certs/svid.js';
import { type VerifyResult, verifyPeer } from '../../certs/verify.js';

/**
 * The server name a tunnel client sends to pick which workload certificate the
 * destination node presents. A SPIFFE ID is no hostname, so it travels hashed;
 * the server maps the hash back to the local workload it serves.
 */
export function identitySni(spiffeId: string): string {
  return `${createHash('sha256').update(spiffeId).digest('hex').slice(0, 40)}.svid.sockmesh.internal`;
}

/** Leaf-first DER chain of what the peer presented, as far as it sent it. */
export function peerChainDer(cert: PeerCertificate | null | undefined): Buffer[] {
  const out: Buffer[] = [];
  let cur = cert as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | null | undefined;
  const seen = new Set<string>();
  while (cur?.raw && !seen.has(cur.fingerprint256)) {
    seen.add(cur.fingerprint256);
    out.push(cur.raw);
    if (!cur.issuerCertificate || cur.issuerCertificate === cur) break;
    cur = cur.issuerCertificate as PeerCertificate & { issuerCertificate?: PeerCertificate };
  }
  return out;
}

/** SPIFFE verification of the peer of an established TLS socket. */
export function verifyTlsPeer(
  socket: TLSSocket,
  bundle: TrustBundle,
  expectedSpiffeId?: string,
): VerifyResult {
  const chain = peerChainDer(socket.getPeerCertificate(true));
  return verifyPeer(chain, bundle, expectedSpiffeId === undefined ? {} : { expectedSpiffeId });
}
