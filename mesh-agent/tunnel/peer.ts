import { createHash } from 'node:crypto';

/**
 * The server name a tunnel client sends to pick which workload certificate the
 * destination node presents. A SPIFFE ID is no hostname, so it travels hashed;
 * the server maps the hash back to the local workload it serves.
 */
export function identitySni(spiffeId: string): string {
  return `${createHash('sha256').update(spiffeId).digest('hex').slice(0, 40)}.svid.sockmesh.internal`;
}
