/** `sockmesh explain` as text: one line per stage, tables for routes and endpoints. */
import type { ClusterView, InboundExplanation, Membership } from '../../mesh-agent/explain/types.js';
import { table } from '../table.js';
import type { ExplainKernel, Explanation, InboundAnswer } from './model.js';

const indent = (text: string) =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');

function membershipText(m: Membership): string {
  if (m.pod === null) return 'not a meshed pod (the control plane declares no meshed pod at this address)';
  const cg =
    m.cgroup.id !== null
      ? `cgroup ${m.cgroup.dir?.split('/').at(-1) ?? `id ${m.cgroup.id}`}`
      : `no cgroup found (tried ${m.cgroup.tried.join(', ') || 'nothing'})`;
  const kernel = m.enrolled ? `enrolled in sm_pods (${m.enrolled.mode})` : 'NOT in sm_pods';
  return `meshed, ${m.mtls}; ${cg}, ${kernel}`;
}

function clusterText(c: ClusterView): string {
  const b = c.breaker;
  const use = (k: keyof typeof b.limits) => `${k}=${b.inUse ? `${b.inUse[k]}/` : ''}${b.limits[k]}`;
  const outlier = c.outlier
    ? `outlier detection: ${c.outlier.consecutive5xx} consecutive 5xx eject for ${c.outlier.baseEjectionTimeMs / 1000}s (max ${c.outlier.maxEjectionPercent}%), ejected now: ${c.outlier.ejected.join(', ') || 'none'}`
    : 'outlier detection: off';
  const rows = c.endpoints.map((e) => [
    e.address,
    e.pod ?? '-',
    e.node ?? '-',
    e.path === 'same-node' ? 'same node' : `tunnel ${e.tunnel ?? '?'}`,
    e.spiffeId ?? '-',
    !e.healthy ? 'unhealthy' : e.ejected ? 'ejected' : e.candidate ? 'picked from' : 'standby (other node)',
  ]);
  return [
    `cluster ${c.name}: ${c.lbPolicy}, ${c.locality}`,
    `  breaker${b.open.length ? ` OPEN (${b.open.join(', ')})` : ''} (in use/limit): ${use('connections')} ${use('pending')} ${use('requests')} ${use('retries')}; ${outlier}`,
    indent(table(['ENDPOINT', 'POD', 'NODE', 'PATH', 'IDENTITY', 'CHOICE'], rows)),
  ].join('\n');
}

function inboundText(a: InboundAnswer): string {
  if ('error' in a.answer) return `${a.endpoint} (${a.node}): no answer: ${a.answer.error}`;
  const i: InboundExplanation = a.answer;
  const z = i.authorization;
  const who = i.destination.pod ?? i.destination.ip;
  const where = `${who} on ${a.node} (${i.destination.mtls ?? 'not meshed'}, ${i.destination.protocol})`;
  if (i.plaintext && i.plaintext.verdict !== 'via-agent')
    return `${where}: no policy is reached: plaintext ${i.plaintext.verdict === 'delivered' ? 'delivered as is' : 'dropped in the kernel'}`;
  const allowRules = z.policies.filter((p) => p.action === 'ALLOW').map((p) => p.name);
  const decided = z.allowed
    ? `ALLOW${z.policy ? ` by ${z.policy}` : z.reason === 'no-policies' ? ' (no policy applies)' : ''}`
    : z.reason === 'no-allow-match'
      ? `DENY: no ALLOW rule (${allowRules.join(', ')}) matches ${i.caller.principal ?? 'an unauthenticated caller'}`
      : `DENY by ${z.policy ?? z.reason}`;
  const policies = z.policies.length
    ? `; policies: ${z.policies.map((p) => `${p.name} ${p.action}${p.layer === 'http' ? ' (per request)' : ''}`).join(', ')}`
    : '';
  const plain = i.plaintext ? '; plaintext taken by the agent (permissive)' : '';
  return `${where}: ${decided}${policies}${plain}`;
}

