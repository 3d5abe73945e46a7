/**
 * The L4 part of the mesh's RBAC, compiled for the kernel (bpf-sockops
 * policy.ts): a verdict per (caller identity id, destination policy set, port),
 * so connect4 and sk_lookup decide with hash lookups. Every verdict is the
 * proxy's own Authorizer evaluated on that triple, so the kernel cannot
 * disagree with the proxy on what it decides. Where it cannot decide exactly
 * it leaves the destination out and the proxy decides as before: an ALLOW
 * policy that reads method, path or headers (some requests may pass), a wide
 * port range. A DENY policy that reads HTTP is left out of the kernel's
 * evaluation: it can only deny more, so the kernel then denies less than the
 * proxy, never more, and the proxy still applies it to each request.
 */
import { Authorizer } from './authorizer.js';
import { type Permission, type RbacConfig, type RbacPolicy, readsHttp } from './rbac.js';

/** The identity id of an unauthenticated (plaintext) caller (bpf-sockops PLAINTEXT_IDENTITY). */
export const PLAINTEXT_IDENTITY = 0;
/** A rule for every port its destination's policies do not name (bpf-sockops ANY_PORT). */
export const ANY_PORT = 0;
/** The counter name of denials by "ALLOW policies exist and none matched" (the proxy's name for it too). */
export const DEFAULT_DENY = 'default-deny';
/** The counter name of connections allowed because no ALLOW policy selects the destination (only DENY ones). */
export const NO_ALLOW_POLICY = 'no-allow-policy';
/** A port range wider than this is not expanded into rules: that destination stays with the proxy. */
const MAX_RANGE_PORTS = 256;

export interface KernelPolicyInput {
  /** SPIFFE ID -> identity id (>= 1), as the control plane assigned them. */
  identities: ReadonlyMap<string, number>;
  /** Every meshed destination pod (mesh-wide) with the RBAC configs of its inbound chain. */
  destinations: readonly { ip: string; rbac: readonly RbacConfig[] }[];
  /** This node's meshed pods: cgroup id -> identity id. */
  sources: ReadonlyMap<bigint, number>;
}

export interface CompiledRule {
  source: number;
  destination: number;
  port: number;
  verdict: 'allow' | 'deny';
  policy: number;
}

export interface CompiledKernelPolicy {
  destinations: Map<string, number>;
  sources: ReadonlyMap<bigint, number>;
  rules: CompiledRule[];
  /** Counter index -> policy (`namespace/name` of the AuthorizationPolicy, or DEFAULT_DENY). */
  policies: string[];
  /** Destinations left to the proxy, and why. */
  passed: { ip: string; reason: 'l7-conditions' | 'wide-port-range' }[];
  /** Destinations with no policy at all (everything allowed): no rules needed. */
  open: number;
}

/** `shop/reviews-callers/rule-0` (the RBAC policy name the translator writes) -> `shop/reviews-callers`. */
export function policyOfRule(rbacPolicyName: string): string {
  return rbacPolicyName.replace(/\/rule-\d+$/, '');
}

function policyReadsHttp(p: RbacPolicy): boolean {
  return p.permissions.some(readsHttp) || p.principals.some(readsHttp);
}

/** Ports a permission tree names; undefined when a range is too wide to expand. */
function namedPorts(p: Permission, into: Set<number>): boolean {
  switch (p.kind) {
    case 'destination-port':
      into.add(p.port);
      return true;
    case 'destination-port-range':
      if (p.end - p.start > MAX_RANGE_PORTS) return false;
      for (let port = p.start; port < p.end; port++) into.add(port);
      return true;
    case 'and':
    case 'or':
      return p.rules.every((r) => namedPorts(r, into));
    case 'not':
      return namedPorts(p.rule, into);
    default:
      return true;
  }
}

function namespaceOf(spiffeId: string): string | undefined {
  return /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(spiffeId)?.[1];
}

