/**
 * SPIFFE_ENDPOINT_SOCKET (SPIFFE_Workload_Endpoint.md): `unix:///path`, `unix:/path`
 * or `tcp://<ip>:<port>`, turned into a grpc-js target.
 */
import { isIP } from 'node:net';
import { SockmeshError } from '../../lib/errors.js';

export const ENDPOINT_ENV = 'SPIFFE_ENDPOINT_SOCKET';

function bad(addr: string, why: string): SockmeshError {
  return new SockmeshError('SOCKMESH_E_CONFIG', `invalid Workload API address '${addr}': ${why}`, {
    hint: `use unix:///path/to/agent.sock (or set ${ENDPOINT_ENV})`,
  });
}

/** The grpc-js target for a Workload API address. */
export function endpointTarget(addr: string): string {
  let url: URL;
  try {
    url = new URL(addr);
  } catch {
    throw bad(addr, 'not a URI');
  }
  if (url.search || url.hash) throw bad(addr, 'query and fragment are not allowed');
  if (url.protocol === 'unix:') {
    if (url.username || url.password || url.host) throw bad(addr, 'a unix address has no authority');
    if (!url.pathname.startsWith('/') || url.pathname === '/')
      throw bad(addr, 'a unix address needs an absolute path');
    return `unix://${decodeURIComponent(url.pathname)}`;
  }
  if (url.protocol === 'tcp:') {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (!isIP(host)) throw bad(addr, 'a tcp address must use an IP address');
    if (!url.port) throw bad(addr, 'a tcp address needs a port');
    if (url.pathname && url.pathname !== '/') throw bad(addr, 'a tcp address has no path');
    return isIP(host) === 6 ? `ipv6:[${host}]:${url.port}` : `ipv4:${host}:${url.port}`;
  }
  throw bad(addr, `scheme must be unix or tcp (got '${url.protocol.replace(/:$/, '')}')`);
}

/** The address from the explicit value or SPIFFE_ENDPOINT_SOCKET. */
export function resolveEndpoint(explicit?: string): string {
  const addr = explicit ?? process.env[ENDPOINT_ENV];
  if (!addr) {
    throw new SockmeshError('SOCKMESH_E_CONFIG', 'no Workload API address given', {
      hint: `pass --socket unix:///path or set ${ENDPOINT_ENV}`,
    });
  }
  return addr;
}
