/**
 * What the inbound side needs to know about the pods of its own node, and the
 * one decision it makes for every connection (and, for HTTP, every request):
 * may this source reach this destination?
 */

export type PortProtocol = 'http' | 'tcp';

export interface LocalWorkload {
  ip: string;
  namespace: string;
  name: string;
  serviceAccount: string;
  spiffeId: string;
  version: string | undefined;
  /** Protocol of a port as the Service declares it (appProtocol or port name); tcp when unknown. */
  protocolOf(port: number): PortProtocol;
}

export interface LocalWorkloads {
  byIp(ip: string): LocalWorkload | undefined;
}

export interface AuthzRequest {
  /** Verified SPIFFE ID of the caller; undefined for plaintext callers. */
  sourcePrincipal: string | undefined;
  sourceNamespace: string | undefined;
  destination: LocalWorkload;
  port: number;
  method?: string;
  path?: string;
}

export type AuthzDecision =
  | { allowed: true; policy?: string }
  | { allowed: false; policy: string; reason: string };

/** Authorization as the inbound side sees it; the RBAC evaluator implements it. */
export interface AuthorizationCheck {
  check(req: AuthzRequest): AuthzDecision;
  /** True when some policy for this destination looks at method or path, so L4 cannot decide alone. */
  needsHttp(destination: LocalWorkload, port: number): boolean;
}

/** Namespace segment of a `spiffe://td/ns/<ns>/sa/<sa>` ID. */
export function namespaceOfPrincipal(principal: string | undefined): string | undefined {
  if (!principal) return undefined;
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(principal);
  return m?.[1];
}

/**
 * The baggage member the sending node proxy puts on the tunnel CONNECT: the
 * protocol it proxied the connection as. The receiving side follows it (a TCP
 * Service sharing a pod port with an HTTP one stays TCP end to end); it never
 * weakens authorization, because a stream taken as TCP is held to the
 * stricter TCP reading of HTTP-only rules (see authz/authorizer.ts).
 */
const PROTOCOL_BAGGAGE_KEY = 'sockmesh.protocol';

/**
 * Said with `http` only: the sending proxy parsed every request on the stream,
 * routed it and wrote its `x-forwarded-client-cert` (replacing the app's), so
 * the destination may relay the stream to the pod as bytes (see admit in
 * inbound/server.ts). A sender that does not say it (an older agent, another
 * HBONE client) gets its requests parsed and the header written here.
 */
const IDENTITY_BAGGAGE = 'sockmesh.xfcc=set';

export function protocolBaggage(protocol: PortProtocol): string {
  const member = `${PROTOCOL_BAGGAGE_KEY}=${protocol}`;
  return protocol === 'http' ? `${member},${IDENTITY_BAGGAGE}` : member;
}

/** True when the sender says it wrote the caller's x-forwarded-client-cert on every request. */
export function senderWroteIdentity(baggage: string | undefined): boolean {
  if (!baggage) return false;
  return baggage.split(',').some((m) => m.split(';')[0]!.replace(/\s/g, '') === IDENTITY_BAGGAGE);
}

/** The sender's protocol from a `baggage` header value; undefined when absent or unknown. */
/** One member of a W3C baggage header (`key=value;props`), undefined when absent. */
function baggageMember(baggage: string, key: string): string | undefined {
  for (const member of baggage.split(',')) {
    const eq = member.indexOf('=');
    if (eq < 0 || member.slice(0, eq).trim() !== key) continue;
    const raw = member
      .slice(eq + 1)
      .split(';')[0]!
      .trim();
    try {
      return decodeURIComponent(raw);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * The calling workload as the sending agent wrote it in the tunnel's baggage
 * (`k8s.namespace.name`, `k8s.workload.name`): only for labels such as kernel
 * TCP health, never for a decision (authorization reads the client certificate).
 */
export function callerFromBaggage(
  baggage: string | undefined,
): { namespace: string; workload: string } | undefined {
  if (!baggage) return undefined;
  const namespace = baggageMember(baggage, 'k8s.namespace.name');
  const workload = baggageMember(baggage, 'k8s.workload.name');
  return namespace && workload ? { namespace, workload } : undefined;
}

export function protocolFromBaggage(baggage: string | undefined): PortProtocol | undefined {
  if (!baggage) return undefined;
  for (const member of baggage.split(',')) {
    const eq = member.indexOf('=');
    if (eq < 0 || member.slice(0, eq).trim() !== PROTOCOL_BAGGAGE_KEY) continue;
    const value = member
      .slice(eq + 1)
      .split(';')[0]!
      .trim();
    return value === 'http' || value === 'tcp' ? value : undefined;
  }
  return undefined;
}

/** Envoy's x-forwarded-client-cert shape, so applications read the caller like they would behind Envoy. */
export function forwardedClientCert(destination: string, source: string): string {
  return `By=${destination};URI=${source}`;
}
