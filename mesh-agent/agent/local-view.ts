import type { AuthzDecision as RbacDecision } from '../authz/authorizer.js';
import { rbacNeedsHttp } from '../inbound/l7-need.js';
import type {
  AuthorizationCheck,
  AuthzDecision,
  AuthzRequest,
  LocalWorkload,
  LocalWorkloads,
  PortProtocol,
} from '../inbound/policy.js';
import type { SourceWorkload, SourceWorkloads } from '../outbound/server.js';
import type { MeshState } from '../state/mesh-state.js';
import { structToPlain } from '../state/wire.js';
import { parseQosClass, type QosClass } from './pod-cgroups.js';

export const INBOUND_LISTENER = 'sockmesh-inbound';

export interface LocalPod extends LocalWorkload, SourceWorkload {
  /** How the pod treats plaintext from outside the mesh (its namespace's `sockmesh.io/mtls`). */
  mtlsMode: 'strict' | 'permissive';
  /** Kubernetes `metadata.uid`, when the pod came from an API server: finds its kubelet cgroup. */
  uid: string | undefined;
  qosClass: QosClass | undefined;
}

type Proto = Record<string, unknown>;

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * This node's meshed pods as the control plane declared them: one filter chain
 * per pod on the inbound listener, its metadata naming pod, namespace, service
 * account and SPIFFE ID. Also which pod ports speak HTTP, from the Services
 * whose HTTP routes lead to them.
 */
export class LocalView implements LocalWorkloads, SourceWorkloads {
  private constructor(
    private readonly pods: ReadonlyMap<string, LocalPod>,
    readonly nodeAddress: string | undefined,
  ) {}

  static empty(): LocalView {
    return new LocalView(new Map(), undefined);
  }

  static build(inboundListener: Proto | undefined, state: MeshState): LocalView {
    const httpPorts = httpEndpoints(state);
    const pods = new Map<string, LocalPod>();
    const chains = Array.isArray(inboundListener?.filter_chains)
      ? (inboundListener.filter_chains as Proto[])
      : [];
    for (const [i, chain] of chains.entries()) {
      const fm = (chain.metadata as Proto | undefined)?.filter_metadata as Proto | undefined;
      if (!fm?.sockmesh) continue;
      const meta = structToPlain(fm.sockmesh, `inbound.filter_chains[${i}].metadata`);
      const ip = str(meta.podIp);
      const spiffeId = str(meta.spiffeId);
      const namespace = str(meta.namespace);
      const name = str(meta.pod);
      if (!ip || !spiffeId || !namespace || !name) continue;
      pods.set(ip, {
        ip,
        namespace,
        name,
        serviceAccount: str(meta.serviceAccount) ?? 'default',
        spiffeId,
        version: str(meta.version),
        mtlsMode: meta.mtlsMode === 'permissive' ? 'permissive' : 'strict',
        uid: str(meta.uid),
        qosClass: parseQosClass(meta.qosClass),
        protocolOf: (port: number): PortProtocol => (httpPorts.has(`${ip}:${port}`) ? 'http' : 'tcp'),
      });
    }
    const lm = ((inboundListener?.metadata as Proto | undefined)?.filter_metadata as Proto | undefined)
      ?.sockmesh;
    const address = lm ? str(structToPlain(lm, 'inbound.metadata').address) : undefined;
    return new LocalView(pods, address);
  }

  byIp(ip: string): LocalPod | undefined {
    return this.pods.get(ip);
  }

  all(): LocalPod[] {
    return [...this.pods.values()];
  }

  get size(): number {
    return this.pods.size;
  }
}

/** `ip:port` of every endpoint reached through an HTTP route: those ports are parsed as HTTP inbound. */
function httpEndpoints(state: MeshState): Set<string> {
  const out = new Set<string>();
  const listener = state.listener('sockmesh-outbound');
  for (const chain of listener?.chains ?? []) {
    if (chain.action.kind !== 'http') continue;
    const name = chain.action.http.routeConfigName;
    const rc =
      chain.action.http.inlineRouteConfig ?? (name === undefined ? undefined : state.routeConfig(name));
    for (const vh of rc?.virtualHosts ?? []) {
      for (const r of vh.routes) {
        if (r.behaviour.kind !== 'forward') continue;
        const t = r.behaviour.action.target;
        const clusters = t.kind === 'cluster' ? [t.name] : t.weighted.clusters.map((c) => c.name);
        for (const c of clusters) for (const e of state.endpoints(c)) out.add(e.key);
      }
    }
  }
  return out;
}

/** The RBAC of the inbound listener's chain for a pod, as the inbound side asks for it. */
export class MeshAuthorization implements AuthorizationCheck {
  constructor(private readonly current: () => MeshState) {}

  check(req: AuthzRequest): AuthzDecision {
    const m = this.current().matchInbound(req.destination.ip, req.port);
    if (!m.chain)
      return { allowed: false, policy: 'unknown-destination', reason: 'not a meshed pod of this node' };
    const input = {
      sourcePrincipal: req.sourcePrincipal,
      sourceNamespace: req.sourceNamespace,
      destinationPort: req.port,
      ...(req.method === undefined ? {} : { method: req.method }),
      ...(req.path === undefined ? {} : { path: req.path }),
    };
    const verdicts: RbacDecision[] = [m.authorizer.evaluate(input)];
    if (m.httpAuthorizer && req.method !== undefined) verdicts.push(m.httpAuthorizer.evaluate(input));
    const denied = verdicts.find((v) => !v.allowed);
    if (denied) return { allowed: false, policy: denied.policy ?? 'default-deny', reason: denied.reason };
    const policy = verdicts[0]?.policy;
    return policy === undefined ? { allowed: true } : { allowed: true, policy };
  }

  /** Some deciding policy of the pod's chain reads method, path or headers on this port (inbound/l7-need.ts). */
  needsHttp(destination: LocalWorkload, port: number): boolean {
    const { chain } = this.current().matchInbound(destination.ip, port);
    if (!chain) return false;
    const httpRbac = chain.action.kind === 'http' ? chain.action.http.rbac : [];
    return rbacNeedsHttp(chain.rbac, port) || rbacNeedsHttp(httpRbac, port);
  }
}
