import { LocalMesh } from '../../lab/mesh.js';
import type { LabPod } from '../../lab/types.js';
import { SockmeshError } from '../../lib/errors.js';
import type { KernelVerdictView } from '../../mesh-agent/agent/kernel-policy.js';
import type { InboundExplanation, OutboundExplanation } from '../../mesh-agent/explain/types.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import {
  type ExplainDestination,
  type ExplainKernel,
  type ExplainSplit,
  type Explanation,
  type InboundAnswer,
  reachableEndpoints,
  tcpHealthOf,
  verdictOf,
} from '../explain/model.js';
import { renderExplanation } from '../explain/render.js';
import { parseExposition } from './canary.js';
import { currentBed } from './lab.js';

/** What the agents export as kernel TCP health per workload pair (docs/observability.md). */
const TCP_HEALTH_METRICS = new Set(
  [
    'connections_total',
    'failures_total',
    'retransmits_total',
    'rtos_total',
    'srtt_microseconds',
    'rttvar_microseconds',
  ].map((m) => `sockmesh_tcp_health_${m}`),
);

const POD = /^([a-z0-9-]+)\/([a-z0-9.-]+)(?::(\d+))?(\/.*)?$/;
const SERVICE = /^([a-z0-9-]+)\.([a-z0-9-]+)(?:\.svc(?:\.[a-z0-9.-]+)?)?(?::(\d+))?(\/.*)?$/;

function findPod(mesh: LocalMesh, ref: string, what: string): LabPod {
  const m = ref.match(/^([a-z0-9-]+)\/([a-z0-9.-]+)$/);
  const pod = m && mesh.bed.pods.find((p) => p.namespace === m[1] && p.name === m[2]);
  if (!pod)
    throw new SockmeshError(
      'SOCKMESH_E_NOT_FOUND',
      `${what}: no pod ${ref} in local mesh ${mesh.bed.runId}`,
      {
        hint: `known pods: ${mesh.bed.pods.map((p) => `${p.namespace}/${p.name}`).join(', ')}`,
      },
    );
  return pod;
}