/** A port no policy of the set names: what every other port decides like. */
function otherPort(named: ReadonlySet<number>): number {
  let p = 1;
  while (named.has(p)) p++;
  return p;
}

export function compileKernelPolicy(input: KernelPolicyInput): CompiledKernelPolicy {
  const policies: string[] = [DEFAULT_DENY];
  const policyIndex = new Map<string, number>([[DEFAULT_DENY, 0]]);
  const indexOf = (name: string) => {
    let i = policyIndex.get(name);
    if (i === undefined) {
      i = policies.length;
      policies.push(name);
      policyIndex.set(name, i);
    }
    return i;
  };
  const callers: { id: number; principal: string | undefined; namespace: string | undefined }[] = [
    { id: PLAINTEXT_IDENTITY, principal: undefined, namespace: undefined },
    ...[...input.identities]
      .sort((a, b) => a[1] - b[1])
      .map(([spiffe, id]) => ({ id, principal: spiffe, namespace: namespaceOf(spiffe) })),
  ];

  const out: CompiledKernelPolicy = {
    destinations: new Map(),
    sources: input.sources,
    rules: [],
    policies,
    passed: [],
    open: 0,
  };
  // Pods of one workload share their RBAC: one policy set, compiled once.
  const sets = new Map<string, number | 'l7-conditions' | 'wide-port-range' | 'open'>();
  for (const d of input.destinations) {
    const deciding = d.rbac.filter((c) => c.action !== 'LOG');
    const text = JSON.stringify(deciding);
    let set = sets.get(text);
    if (set === undefined) {
      set = compileSet(deciding, sets.size + 1, callers, indexOf, out.rules);
      sets.set(text, set);
    }
    if (set === 'open') out.open++;
    else if (typeof set === 'number') out.destinations.set(d.ip, set);
    else out.passed.push({ ip: d.ip, reason: set });
  }
  return out;
}

function compileSet(
  configs: readonly RbacConfig[],
  id: number,
  callers: readonly { id: number; principal: string | undefined; namespace: string | undefined }[],
  indexOf: (policy: string) => number,
  rules: CompiledRule[],
): number | 'l7-conditions' | 'wide-port-range' | 'open' {
  // A DENY policy that reads HTTP can only deny more: without it the kernel denies less, never
  // more, than the proxy. An ALLOW policy that reads HTTP may allow some requests: the proxy decides.
  const l4: RbacConfig[] = [];
  for (const c of configs) {
    if (c.action === 'ALLOW' && c.policies.some((p) => policyReadsHttp(p))) return 'l7-conditions';
    l4.push(c.action === 'DENY' ? { ...c, policies: c.policies.filter((p) => !policyReadsHttp(p)) } : c);
  }
  if (l4.every((c) => c.action !== 'ALLOW' && c.policies.length === 0)) return 'open';
  const named = new Set<number>();
  for (const c of l4) {
    for (const p of c.policies) {
      if (!p.permissions.every((x) => namedPorts(x, named))) return 'wide-port-range';
    }
  }
  const authz = new Authorizer(l4);
  if (authz.isEmpty) return 'open';
  const other = otherPort(named);
  for (const caller of callers) {
    const decide = (port: number) => {
      const d = authz.evaluate({
        sourcePrincipal: caller.principal,
        sourceNamespace: caller.namespace,
        destinationPort: port,
      });
      return {
        verdict: d.allowed ? ('allow' as const) : ('deny' as const),
        policy: indexOf(
          d.policy !== undefined ? policyOfRule(d.policy) : d.allowed ? NO_ALLOW_POLICY : DEFAULT_DENY,
        ),
      };
    };
    const base = decide(other);
    rules.push({ source: caller.id, destination: id, port: ANY_PORT, ...base });
    for (const port of named) {
      if (port === 0) continue;
      const v = decide(port);
      if (v.verdict !== base.verdict || v.policy !== base.policy)
        rules.push({ source: caller.id, destination: id, port, ...v });
    }
  }
  return id;
}