export function renderExplanation(e: Explanation): string {
  const o = e.outbound;
  const r = e.request;
  const headers = Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`);
  const out: string[] = [];
  out.push(
    `${e.source.pod} -> ${e.destination.name} (${e.destination.ip}:${e.destination.port}) ${r.method} ${r.path}${headers.length ? ` [${headers.join(', ')}]` : ''}`,
  );
  out.push(
    `source:   ${e.source.pod} ${e.source.ip} on ${e.source.node}: ${membershipText(o.source)}${e.source.namespace.meshed ? '' : `; namespace ${e.source.namespace.name} has no sockmesh.io/mesh=enabled label`}`,
  );
  if (o.source.spiffeId)
    out.push(
      `identity: ${o.source.spiffeId} (${o.source.svid ? `SVID serial ${o.source.svid.serial.slice(0, 16)}, the tunnel's client certificate` : 'NO SVID held by the agent'})`,
    );
  out.push(`capture:  ${o.capture.captured ? 'yes' : 'no'}: ${o.capture.reason}`);
  if (o.capture.captured) {
    const l = o.listener;
    out.push(
      l.kind === 'passthrough'
        ? `listener: none (${l.reason})${o.meshedPodAt ? `; ${o.destination.ip} is a meshed pod: still mTLS to it` : ''}`
        : `listener: ${l.listener} chain ${l.chain} (${l.kind})`,
    );
    if (o.http && l.kind !== 'passthrough') {
      out.push(`routes:   ${o.http.routeConfig}, virtual host ${o.http.virtualHost ?? '(none)'}`);
      out.push(
        indent(
          table(
            ['ROUTE', 'MATCH', 'RESULT'],
            o.http.routes.map((rt) => [
              rt.httpRoute ? `${routeLabel(rt.httpRoute, rt.routeKind)} rule ${rt.rule}` : rt.name,
              rt.match,
              rt.result === 'no-match' ? `no match: ${rt.mismatch}` : rt.result.replace('-', ' '),
            ]),
          ),
        ),
      );
      if (o.http.outcome.kind === 'respond')
        out.push(`          -> answered ${o.http.outcome.status} (${o.http.outcome.reason})`);
    }
    if (e.split) {
      const s = e.split;
      const served = s.served.map((t) => `${t.service} ${Math.round(t.share * 100)}%`).join(', ');
      const written = s.written.map((w) => `${w.service} ${w.weight}`).join(', ');
      out.push(`split:    served ${served} (written ${written})`);
      if (s.guard)
        out.push(
          `guard:    ${s.guard.name}: ${{ Progressing: 'progressing', Promoted: 'promoted', RolledBack: 'rolled back' }[s.guard.phase]}, canary ${s.guard.canary} at ${s.guard.weight}%${s.guard.lastTransition ? `; ${s.guard.lastTransition.message}` : ''}`,
        );
    } else if (o.http?.outcome.kind === 'forward') {
      out.push(`target:   ${o.http.outcome.targets.map((t) => t.service).join(', ')}`);
    }
    if (e.observed.length)
      out.push(
        `observed: from ${o.source.spiffeId} on ${o.node}: ${e.observed.map((x) => `${x.cluster.split('|')[3]?.split('.')[0] ?? x.cluster} requests=${x.requests}`).join(' ')}`,
      );
    for (const c of o.clusters) out.push(clusterText(c));
  }
  for (const h of e.tcp ?? [])
    out.push(
      `tcp:      ${e.source.pod} -> ${h.destination} (${h.leg}, kernel): srtt ${h.srttUs === null ? '-' : `${(h.srttUs / 1000).toFixed(2)}ms`}, rttvar ${h.rttvarUs === null ? '-' : `${(h.rttvarUs / 1000).toFixed(2)}ms`}, connections=${h.connections} retransmits=${h.retransmits} rtos=${h.rtos} failures=${h.failures}`,
    );
  if (e.kernel) out.push(`kernel:   ${kernelText(e.kernel)}`);
  for (const a of e.inbound) out.push(`authz:    ${inboundText(a)}`);
  out.push(`verdict:  ${e.verdict.outcome}: ${e.verdict.summary}`);
  return `${out.join('\n')}\n`;
}

/** A route as `sockmesh canary` names it too: a GRPCRoute says so, an HTTPRoute is the default. */
function routeLabel(route: string, kind: string | null): string {
  return kind === 'GRPCRoute' ? `${route} (GRPCRoute)` : route;
}

function kernelText(k: ExplainKernel): string {
  const d = k.decision;
  const where = `${k.hook} on ${k.node}`;
  if (!d) return `${where}: not decided in the kernel: ${k.note}`;
  if (d.verdict === 'pass') return `${where}: pass to the proxy (${d.reason}, generation ${d.generation})`;
  return `${where}: ${d.verdict.toUpperCase()} by ${d.policy} (${d.rule} rule, generation ${d.generation})${k.note ? `; ${k.note}` : ''}`;
}