/** `reviews.shop[:port][/path]` or `shop/ratings-1[:port][/path]`, resolved against the control plane's state. */
function resolveDestination(mesh: LocalMesh, ref: string): { dst: ExplainDestination; path: string } {
  const pod = ref.match(POD);
  if (pod) {
    const p = findPod(mesh, `${pod[1]}/${pod[2]}`, 'destination');
    const w = mesh.model.workloads.get(`${p.namespace}/${p.name}`);
    const port = pod[3] ? Number(pod[3]) : w ? Object.values(w.namedPorts)[0] : undefined;
    if (port === undefined)
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        `pod ${pod[1]}/${pod[2]} declares no port: give one (${ref}:<port>)`,
      );
    return { dst: { kind: 'pod', name: `${p.namespace}/${p.name}`, ip: p.ip, port }, path: pod[4] ?? '/' };
  }
  const svc = ref.match(SERVICE);
  if (!svc)
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `destination '${ref}': expected <service>.<namespace>[:port][/path] or <namespace>/<pod>[:port][/path]`,
    );
  const s = mesh.model.services.get(`${svc[2]}/${svc[1]}`);
  if (!s)
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no Service ${svc[1]}.${svc[2]}`, {
      hint: `known: ${[...mesh.model.services.values()].map((x) => `${x.name}.${x.namespace}`).join(', ')}`,
    });
  if (!s.clusterIP)
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `Service ${s.name}.${s.namespace} has no cluster IP (headless): explain a pod instead`,
    );
  const port = svc[3] ? Number(svc[3]) : s.ports[0]?.port;
  if (port === undefined || !s.ports.some((p) => p.port === port))
    throw new SockmeshError(
      'SOCKMESH_E_NOT_FOUND',
      `Service ${s.name}.${s.namespace} has no port ${svc[3]}`,
      {
        hint: `its ports: ${s.ports.map((p) => p.port).join(', ')}`,
      },
    );
  return {
    dst: { kind: 'service', name: `${s.name}.${s.namespace}`, ip: s.clusterIP, port },
    path: svc[4] ?? '/',
  };
}

function parseAnswer<T>(
  what: string,
  a: { status: number; body: string } | { error: string } | undefined,
): T {
  if (!a || 'error' in a)
    throw new SockmeshError(
      'SOCKMESH_E_LAB',
      `${what} did not answer: ${a && 'error' in a ? a.error : 'no reply'}`,
    );
  if (a.status !== 200) {
    let msg = a.body;
    try {
      msg = (JSON.parse(a.body) as { error?: string }).error ?? a.body;
    } catch {}
    throw new SockmeshError(
      'SOCKMESH_E_LAB',
      `${what} answered ${a.status}: ${msg.trim()}`,
      a.status === 404
        ? { hint: 'the agent predates sockmesh explain: upgrade it (sockmesh restart-agent)' }
        : {},
    );
  }
  return JSON.parse(a.body) as T;
}

/** Requests the source node's agent counted from this identity, per destination cluster. */
function observed(metrics: string, principal: string | null, clusters: readonly string[]) {
  if (!principal) return [];
  const samples =
    parseExposition(metrics, new Set(['sockmesh_requests_total'])).get('sockmesh_requests_total') ?? [];
  return clusters.map((cluster) => ({
    cluster,
    requests: samples
      .filter(
        (s) =>
          s.labels.reporter === 'source' &&
          s.labels.source_principal === principal &&
          s.labels.destination_cluster === cluster,
      )
      .reduce((n, s) => n + s.value, 0),
  }));
}

function splitOf(
  mesh: LocalMesh,
  o: OutboundExplanation,
  guards: Awaited<ReturnType<ReturnType<LocalMesh['admin']>['canary']>>['guards'],
): ExplainSplit | null {
  if (o.http?.outcome.kind !== 'forward') return null;
  const matched = o.http.routes.find((r) => r.result === 'matched');
  if (!matched?.httpRoute || matched.rule === null) return null;
  const [ns, name] = matched.httpRoute.split('/');
  const route = mesh.model.httpRoutes.find((r) => r.namespace === ns && r.name === name);
  const rule = route?.rules[matched.rule];
  return {
    httpRoute: matched.httpRoute,
    routeKind: route?.kind ?? matched.routeKind ?? 'HTTPRoute',
    rule: matched.rule,
    written: (rule?.backends ?? []).map((b) => ({
      service: `${b.service.name}.${b.service.namespace}`,
      weight: b.weight,
    })),
    served: o.http.outcome.targets,
    guard: guards.find((g) => g.route === matched.httpRoute) ?? null,
  };
}

/**
 * The kernel's L4 verdict (issue 19), read from the agent whose hook decides: connect4 on the
 * source's node for a captured caller, sk_lookup on the destination's node for a plaintext one.
 * Null when that agent keeps no kernel policy (it answers 404).
 */
async function kernelVerdict(
  mesh: LocalMesh,
  src: LabPod,
  dst: ExplainDestination,
  captured: boolean,
): Promise<ExplainKernel | null> {
  if (dst.kind === 'service')
    return {
      hook: 'connect4',
      node: src.node,
      decision: null,
      note: 'a Service address: connect4 passes it to the proxy, which picks the backend and decides',
    };
  const node = captured ? src.node : mesh.bed.pods.find((p) => p.ip === dst.ip)?.node;
  if (!node) return null;
  const q = new URLSearchParams({
    source: captured ? `${src.namespace}/${src.name}` : 'plaintext',
    destination: dst.ip,
    port: String(dst.port),
  });
  const [answer] = await mesh.agentGetMany([{ node, path: `/kernel/policy?${q}` }], node);
  if (!answer || 'error' in answer || answer.status === 404) return null;
  const view = parseAnswer<KernelVerdictView>(`the agent of ${node}`, answer);
  return {
    hook: view.hook,
    node,
    decision: view.kernel,
    note:
      view.hook === 'sk_lookup'
        ? 'plaintext into a permissive pod; a strict pod drops plaintext in the kernel anyway'
        : '',
  };
}

export const explainCommand: Command = {
  usage: `Usage: sockmesh explain <namespace>/<pod> <destination> [--header name:value]... [--method M] [--json] [--run <id>]

destination: <service>.<namespace>[:port][/path]   (a Service: its VIP; default: its first port)
             <namespace>/<pod>[:port][/path]        (a pod IP; default: its first declared port)

What happens to a connection (and one request) from the pod to the
destination, end to end, from the live state: the source node's agent
(/explain/outbound on :15020: is the pod meshed as the agent and the kernel's
membership map see it, will connect4 capture it, which listener chain, which
route matches and why the others do not, the weights it serves, the
endpoints with locality, outlier ejections and breaker state, tunnel or same
node, the SPIFFE IDs), every destination agent (/explain/inbound: mTLS mode,
strict or permissive fate of plaintext, the authorization decision and the
policy rule that takes it) and the control plane (written weights, canary
guards, namespace labels). --json prints the same as one object (docs/cli.md).

