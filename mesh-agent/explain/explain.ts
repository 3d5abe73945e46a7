/**
 * One connection explained from an agent's live state. Pure: the agent hands
 * in what it reads from the kernel and its own runtime (membership, capture
 * config, ejections, breaker counts); the decisions are taken by the same
 * functions the data path calls (listener chain, route selection, candidate
 * endpoints, RBAC).
 */
import type { Authorizer } from '../authz/authorizer.js';
import type { RbacConfig } from '../authz/rbac.js';
import { candidates, nodeOf } from '../balancer/candidates.js';
import type { Endpoint } from '../balancer/types.js';
import type { BreakerResource } from '../breaker/circuit-breaker.js';
import { rbacNeedsHttp } from '../inbound/l7-need.js';
import type { PortProtocol } from '../inbound/policy.js';
import { type CidrPrefix, cidrContains, ipToBigInt } from '../state/cidr.js';
import type { MeshState } from '../state/mesh-state.js';
import { explainRouting, targetsOf } from './routes.js';
import type {
  BreakerView,
  Capture,
  ClusterView,
  EndpointView,
  ExplainRequest,
  InboundExplanation,
  Membership,
  OutboundExplanation,
  PolicyView,
  SourceSide,
  WeightedTarget,
} from './types.js';

/** What the kernel holds for capture: `sm_config` and the exclusion maps. */
export interface CaptureConfig {
  proxy: { ip: string; port: number } | undefined;
  excludedPorts: readonly number[];
  excludedCidrs: readonly string[];
}

function parseCidr(text: string): CidrPrefix | undefined {
  const [addr = '', len = ''] = text.split('/');
  const ip = ipToBigInt(addr);
  if (!ip) return undefined;
  const length = Number(len || (ip.family === 4 ? 32 : 128));
  const width = ip.family === 4 ? 32 : 128;
  const mask = length === 0 ? 0n : ((1n << BigInt(length)) - 1n) << BigInt(width - length);
  return { family: ip.family, bits: ip.bits & mask, length, text };
}

/** connect4's decision (progs/connect4.bpf.c), from the same inputs the program reads. */
export function captureOf(enrolled: boolean, dstIp: string, dstPort: number, cfg: CaptureConfig): Capture {
  const proxy = cfg.proxy ? `${cfg.proxy.ip}:${cfg.proxy.port}` : null;
  const no = (reason: string): Capture => ({ captured: false, reason, proxy });
  if (!enrolled) return no("the caller's cgroup is not in the kernel's membership map (sm_pods)");
  if (!cfg.proxy) return no('the kernel has no proxy address (sm_config): the agent is not capturing');
  if (dstIp.startsWith('127.')) return no('loopback is never captured');
  if (dstIp === cfg.proxy.ip) return no("the destination is the proxy's own address");
  if (cfg.excludedPorts.includes(dstPort)) return no(`port ${dstPort} is excluded (sm_excl_ports)`);
  const ip = ipToBigInt(dstIp);
  for (const c of cfg.excludedCidrs) {
    const p = parseCidr(c);
    if (p && ip && cidrContains(p, ip)) return no(`${dstIp} is in the excluded range ${c} (sm_excl_cidrs)`);
  }
  return { captured: true, reason: `connect4 rewrites the destination to the proxy at ${proxy}`, proxy };
}

/** Runtime state the agent holds about a cluster, beyond its config. */
export interface ClusterRuntimeView {
  ejected(cluster: string, endpoints: readonly string[]): string[];
  /** In-use counts of the cluster's breaker in this process; undefined when not known here. */
  breakerInUse(cluster: string): Record<BreakerResource, number> | undefined;
}

export interface OutboundInput {
  node: string;
  xds: Record<string, string | undefined>;
  state: MeshState;
  source: SourceSide;
  dstIp: string;
  dstPort: number;
  request: ExplainRequest;
  capture: CaptureConfig;
  runtime: ClusterRuntimeView;
}

/** `outbound|9080||reviews-v1.shop.svc.cluster.local` -> `reviews-v1.shop`. */
export function serviceOfCluster(name: string): string {
  const fqdn = name.split('|')[3] ?? name;
  return fqdn.split('.').slice(0, 2).join('.');
}

