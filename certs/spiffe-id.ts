/**
 * SPIFFE ID parsing and validation (SPIFFE-ID.md, sections 2.1-2.3). Pure functions, no I/O.
 * A malformed ID is never "fixed up": it is refused with the rule it broke.
 */
import { SockmeshError } from '../lib/errors.js';

export const SPIFFE_SCHEME = 'spiffe://';
/** Implementations must accept IDs up to 2048 bytes and should not generate longer ones. */
export const MAX_SPIFFE_ID_LENGTH = 2048;
/** RFC 3986 limits the host component (our trust domain) to 255 bytes. */
export const MAX_TRUST_DOMAIN_LENGTH = 255;

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

export interface SpiffeId {
  readonly trustDomain: string;
  /** Empty for the trust domain's own ID, otherwise starts with `/`. */
  readonly path: string;
  /** The canonical `spiffe://<td><path>` string. */
  readonly uri: string;
}

export type SpiffeIdCheck = { ok: true; id: SpiffeId } | { ok: false; reason: string };

/** Returns why `td` is not a valid trust domain name, or null when it is valid. */
export function trustDomainProblem(td: string): string | null {
  if (td.length === 0) return 'trust domain is empty';
  if (td.length > MAX_TRUST_DOMAIN_LENGTH)
    return `trust domain is longer than ${MAX_TRUST_DOMAIN_LENGTH} bytes`;
  if (td.includes('@')) return 'trust domain must not contain userinfo (@)';
  if (td.includes(':')) return 'trust domain must not contain a port (:)';
  if (td.includes('%')) return 'trust domain must not contain percent-encoded characters';
  if (td !== td.toLowerCase()) return 'trust domain must be lowercase';
  if (!TRUST_DOMAIN_CHARS.test(td)) return 'trust domain may only contain [a-z0-9._-]';
  return null;
}

/** Returns why `path` is not a valid SPIFFE ID path, or null. The empty path is valid. */
export function pathProblem(path: string): string | null {
  if (path === '') return null;
  if (!path.startsWith('/')) return 'path must start with /';
  if (path.includes('%')) return 'path must not contain percent-encoded characters';
  const segments = path.slice(1).split('/');
  for (const [i, seg] of segments.entries()) {
    if (seg === '')
      return i === segments.length - 1 ? 'path must not end with /' : 'path has an empty segment';
    if (seg === '.' || seg === '..') return `path must not contain the relative segment '${seg}'`;
    if (!SEGMENT_CHARS.test(seg)) return `path segment '${seg}' may only contain [a-zA-Z0-9._-]`;
  }
  return null;
}

/** Validates a SPIFFE ID string and explains the first rule it breaks. */
export function checkSpiffeId(input: string): SpiffeIdCheck {
  if (input.length === 0) return { ok: false, reason: 'SPIFFE ID is empty' };
  if (Buffer.byteLength(input, 'utf8') > MAX_SPIFFE_ID_LENGTH) {
    return { ok: false, reason: `SPIFFE ID is longer than ${MAX_SPIFFE_ID_LENGTH} bytes` };
  }
  if (!input.startsWith(SPIFFE_SCHEME)) {
    return { ok: false, reason: `scheme must be 'spiffe' followed by '://' (got '${input.slice(0, 16)}')` };
  }
  const rest = input.slice(SPIFFE_SCHEME.length);
  if (rest.includes('?')) return { ok: false, reason: 'SPIFFE ID must not contain a query' };
  if (rest.includes('#')) return { ok: false, reason: 'SPIFFE ID must not contain a fragment' };
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) return { ok: false, reason: tdProblem };
  const pProblem = pathProblem(path);
  if (pProblem) return { ok: false, reason: pProblem };
  return { ok: true, id: { trustDomain, path, uri: `${SPIFFE_SCHEME}${trustDomain}${path}` } };
}

/** Parses a SPIFFE ID or throws SOCKMESH_E_SPIFFE_ID naming the broken rule. */
export function parseSpiffeId(input: string): SpiffeId {
  const res = checkSpiffeId(input);
  if (!res.ok) {
    throw new SockmeshError('SOCKMESH_E_SPIFFE_ID', `invalid SPIFFE ID '${input}': ${res.reason}`, {
      hint: 'use spiffe://<trust-domain>/<path>, trust domain [a-z0-9._-], path segments [a-zA-Z0-9._-]',
    });
  }
  return res.id;
}

/** Validates a trust domain name or throws SOCKMESH_E_SPIFFE_ID. Accepts `spiffe://td` too. */
export function parseTrustDomain(input: string): string {
  const td = input.startsWith(SPIFFE_SCHEME) ? input.slice(SPIFFE_SCHEME.length) : input;
  const problem = trustDomainProblem(td);
  if (problem) {
    throw new SockmeshError('SOCKMESH_E_SPIFFE_ID', `invalid trust domain '${input}': ${problem}`, {
      hint: 'a trust domain is a lowercase name such as example.org',
    });
  }
  return td;
}

/** The mesh's workload identity: `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`. */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  for (const [what, value] of [
    ['namespace', namespace],
    ['service account', serviceAccount],
  ] as const) {
    const problem = value.includes('/') ? 'must be a single path segment' : pathProblem(`/${value}`);
    if (problem) {
      throw new SockmeshError(
        'SOCKMESH_E_SPIFFE_ID',
        `invalid ${what} '${value}' for a SPIFFE ID: ${problem}`,
        {
          hint: `a ${what} is one path segment of [a-zA-Z0-9._-]`,
        },
      );
    }
  }
  return parseSpiffeId(`${SPIFFE_SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`);
}

export interface WorkloadRef {
  namespace: string;
  serviceAccount: string;
}

/** Reads namespace and service account back from a `/ns/<ns>/sa/<sa>` ID; null for other shapes. */
export function workloadOf(id: SpiffeId): WorkloadRef | null {
  const m = /^\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id.path);
  if (!m) return null;
  return { namespace: m[1]!, serviceAccount: m[2]! };
}

/** The trust domain's own ID (no path), used in signing certificates. */
export function trustDomainId(trustDomain: string): string {
  return `${SPIFFE_SCHEME}${trustDomain}`;
}
