/**
 * Seeded AuthorizationPolicy tables for the kernel-policy tests: policies as
 * users write them, translated to RBAC by the control plane's own translator
 * and parsed back by the agent's own parser, so the kernel and the proxy are
 * compared on exactly what an agent receives.
 */
import { parseRbacFilter, type RbacConfig } from '../../mesh-agent/authz/index.js';
import type { AuthorizationPolicy, MeshModel, Workload } from '../../xds/model/types.js';
import { rbacFilters } from '../../xds/translate/rbac.js';

export const TRUST_DOMAIN = 'cluster.local';
export const POLICY_NAMESPACE = 'dst';
/** Ports policies name; OTHER_PORT is one they never name. */
export const NAMED_PORTS = [80, 443, 8080, 9090] as const;
export const OTHER_PORT = 7000;

export interface Identity {
  namespace: string;
  serviceAccount: string;
  spiffeId: string;
}

export function identity(namespace: string, serviceAccount: string): Identity {
  return {
    namespace,
    serviceAccount,
    spiffeId: `spiffe://${TRUST_DOMAIN}/ns/${namespace}/sa/${serviceAccount}`,
  };
}

export interface GeneratedTable {
  /** Destination set name (`app` label) -> its RBAC as the inbound chain carries it. */
  sets: Map<string, RbacConfig[]>;
  /** Sets some policy of which reads method or path. */
  l7: Set<string>;
  /** Sets some ALLOW policy of which reads method or path: the kernel must never deny there. */
  l7Allow: Set<string>;
  policies: AuthorizationPolicy[];
}

function pick<T>(rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)]!;
}

function some<T>(rand: () => number, xs: readonly T[], max: number): T[] {
  const n = 1 + Math.floor(rand() * max);
  return [...new Set(Array.from({ length: n }, () => pick(rand, xs)))];
}

/** `setCount` destination workloads (app=d0..), each selected by 0-3 random ALLOW/DENY policies. */
export function generateTable(
  rand: () => number,
  identities: readonly Identity[],
  setCount: number,
): GeneratedTable {
  const namespaces = [...new Set(identities.map((i) => i.namespace))];
  const policies: AuthorizationPolicy[] = [];
  const sourceOf = () => {
    const r = rand();
    if (r < 0.35) return { principals: some(rand, identities, 2).map((i) => i.spiffeId), namespaces: [] };
    if (r < 0.6) return { principals: [], namespaces: some(rand, namespaces, 2) };
    if (r < 0.7)
      return { principals: [`spiffe://${TRUST_DOMAIN}/ns/${pick(rand, namespaces)}/*`], namespaces: [] };
    if (r < 0.78) return { principals: ['*'], namespaces: [] };
    if (r < 0.86) return { principals: [`*/sa/${pick(rand, identities).serviceAccount}`], namespaces: [] };
    return {
      principals: [pick(rand, identities).spiffeId],
      namespaces: [pick(rand, namespaces)],
    };
  };
  const l7 = new Set<string>();
  const l7Allow = new Set<string>();
  for (let s = 0; s < setCount; s++) {
    const app = `d${s}`;
    const count = Math.floor(rand() * 4);
    for (let p = 0; p < count; p++) {
      const readsHttp = rand() < 0.12;
      if (readsHttp) l7.add(app);
      const rules = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => ({
        from: rand() < 0.15 ? [] : [sourceOf()],
        to:
          rand() < 0.4 && !readsHttp
            ? []
            : [
                {
                  ports: rand() < 0.3 && readsHttp ? [] : some(rand, NAMED_PORTS, 2),
                  methods: readsHttp ? ['GET'] : [],
                  paths: readsHttp && rand() < 0.5 ? ['/admin/*'] : [],
                },
              ],
      }));
      const action = rand() < 0.35 ? 'DENY' : 'ALLOW';
      if (readsHttp && action === 'ALLOW') l7Allow.add(app);
      policies.push({
        namespace: POLICY_NAMESPACE,
        name: `${app}-p${p}`,
        selector: { app },
        targetRef: undefined,
        action,
        rules,
      });
    }
  }
  const model = {
    trustDomain: TRUST_DOMAIN,
    services: new Map(),
    authorizationPolicies: policies,
  } as unknown as MeshModel;
  const sets = new Map<string, RbacConfig[]>();
  for (let s = 0; s < setCount; s++) {
    const app = `d${s}`;
    const w = { namespace: POLICY_NAMESPACE, name: app, labels: { app } } as unknown as Workload;
    const configs = rbacFilters(model, w, `inbound_${app}_`)
      .map((f, i) => parseRbacFilter((f as { typed_config: unknown }).typed_config, `${app}[${i}]`))
      .filter((c): c is RbacConfig => c !== undefined);
    sets.set(app, configs);
  }
  return { sets, l7, l7Allow, policies };
}

/** Requests an HTTP caller could send on a connection: the proxy must deny every one for the kernel to deny. */
export const HTTP_PROBES = ['GET /', 'GET /admin/x', 'POST /', 'DELETE /admin/y'].map((r) => {
  const [method, path] = r.split(' ') as [string, string];
  return { method, path, headers: { ':method': method, ':path': path } };
});

/** True when the proxy denies this caller on this port whatever it sends: TCP, or any probe request. */
export function proxyDeniesAll(
  authz: { evaluate(r: object): { allowed: boolean } },
  caller: { principal: string | undefined; namespace: string | undefined },
  port: number,
): boolean {
  const base = {
    sourcePrincipal: caller.principal,
    sourceNamespace: caller.namespace,
    destinationPort: port,
  };
  if (authz.evaluate(base).allowed) return false;
  return HTTP_PROBES.every((p) => !authz.evaluate({ ...base, ...p }).allowed);
}

/** The RBAC without its DENY policies that read HTTP: what the kernel decides by. */
export function withoutHttpDenies(rbac: readonly RbacConfig[]): RbacConfig[] {
  const http = (p: unknown) => /"kind":"(header|url-path)"/.test(JSON.stringify(p));
  return rbac.map((c) => (c.action === 'DENY' ? { ...c, policies: c.policies.filter((p) => !http(p)) } : c));
}