function endpointView(e: Endpoint, localNode: string, ejected: boolean, candidate: boolean): EndpointView {
  const node = nodeOf(e) ?? null;
  const local = node === localNode;
  return {
    address: e.key,
    pod: e.meta.pod && e.meta.namespace ? `${e.meta.namespace}/${e.meta.pod}` : null,
    node,
    version: e.meta.version ?? null,
    spiffeId: e.meta.spiffeId ?? null,
    healthy: e.healthy,
    ejected,
    candidate,
    path: local ? 'same-node' : 'tunnel',
    tunnel: local ? null : (e.meta.tunnelAddress ?? null),
  };
}

function clusterView(
  state: MeshState,
  name: string,
  node: string,
  rt: ClusterRuntimeView,
): ClusterView | null {
  const c = state.cluster(name);
  if (!c) return null;
  const eps = state.endpoints(name);
  const ejected = new Set(
    c.outlier
      ? rt.ejected(
          name,
          eps.map((e) => e.key),
        )
      : [],
  );
  const pickable = new Set(
    candidates(eps, { localNode: node, ejections: { isEjected: (k) => ejected.has(k) } }).map((e) => e.key),
  );
  const b = c.breaker;
  const limits = {
    connections: b.maxConnections,
    pending: b.maxPendingRequests,
    requests: b.maxRequests,
    retries: b.maxRetries,
  };
  const inUse = rt.breakerInUse(name) ?? null;
  const breaker: BreakerView = {
    limits,
    inUse,
    open: inUse ? (Object.keys(limits) as BreakerResource[]).filter((k) => inUse[k] >= limits[k]) : [],
  };
  return {
    name,
    service: serviceOfCluster(name),
    lbPolicy: c.balancer.policy,
    locality:
      'healthy, non-ejected endpoints on this node first; the other nodes only when none is left here',
    connectTimeoutMs: c.connectTimeoutMs,
    breaker,
    outlier: c.outlier
      ? {
          consecutive5xx: c.outlier.consecutive5xx,
          intervalMs: c.outlier.intervalMs,
          baseEjectionTimeMs: c.outlier.baseEjectionTimeMs,
          maxEjectionPercent: c.outlier.maxEjectionPercent,
          ejected: [...ejected],
        }
      : null,
    endpoints: eps.map((e) => endpointView(e, node, ejected.has(e.key), pickable.has(e.key))),
  };
}

/** What the source's agent does with a connection from `source` to dstIp:dstPort (and one request on it). */
export function explainOutbound(input: OutboundInput): OutboundExplanation {
  const { state, request, node } = input;
  const capture = captureOf(input.source.enrolled !== null, input.dstIp, input.dstPort, input.capture);
  const m = state.matchOutbound(input.dstIp, input.dstPort);
  const httpReq = {
    authority: request.authority,
    path: request.path,
    method: request.method,
    headers: request.headers,
  };
  let listener: OutboundExplanation['listener'];
  let http: OutboundExplanation['http'] = null;
  let tcp: OutboundExplanation['tcp'] = null;
  if (m.kind === 'passthrough') {
    listener = { kind: 'passthrough', listener: null, chain: null, reason: m.reason };
  } else if (m.kind === 'http') {
    listener = { kind: 'http', listener: m.listener, chain: m.chain.name, reason: null };
    http = explainRouting(m.routeConfig, httpReq, serviceOfCluster);
  } else {
    listener = {
      kind: m.detectHttp ? 'detect' : 'tcp',
      listener: m.listener,
      chain: m.chain.name,
      reason: null,
    };
    tcp = { targets: targetsOf(m.tcpProxy.target, serviceOfCluster) };
    if (m.detectHttp) http = explainRouting(m.detectHttp.routeConfig, httpReq, serviceOfCluster);
  }
  const targets: WeightedTarget[] = [
    ...(http?.outcome.kind === 'forward' ? http.outcome.targets : []),
    ...(tcp?.targets ?? []),
  ];
  const clusters = [...new Set(targets.map((t) => t.cluster))]
    .map((c) => clusterView(state, c, node, input.runtime))
    .filter((c): c is ClusterView => c !== null);
  // A passthrough to a meshed pod's own IP still goes through mTLS to it (planner.endpointAt).
  let meshedPodAt: EndpointView | null = null;
  if (m.kind === 'passthrough') {
    for (const name of state.clusterNames()) {
      const e = state.endpoints(name).find((x) => x.address === input.dstIp && x.meta.spiffeId);
      if (e) {
        meshedPodAt = endpointView(
          { ...e, key: `${input.dstIp}:${input.dstPort}`, port: input.dstPort },
          node,
          false,
          true,
        );
        break;
      }
    }
  }
  return {
    node,
    xds: input.xds,
    source: input.source,
    destination: { ip: input.dstIp, port: input.dstPort },
    capture,
    listener,
    http,
    tcp,
    clusters,
    meshedPodAt,
  };
}