Exit codes: 0 explained, 2 usage, 3 no mesh; 1 unknown pod or Service, or an agent did not answer.`,
  async run({ argv, stdout }) {
    const { values, positionals } = parseCommandArgs(argv, {
      header: { type: 'string', short: 'H', multiple: true },
      method: { type: 'string', short: 'X' },
      json: { type: 'boolean' },
      run: { type: 'string' },
    });
    if (positionals.length !== 2)
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        'expected: sockmesh explain <namespace>/<pod> <service>.<namespace>[:port][/path] | <namespace>/<pod>[:port][/path]',
      );
    const mesh = await LocalMesh.attach(currentBed(values.run));
    const src = findPod(mesh, positionals[0]!, 'source');
    const { dst, path } = resolveDestination(mesh, positionals[1]!);
    const headers = (values.header ?? []).map((h) => {
      if (!/^[^:\s]+:/.test(h))
        throw new SockmeshError('SOCKMESH_E_USAGE', `--header ${h}: expected name:value`);
      return h;
    });
    const authority = dst.kind === 'service' ? `${dst.name}:${dst.port}` : `${dst.ip}:${dst.port}`;
    const q = new URLSearchParams({
      src: src.ip,
      dst: dst.ip,
      port: String(dst.port),
      method: values.method ?? 'GET',
      path,
      authority,
      cgroup: String(src.cgroupId),
    });
    for (const h of headers) q.append('header', h);
    const [outAnswer, metricsAnswer] = await mesh.agentGetMany(
      [
        { node: src.node, path: `/explain/outbound?${q}` },
        { node: src.node, path: '/metrics' },
      ],
      src.node,
    );
    const outbound = parseAnswer<OutboundExplanation>(`the agent of ${src.node}`, outAnswer);

    // Who the destination sees: the source's SPIFFE ID when the mesh carries the connection, else nobody.
    const principal = outbound.capture.captured ? outbound.source.spiffeId : null;
    let targets: Array<{ endpoint: string; ip: string; port: number; node: string }> = [];
    if (outbound.capture.captured) {
      targets = reachableEndpoints(outbound)
        .filter((e) => e.node !== null)
        .map((e) => {
          const [ip = '', port = ''] = e.address.split(':');
          return { endpoint: e.address, ip, port: Number(port), node: e.node! };
        });
    } else if (dst.kind === 'pod') {
      const p = mesh.bed.pods.find((x) => x.ip === dst.ip)!;
      targets = [{ endpoint: `${dst.ip}:${dst.port}`, ip: dst.ip, port: dst.port, node: p.node }];
    }
    const answers = await mesh.agentGetMany(
      targets.map((t) => {
        const iq = new URLSearchParams({
          dst: t.ip,
          port: String(t.port),
          method: q.get('method')!,
          path,
          authority,
        });
        for (const h of headers) iq.append('header', h);
        if (principal) iq.set('principal', principal);
        const pod = mesh.bed.pods.find((x) => x.ip === t.ip);
        if (pod) iq.set('cgroup', String(pod.cgroupId));
        return { node: t.node, path: `/explain/inbound?${iq}` };
      }),
      src.node,
    );
    const inbound: InboundAnswer[] = targets.map((t, i) => {
      const a = answers[i];
      let answer: InboundExplanation | { error: string };
      try {
        answer = parseAnswer<InboundExplanation>(`the agent of ${t.node}`, a);
      } catch (err) {
        answer = { error: (err as Error).message };
      }
      return { endpoint: t.endpoint, node: t.node, answer };
    });
    const kernel = await kernelVerdict(mesh, src, dst, outbound.capture.captured);
    const admin = mesh.admin();
    let guards: Awaited<ReturnType<typeof admin.canary>>['guards'] = [];
    try {
      guards = (await admin.canary()).guards;
    } finally {
      await admin.close();
    }
    const ns = mesh.model.namespaces.get(src.namespace);
    const partial: Omit<Explanation, 'verdict'> = {
      source: {
        pod: `${src.namespace}/${src.name}`,
        ip: src.ip,
        node: src.node,
        namespace: { name: src.namespace, meshed: ns?.meshed ?? false, mtls: ns?.mtlsMode ?? 'strict' },
      },
      destination: dst,
      request: {
        method: q.get('method')!.toUpperCase(),
        path,
        authority,
        headers: Object.fromEntries(
          headers.map((h) => [h.slice(0, h.indexOf(':')).toLowerCase(), h.slice(h.indexOf(':') + 1).trim()]),
        ),
      },
      outbound,
      split: outbound.capture.captured ? splitOf(mesh, outbound, guards) : null,
      observed:
        outbound.capture.captured && metricsAnswer && !('error' in metricsAnswer)
          ? observed(
              metricsAnswer.body,
              outbound.source.spiffeId,
              outbound.clusters.map((c) => c.name),
            )
          : [],
      inbound,
      tcp:
        metricsAnswer && !('error' in metricsAnswer)
          ? tcpHealthOf(
              [...parseExposition(metricsAnswer.body, TCP_HEALTH_METRICS)].flatMap(([name, list]) =>
                list.map((x) => ({ name, ...x })),
              ),
              `${src.namespace}/${src.name}`,
              inbound.flatMap((a) =>
                'error' in a.answer || !a.answer.destination.pod ? [] : [a.answer.destination.pod],
              ),
            )
          : null,
      kernel,
    };
    const explanation: Explanation = { ...partial, verdict: verdictOf(partial) };
    stdout.write(values.json ? `${JSON.stringify(explanation, null, 2)}\n` : renderExplanation(explanation));
    return EXIT.OK;
  },
};
