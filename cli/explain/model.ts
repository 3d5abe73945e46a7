/**
 * `sockmesh explain --json`: one pair, end to end, joined from the source
 * agent's `/explain/outbound`, each destination agent's `/explain/inbound`,
 * the source agent's metrics and the control plane (written routes, canary
 * guards, namespace labels). The verdict is derived here, from those answers
 * only.
 */

import type { KernelVerdictView } from '../../mesh-agent/agent/kernel-policy.js';
import type {
  EndpointView,
  ExplainRequest,
  InboundExplanation,
  OutboundExplanation,
  WeightedTarget,
} from '../../mesh-agent/explain/types.js';
import type { GatewayRouteKind } from '../../mesh-agent/routing/types.js';
import type { CanaryStatus } from '../../xds/server/canary.js';

export interface ExplainSource {
  pod: string;
  ip: string;
  node: string;
  /** The namespace's labels as the control plane holds them. */
  namespace: { name: string; meshed: boolean; mtls: 'strict' | 'permissive' };
}

export interface ExplainDestination {
  kind: 'service' | 'pod';
  /** `name.namespace` (service) or `namespace/pod`. */
  name: string;
  ip: string;
  port: number;
}

export interface ExplainSplit {
  /** The HTTPRoute or GRPCRoute (`namespace/name`) and rule the matched route comes from. */
  httpRoute: string;
  routeKind: GatewayRouteKind;
  rule: number;
  /** Weights as the route is written (control plane). */
  written: Array<{ service: string; weight: number }>;
  /** Weights the source's agent serves now (a canary guard's override included). */
  served: WeightedTarget[];
  /** The CanaryGuard of that route, as the control plane runs it. */
  guard: CanaryStatus | null;
}

export interface InboundAnswer {
  /** The endpoint (`ip:port`) and the node whose agent answered. */
  endpoint: string;
  node: string;
  answer: InboundExplanation | { error: string };
}

/** Kernel TCP health of the source pod's connections to one destination pod, on one leg (cumulative). */
export interface PairTcpHealth {
  /** `namespace/pod`. */
  destination: string;
  /** `tunnel` (node -> node), `pod_proxy`, `proxy_pod`, as the agent labels it. */
  leg: string;
  connections: number;
  failures: number;
  retransmits: number;
  rtos: number;
  /** Smoothed RTT and its variance now, µs; null when not exported. */
  srttUs: number | null;
  rttvarUs: number | null;
}

const TCP_HEALTH = 'sockmesh_tcp_health_';

/**
 * The source node agent's `sockmesh_tcp_health_*` samples for source -> each destination pod;
 * null when the agent exports no TCP health at all (an agent without it).
 */
export function tcpHealthOf(
  samples: ReadonlyArray<{ name: string; labels: Record<string, string>; value: number }>,
  source: string,
  destinations: readonly string[],
): PairTcpHealth[] | null {
  const health = samples.filter((s) => s.name.startsWith(TCP_HEALTH));
  if (health.length === 0) return null;
  const out = new Map<string, PairTcpHealth>();
  for (const s of health) {
    const l = s.labels;
    if (`${l.source_namespace}/${l.source_workload}` !== source) continue;
    const destination = `${l.destination_namespace}/${l.destination_workload}`;
    if (!destinations.includes(destination)) continue;
    const key = `${destination} ${l.leg}`;
    const h = out.get(key) ?? {
      destination,
      leg: l.leg ?? 'unknown',
      connections: 0,
      failures: 0,
      retransmits: 0,
      rtos: 0,
      srttUs: null,
      rttvarUs: null,
    };
    out.set(key, h);
    const metric = s.name.slice(TCP_HEALTH.length);
    if (metric === 'connections_total') h.connections += s.value;
    else if (metric === 'failures_total') h.failures += s.value;
    else if (metric === 'retransmits_total') h.retransmits += s.value;
    else if (metric === 'rtos_total') h.rtos += s.value;
    else if (metric === 'srtt_microseconds') h.srttUs = s.value;
    else if (metric === 'rttvar_microseconds') h.rttvarUs = s.value;
  }
  return [...out.values()].sort((a, b) =>
    `${a.destination} ${a.leg}`.localeCompare(`${b.destination} ${b.leg}`),
  );
}

export type VerdictOutcome =
  | 'allowed'
  | 'denied'
  | 'partly-denied'
  | 'dropped'
  | 'unreachable'
  | 'no-route'
  | 'passthrough';

/**
 * The kernel's L4 verdict for the pair (docs/kernel-dataplane.md#l4-authorization-in-the-kernel):
 * connect4 on the source's node for a meshed caller, sk_lookup on the destination's node for a
 * plaintext one. Service addresses are left to the proxy.
 */
export interface ExplainKernel {
  hook: 'connect4' | 'sk_lookup';
  /** Where it was read: the agent of this node. */
  node: string;
  /** The live maps' decision; null when the kernel does not decide this pair (`note` says why). */
  decision: KernelVerdictView['kernel'] | null;
  note: string;
}