export interface InboundInput {
  node: string;
  xds: Record<string, string | undefined>;
  state: MeshState;
  destination: Membership;
  port: number;
  protocol: PortProtocol;
  /** The caller's verified SPIFFE ID; null for plaintext. */
  principal: string | null;
  request: ExplainRequest;
  /** Permissive pods whose plaintext the agent takes (its 15006 listener is up). */
  plaintextTaken: boolean;
}

function policiesOf(configs: readonly RbacConfig[], layer: 'network' | 'http'): PolicyView[] {
  return configs.flatMap((c) => c.policies.map((p) => ({ name: p.name, action: c.action, layer })));
}

/** `spiffe://td/ns/<ns>/sa/<sa>` -> ns. */
function namespaceOf(principal: string | null): string | null {
  return principal?.match(/^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/)?.[1] ?? null;
}

/** What the destination's agent (and kernel) does with a caller reaching a local pod on `port`. */
export function explainInbound(input: InboundInput): InboundExplanation {
  const d = input.destination;
  const caller = { principal: input.principal, namespace: namespaceOf(input.principal) };
  let plaintext: InboundExplanation['plaintext'] = null;
  if (input.principal === null) {
    if (d.enrolled?.mode === 'strict')
      plaintext = {
        verdict: 'dropped-in-kernel',
        reason:
          "strict mode: cgroup_skb/ingress drops plaintext to the pod's listening sockets unless it comes from the proxy, loopback or the pod itself; the handshake never completes",
      };
    else if (d.enrolled?.mode === 'permissive')
      plaintext = input.plaintextTaken
        ? {
            verdict: 'via-agent',
            reason:
              'permissive mode: sk_lookup hands the connection to the agent on 15006, which applies AuthorizationPolicy to an unauthenticated caller',
          }
        : {
            verdict: 'dropped-in-kernel',
            reason: "permissive mode, but the agent's 15006 listener is missing: sk_lookup refuses (reset)",
          };
    else
      plaintext = {
        verdict: 'delivered',
        reason: 'the pod is not in the mesh: plaintext reaches it as is, no policy applies',
      };
  }
  const m = input.state.matchInbound(d.ip, input.port);
  const httpRbac = m.chain?.action.kind === 'http' ? m.chain.action.http.rbac : [];
  const policies = [...policiesOf(m.chain?.rbac ?? [], 'network'), ...policiesOf(httpRbac, 'http')];
  const perRequest = m.chain
    ? rbacNeedsHttp(m.chain.rbac, input.port) || rbacNeedsHttp(httpRbac, input.port)
    : false;
  let authorization: InboundExplanation['authorization'];
  if (!m.chain) {
    authorization = {
      allowed: d.pod === null && plaintext?.verdict === 'delivered',
      reason: 'unknown-destination',
      policy: null,
      perRequest: false,
      policies: [],
    };
  } else {
    const isHttp = input.protocol === 'http';
    const req = {
      sourcePrincipal: input.principal ?? undefined,
      sourceNamespace: caller.namespace ?? undefined,
      destinationPort: input.port,
      ...(isHttp
        ? {
            method: input.request.method,
            path: input.request.path,
            headers: input.request.headers,
            authority: input.request.authority,
          }
        : {}),
    };
    const verdicts = [m.authorizer.evaluate(req)];
    if (m.httpAuthorizer && isHttp) verdicts.push((m.httpAuthorizer as Authorizer).evaluate(req));
    const denied = verdicts.find((v) => !v.allowed);
    const v = denied ?? verdicts.find((x) => x.policy !== undefined) ?? verdicts[0]!;
    authorization = {
      allowed: !denied,
      reason: v.reason,
      policy: v.policy ?? null,
      perRequest,
      policies,
    };
  }
  return {
    node: input.node,
    xds: input.xds,
    destination: { ...d, port: input.port, protocol: input.protocol },
    caller,
    plaintext,
    authorization,
  };
}
