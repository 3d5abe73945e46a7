/**
 * Inbound authorization from RBAC configs, layered the way Envoy chains a DENY
 * RBAC filter before an ALLOW one (Istio's model): any matching DENY policy
 * denies; then, if any ALLOW config exists, some ALLOW policy must match;
 * with no ALLOW config at all the connection is allowed. An ALLOW config with
 * no policies therefore denies everything ("allow nothing").
 */
import { matchHeader } from '../routing/select.js';
import { matchString, type StringMatcher } from '../routing/string-match.js';
import type { HeaderMatcher, HttpRequest } from '../routing/types.js';
import { type Permission, type Principal, parseRbacFilter, type RbacConfig } from './rbac.js';

export interface AuthzRequest {
  /** The peer's SPIFFE ID from its verified certificate; undefined for plaintext. */
  sourcePrincipal: string | undefined;
  sourceNamespace: string | undefined;
  destinationPort: number;
  /** HTTP only: absent for TCP (method, path and headers all absent = the stream is TCP). */
  method?: string | undefined;
  /** HTTP :path, query string included. */
  path?: string | undefined;
  /** HTTP request headers, lowercase names. */
  headers?: Readonly<Record<string, string | readonly string[] | undefined>> | undefined;
  authority?: string | undefined;
}

export type AuthzDecision =
  | { allowed: true; reason: 'no-policies' | 'allowed-by-policy'; policy: string | undefined }
  | { allowed: false; reason: 'denied-by-policy' | 'no-allow-match'; policy: string | undefined };

function pathOnly(p: string): string {
  const q = p.search(/[?#]/);
  return q === -1 ? p : p.slice(0, q);
}

function asHttp(req: AuthzRequest): HttpRequest | undefined {
  if (req.method === undefined && req.path === undefined && req.headers === undefined) return undefined;
  return {
    authority: req.authority ?? '',
    path: req.path ?? '',
    method: req.method ?? '',
    headers: req.headers ?? {},
  };
}

/**
 * How a policy is read. On HTTP every condition is checked. On a TCP stream
 * method, path and headers do not exist, and Istio's rule applies rather than
 * Envoy's "absent header": an ALLOW rule that needs an HTTP condition never
 * matches, a DENY rule matches as if its HTTP conditions were removed. So a
 * stream treated as TCP (the sender's choice) is never a way around a policy.
 * On HTTP the mode is the request itself, as route matching sees it.
 */
type Mode = HttpRequest | 'tcp-allow' | 'tcp-deny';

/**
 * The value an HTTP-only condition takes on TCP: the one least favourable to
 * the caller, given how many `not`s are above it (`positive` = an even number).
 */
function httpOnly(mode: 'tcp-allow' | 'tcp-deny', positive: boolean): boolean {
  return mode === 'tcp-deny' ? positive : !positive;
}

/** A header or URL path condition: checked against the request on HTTP, read the TCP way otherwise. */
function httpCondition(
  c: { kind: 'header'; matcher: HeaderMatcher } | { kind: 'url-path'; matcher: StringMatcher },
  req: AuthzRequest,
  mode: Mode,
  positive: boolean,
): boolean {
  if (typeof mode !== 'object') return httpOnly(mode, positive);
  if (c.kind === 'header') return matchHeader(c.matcher, mode);
  return req.path !== undefined && matchString(c.matcher, pathOnly(req.path));
}

function permissionMatches(p: Permission, req: AuthzRequest, mode: Mode, positive = true): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'and':
      return p.rules.every((r) => permissionMatches(r, req, mode, positive));
    case 'or':
      return p.rules.some((r) => permissionMatches(r, req, mode, positive));
    case 'not':
      return !permissionMatches(p.rule, req, mode, !positive);
    case 'destination-port':
      return req.destinationPort === p.port;
    case 'destination-port-range':
      return req.destinationPort >= p.start && req.destinationPort < p.end;
    case 'header':
    case 'url-path':
      return httpCondition(p, req, mode, positive);
  }
}

function principalMatches(p: Principal, req: AuthzRequest, mode: Mode, positive = true): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'and':
      return p.ids.every((i) => principalMatches(i, req, mode, positive));
    case 'or':
      return p.ids.some((i) => principalMatches(i, req, mode, positive));
    case 'not':
      return !principalMatches(p.id, req, mode, !positive);
    case 'authenticated':
      if (req.sourcePrincipal === undefined) return false;
      return p.principalName === undefined || matchString(p.principalName, req.sourcePrincipal);
    case 'metadata':
      return req.sourceNamespace !== undefined && matchString(p.matcher, req.sourceNamespace);
    case 'header':
    case 'url-path':
      return httpCondition(p, req, mode, positive);
  }
}

/** The first policy (by name, within config order) whose permissions and principals both match. */
function firstMatch(configs: readonly RbacConfig[], req: AuthzRequest, mode: Mode): string | undefined {
  for (const c of configs) {
    for (const pol of c.policies) {
      if (
        pol.permissions.some((p) => permissionMatches(p, req, mode)) &&
        pol.principals.some((p) => principalMatches(p, req, mode))
      ) {
        return pol.name;
      }
    }
  }
  return undefined;
}

export class Authorizer {
  private readonly deny: RbacConfig[];
  private readonly allow: RbacConfig[];

  constructor(configs: readonly RbacConfig[]) {
    this.deny = configs.filter((c) => c.action === 'DENY');
    this.allow = configs.filter((c) => c.action === 'ALLOW');
  }

  /** Parses RBAC filter configs (or bare RBAC messages) off the wire; filters without rules add nothing. */
  static fromWire(raw: readonly unknown[], path = 'RBAC'): Authorizer {
    const configs: RbacConfig[] = [];
    raw.forEach((r, i) => {
      const c = parseRbacFilter(r, `${path}[${i}]`);
      if (c) configs.push(c);
    });
    return new Authorizer(configs);
  }

  /** True when no policy applies at all (every request is allowed). */
  get isEmpty(): boolean {
    return this.deny.length === 0 && this.allow.length === 0;
  }

  evaluate(req: AuthzRequest): AuthzDecision {
    // Built once per evaluation, not per condition.
    const http = asHttp(req);
    const denied = firstMatch(this.deny, req, http ?? 'tcp-deny');
    if (denied !== undefined) return { allowed: false, reason: 'denied-by-policy', policy: denied };
    if (this.allow.length === 0) return { allowed: true, reason: 'no-policies', policy: undefined };
    const allowed = firstMatch(this.allow, req, http ?? 'tcp-allow');
    if (allowed !== undefined) return { allowed: true, reason: 'allowed-by-policy', policy: allowed };
    return { allowed: false, reason: 'no-allow-match', policy: undefined };
  }
}

export const ALLOW_ALL = new Authorizer([]);