export interface Explanation {
  source: ExplainSource;
  destination: ExplainDestination;
  request: ExplainRequest;
  /** The source node agent's answer. */
  outbound: OutboundExplanation;
  split: ExplainSplit | null;
  /** Requests the source node's agent counted from the source's identity, per cluster, since it started. */
  observed: Array<{ cluster: string; requests: number }>;
  inbound: InboundAnswer[];
  /** Kernel TCP health source -> each destination pod, from the source node's agent; null when it exports none. */
  tcp: PairTcpHealth[] | null;
  /** The kernel's L4 policy verdict; null when the agent does not serve it (no kernel policy). */
  kernel: ExplainKernel | null;
  verdict: { outcome: VerdictOutcome; summary: string };
}

/** The endpoints a request may reach: every endpoint of a target with weight > 0, or the pod itself. */
export function reachableEndpoints(o: OutboundExplanation): EndpointView[] {
  if (o.meshedPodAt) return [o.meshedPodAt];
  const live = new Set<string>();
  if (o.http?.outcome.kind === 'forward')
    for (const t of o.http.outcome.targets) if (t.weight > 0) live.add(t.cluster);
  if (!o.http) for (const t of o.tcp?.targets ?? []) if (t.weight > 0) live.add(t.cluster);
  return o.clusters.filter((c) => live.has(c.name)).flatMap((c) => c.endpoints);
}

function authzOf(a: InboundAnswer): InboundExplanation['authorization'] | undefined {
  return 'error' in a.answer ? undefined : a.answer.authorization;
}

/** What happens, in one word and one sentence, from the answers alone. */
export function verdictOf(e: Omit<Explanation, 'verdict'>): Explanation['verdict'] {
  const o = e.outbound;
  const dst = `${e.destination.ip}:${e.destination.port}`;
  const denialText = (protocolHttp: boolean, policy: string | null) =>
    `${protocolHttp ? '403 RBAC: access denied' : 'connection reset'}${policy ? ` (${policy})` : ' (no ALLOW rule matches the caller)'}`;
  const k = e.kernel?.decision;
  if (k?.verdict === 'deny')
    return {
      outcome: 'denied',
      summary: `refused in the kernel at ${e.kernel!.hook} by ${k.policy} (the caller gets ${e.kernel!.hook === 'connect4' ? 'EPERM from connect()' : 'a refused connection'}); the proxy never sees it`,
    };
  if (!o.capture.captured) {
    if (e.destination.kind === 'service')
      return {
        outcome: 'unreachable',
        summary: `not captured, so ${dst} is dialled as is: a Service VIP is answered only through the mesh`,
      };
    const a = e.inbound[0];
    const inb = a && !('error' in a.answer) ? a.answer : undefined;
    if (!inb) return { outcome: 'unreachable', summary: `no answer from the destination's agent` };
    if (inb.plaintext?.verdict === 'dropped-in-kernel')
      return { outcome: 'dropped', summary: `plaintext to ${e.destination.name}: ${inb.plaintext.reason}` };
    if (inb.plaintext?.verdict === 'delivered')
      return { outcome: 'passthrough', summary: `plaintext, outside the mesh: ${inb.plaintext.reason}` };
    return inb.authorization.allowed
      ? { outcome: 'allowed', summary: `through the agent as an unauthenticated caller, allowed` }
      : {
          outcome: 'denied',
          summary: `through the agent as an unauthenticated caller: ${denialText(inb.destination.protocol === 'http', inb.authorization.policy)}`,
        };
  }
  if (o.source.svid === null)
    return {
      outcome: 'denied',
      summary: `the agent holds no SVID for ${o.source.spiffeId ?? 'the source'}: its connections are closed`,
    };
  if (o.http?.outcome.kind === 'respond' && (o.listener.kind === 'http' || o.listener.kind === 'detect'))
    return {
      outcome: 'no-route',
      summary: `answered ${o.http.outcome.status} by the source's proxy (${o.http.outcome.reason})`,
    };
  if (o.listener.kind === 'passthrough' && !o.meshedPodAt)
    return { outcome: 'passthrough', summary: `no Service owns ${dst}: the proxy connects to it as is` };
  if (e.inbound.length === 0) return { outcome: 'unreachable', summary: 'no endpoint to reach' };
  const denied = e.inbound.filter((a) => authzOf(a)?.allowed === false);
  const allowed = e.inbound.filter((a) => authzOf(a)?.allowed === true);
  if (denied.length === 0 && allowed.length === e.inbound.length) {
    const via = [...new Set(reachableEndpoints(o).map((x) => x.path))].join(' and ');
    return { outcome: 'allowed', summary: `allowed at every endpoint (${via})` };
  }
  const first = denied[0] ? authzOf(denied[0]) : undefined;
  const firstAnswer = denied[0]?.answer;
  const http = firstAnswer && !('error' in firstAnswer) && firstAnswer.destination.protocol === 'http';
  if (denied.length === e.inbound.length)
    return {
      outcome: 'denied',
      summary: `denied by the destination: ${denialText(!!http, first?.policy ?? null)}`,
    };
  return {
    outcome: 'partly-denied',
    summary: `denied at ${denied.map((d) => d.endpoint).join(', ')}: ${denialText(!!http, first?.policy ?? null)}`,
  };
}
