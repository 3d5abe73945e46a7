/** Renders a benchmark run as Markdown tables (the same text goes to the terminal and to results/*.md). */
import type { Report } from './types.js';

const f = (v: number | null | undefined, digits = 2): string =>
  v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(digits);
const signed = (v: number | null | undefined, digits = 2): string =>
  v === null || v === undefined || Number.isNaN(v) ? '–' : `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`;

function table(head: string[], align: ('l' | 'r')[], rows: string[][]): string {
  return [
    `| ${head.join(' | ')} |`,
    `| ${align.map((a) => (a === 'r' ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

export function renderTables(r: Report): string {
  const out: string[] = [];
  const { results: res, params: p } = r;

  if (res.brokenPaths?.length) {
    out.push(`**Mesh paths that did not answer before the run:** ${res.brokenPaths.join('; ')}\n`);
  }
  if (r.verdicts.length > 0) {
    out.push('### Where it stands against the targets (issue #8)\n');
    out.push(
      table(
        ['target', 'aim', 'measured', 'met', 'published reference'],
        ['l', 'r', 'r', 'l', 'l'],
        r.verdicts.map((v) => [
          v.what,
          v.target,
          `${f(v.measured, v.unit === 'MiB' ? 1 : 3)} ${v.unit}`,
          v.met === null ? '–' : v.met ? 'yes' : '**no**',
          v.reference ?? '',
        ]),
      ),
    );
  }

  if (res.agentProcesses?.length) {
    const by = res.agentProcesses.map((a) => `${a.agent} ${a.role} ${f(a.rssMiB, 0)}`).join(', ');
    out.push(`\nAgent processes right after start (RSS MiB): ${by}.\n`);
  }
  if (res.agentIdleMemoryMiB) {
    const idle = Object.entries(res.agentIdleMemoryMiB)
      .map(([name, m]) => `${name} ${f(m.rss, 0)} (anonymous ${f(m.anon, 0)}, file-backed ${f(m.file, 0)})`)
      .join(', ');
    out.push(
      `\nAgents after ${res.agentIdleSettleSeconds ?? '?'} s idle, RSS MiB: ${idle}. File-backed pages are mostly the node executable's text, shared by every Node process on the node; anonymous memory is the agent's own.\n`,
    );
  }
  if (res.http) {
    out.push(
      `\n### 2. HTTP/1.1, 1 KiB responses, ${p.rate} rps open loop, cross-node (${p.httpSeconds} s after ${p.warmup} s warm-up, ${p.httpConnections} connections; median of ${p.rounds} round(s); agent workers: ${p.agentWorkers}; agents run from ${p.agentsRunFrom}${p.agentNodeFlags ? ` with \`${p.agentNodeFlags}\`` : ''}${p.agentAccelerate ? `; sk_msg acceleration: ${p.agentAccelerate}` : ''})\n`,
    );
    out.push(
      'Latency in ms from the *intended* send time (coordinated-omission safe); "added" is against the direct path of this run. CPU is per proxy process, in CPU-seconds per 1 000 requests (= vCPU at 1 000 rps).\n',
    );
    out.push(
      table(
        [
          'path',
          'p50',
          'p90',
          'p99',
          'p99.9',
          'added p50',
          'added p90',
          'added p99',
          'errors',
          'proxy CPU-s / 1k req',
          'proxy RSS MiB',
        ],
        ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l', 'l'],
        res.http.map((h) => [
          h.error ? `${h.label} (a round failed: ${h.error})` : h.label,
          f(h.p50, 3),
          f(h.p90, 3),
          f(h.p99, 3),
          f(h.p999, 3),
          signed(h.addedP50, 3),
          signed(h.addedP90, 3),
          signed(h.addedP99, 3),
          String(h.errors),
          h.proxies.map((x) => `${x.name}: ${f(x.cpuSecPer1kReq, 3)}`).join('<br>') || '–',
          h.proxies.map((x) => `${x.name}: ${f(x.rssMiB, 0)}`).join('<br>') || '–',
        ]),
      ),
    );
  }

  if (res.throughput) {
    out.push(
      `\n### 3. Closed-loop throughput (wrk -t1 -c${p.wrkConnections}, ${p.wrkSeconds} s, 1 KiB responses)\n`,
    );
    out.push(
      table(
        [
          'path',
          'req/s',
          'vs direct',
          'wrk p50 ms',
          'wrk p99 ms',
          'errors',
          'proxy cores used',
          'req/s per proxy core',
        ],
        ['l', 'r', 'r', 'r', 'r', 'r', 'l', 'r'],
        res.throughput.map((t) => [
          t.label,
          f(t.rps, 0),
          t.ratio === null ? '1 (baseline)' : `${f(t.ratio, 2)}x`,
          f(t.p50Ms, 2),
          f(t.p99Ms, 2),
          String(t.errors),
          t.proxies.map((x) => `${x.name}: ${f(x.cores, 2)}`).join('<br>') || '–',
          f(t.rpsPerProxyCore, 0),
        ]),
      ),
    );
  }

  if (res.bulk) {
    out.push(`\n### 4. Long-lived bulk TCP (one connection, 64 KiB writes, ${p.bulkSeconds} s)\n`);
    out.push(
      table(
        ['path', 'Gbit/s', 'vs direct', 'proxy cores used'],
        ['l', 'r', 'r', 'l'],
        res.bulk.map((b) => [
          b.path,
          b.error ? `failed: ${b.error}` : f(b.gbps, 2),
          b.error ? '–' : b.ratio === null ? '1 (baseline)' : `${f(b.ratio, 2)}x`,
          b.proxies.map((x) => `${x.name}: ${f(x.cores, 2)}`).join('<br>') || '–',
        ]),
      ),
    );
  }

  if (res.scale) {
    const s = res.scale;
    out.push(
      `\n### 6. One agent, ${s.idleConnections} idle + ${s.activeConnections} active connections (L4, cross-node; active ones echo 100 B once a second)\n`,
    );
    out.push(
      `Opened in ${f(s.openSeconds, 1)} s, ${s.failed} failed; active echo RTT p50 ${f(s.activeRttMs.p50, 2)} ms, p99 ${f(s.activeRttMs.p99, 2)} ms; ${s.answered}/${s.sent} answered.\n`,
    );
    out.push(
      table(
        [
          'agent',
          'RSS before MiB',
          `RSS ${s.idleConnections} idle MiB`,
          'of which own / shared MiB',
          'RSS + active MiB',
          'CPU idle (cores)',
          'CPU active (cores)',
        ],
        ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
        s.agents.map((a) => [
          a.name,
          f(a.rssBeforeMiB, 1),
          f(a.rssIdleMiB, 1),
          a.rssIdleOwnMiB === undefined ? '–' : `${f(a.rssIdleOwnMiB, 1)} / ${f(a.rssIdleSharedMiB ?? 0, 1)}`,
          f(a.rssActiveMiB, 1),
          f(a.idleCores, 3),
          f(a.activeCores, 3),
        ]),
      ),
    );
  }

  if (res.hop) {
    out.push('\n### 1. Same-node hop (bench/sockops-hop.ts)\n');
    out.push(
      table(
        ['workers', 'path', 'RTT p50 µs', 'RTT p99 µs', 'Gbit/s (64 KiB writes)'],
        ['l', 'l', 'r', 'r', 'r'],
        res.hop.rows.map((h) => [
          h.impl === 'c' ? 'C (hop.c)' : 'Node',
          h.path,
          f(h.p50us, 1),
          f(h.p99us, 1),
          f(h.gbps, 2),
        ]),
      ),
    );
  }

  if (res.xds) {
    out.push(
      '\n### 5. Control plane: file edit to the last ADS client receiving the push (bench/xds-push.ts, median ms)\n',
    );
    out.push(
      table(
        [
          'services',
          'ADS clients',
          'translate',
          'EDS push',
          'RDS push (HTTPRoute edit)',
          'new Service push (CDS+LDS)',
          'CP RSS MiB',
        ],
        ['r', 'r', 'r', 'r', 'r', 'r', 'r'],
        res.xds.rows.map((x) => [
          String(x.services),
          String(x.clients),
          f(x.translateMs, 0),
          f(x.edsPushMs, 0),
          f(x.rdsPushMs, 0),
          f(x.newServicePushMs ?? x.cdsPushMs, 0),
          String(x.rssMiB),
        ]),
      ),
    );
  }
  return `${out.join('\n')}\n`;
}

export function renderMarkdown(r: Report): string {
  const m = r.machine;
  return `# sockmesh benchmarks${r.quick ? ' (quick run)' : ''}

Measured ${r.startedAt} at commit ${m.commit}, on Linux ${m.kernel}, ${m.nproc} x ${m.cpu}, Node ${m.node}, HAProxy ${m.haproxy || 'unknown'}
(load average at start ${m.loadavgAtStart.join(' / ')}). Everything runs on this one shared ${m.nproc}-core VM:
load generator, servers, both agents (or both haproxies) compete for the same cores, so
absolute figures are noisy; compare rows of the same run.

${renderTables(r)}
Reproduce (root, after \`npm run build:bpf && npm run build:addon\`):

    ${r.command}
`;
}

export function renderTerminal(r: Report): string {
  return renderTables(r);
}
