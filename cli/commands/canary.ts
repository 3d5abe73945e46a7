import { LocalMesh } from '../../lab/mesh.js';
import { SockmeshError } from '../../lib/errors.js';
import { requestFailed } from '../../mesh-agent/telemetry/outcome.js';
import type { CanaryStatus } from '../../xds/server/canary.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { table } from '../table.js';
import { currentBed } from './lab.js';

interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition -> samples of the wanted metric names. */
export function parseExposition(text: string, names: ReadonlySet<string>): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.lastIndexOf(' ');
    const name = brace >= 0 ? line.slice(0, brace) : line.slice(0, space);
    if (!names.has(name)) continue;
    const labels: Record<string, string> = {};
    if (brace >= 0) {
      const body = line.slice(brace + 1, line.lastIndexOf('}'));
      for (const m of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
        labels[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
    }
    const list = out.get(name) ?? [];
    out.set(name, list);
    list.push({ labels, value: Number(line.slice(space + 1)) });
  }
  return out;
}

export interface BackendStats {
  backend: string;
  weight: number;
  requests: number;
  share: number;
  successRate: number | null;
  p50: number | null;
  p99: number | null;
}

interface Counts {
  requests: Map<string, number>;
  ok: Map<string, number>;
  buckets: Map<string, Map<number, number>>;
}

const REQUESTS = 'sockmesh_requests_total';
const BUCKETS = 'sockmesh_request_duration_milliseconds_bucket';

function collect(texts: string[], clusters: ReadonlyMap<string, string>): Counts {
  const c: Counts = { requests: new Map(), ok: new Map(), buckets: new Map() };
  for (const text of texts) {
    const m = parseExposition(text, new Set([REQUESTS, BUCKETS]));
    for (const s of m.get(REQUESTS) ?? []) {
      const b = clusters.get(s.labels.destination_cluster ?? '');
      if (!b || s.labels.reporter !== 'source') continue;
      c.requests.set(b, (c.requests.get(b) ?? 0) + s.value);
      if (!requestFailed(s.labels)) c.ok.set(b, (c.ok.get(b) ?? 0) + s.value);
    }
    for (const s of m.get(BUCKETS) ?? []) {
      const b = clusters.get(s.labels.destination_cluster ?? '');
      if (!b || s.labels.reporter !== 'source') continue;
      const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le);
      const h = c.buckets.get(b) ?? new Map<number, number>();
      c.buckets.set(b, h);
      h.set(le, (h.get(le) ?? 0) + s.value);
    }
  }
  return c;
}

/** Quantile from cumulative bucket deltas: the upper bound of the bucket holding it (as histogram_quantile, without interpolation). */
function quantile(
  before: Map<number, number> | undefined,
  after: Map<number, number> | undefined,
  q: number,
): number | null {
  if (!after) return null;
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Number.POSITIVE_INFINITY) ?? 0) - (before?.get(Number.POSITIVE_INFINITY) ?? 0);
  if (total <= 0) return null;
  for (const le of bounds) {
    const n = (after.get(le) ?? 0) - (before?.get(le) ?? 0);
    if (n >= q * total) return le;
  }
  return null;
}

/** Per-backend figures over the window between two scrapes of every agent. */
export function canaryWindow(
  before: string[],
  after: string[],
  backends: ReadonlyArray<{ name: string; cluster: string; weight: number }>,
): BackendStats[] {
  const clusters = new Map(backends.map((b) => [b.cluster, b.name]));
  const a = collect(before, clusters);
  const b = collect(after, clusters);
  const delta = (m1: Map<string, number>, m2: Map<string, number>, k: string) =>
    Math.max(0, (m2.get(k) ?? 0) - (m1.get(k) ?? 0));
  const total = backends.reduce((s, be) => s + delta(a.requests, b.requests, be.name), 0);
  return backends.map((be) => {
    const requests = delta(a.requests, b.requests, be.name);
    return {
      backend: be.name,
      weight: be.weight,
      requests,
      share: total === 0 ? 0 : requests / total,
      successRate: requests === 0 ? null : delta(a.ok, b.ok, be.name) / requests,
      p50: quantile(a.buckets.get(be.name), b.buckets.get(be.name), 0.5),
      p99: quantile(a.buckets.get(be.name), b.buckets.get(be.name), 0.99),
    };
  });
}

function render(route: string, windowS: number, stats: BackendStats[]): string {
  const sumW = stats.reduce((s, x) => s + x.weight, 0) || 1;
  const fmt = (v: number | null, unit: string) =>
    v === null ? '-' : v === Number.POSITIVE_INFINITY ? `>max` : `${v}${unit}`;
  return `canary ${route}: last ${windowS}s, ${stats.reduce((s, x) => s + x.requests, 0)} requests\n${table(
    ['BACKEND', 'WEIGHT', 'SHARE', 'REQUESTS', 'SUCCESS', 'P50', 'P99'],
    stats.map((s) => [
      s.backend,
      `${((100 * s.weight) / sumW).toFixed(0)}%`,
      `${(100 * s.share).toFixed(1)}%`,
      String(s.requests),
      s.successRate === null ? '-' : `${(100 * s.successRate).toFixed(1)}%`,
      fmt(s.p50, 'ms'),
      fmt(s.p99, 'ms'),
    ]),
  )}`;
}

/** One line per CanaryGuard, then each guard's last decision with its figures. */
export function renderGuards(guards: readonly CanaryStatus[]): string {
  if (guards.length === 0) return 'no CanaryGuard declared\n';
  const pct = (v: number | null) => (v === null ? '-' : `${Math.round(v * 10) / 10}%`);
  // Beyond the last bucket bound p99 is Infinity, which JSON (the admin endpoint) carries as null.
  const ms = (v: number | null) => (v === null ? '-' : v === Number.POSITIVE_INFINITY ? '>max' : `${v}ms`);
  const state = { Progressing: 'progressing', Promoted: 'promoted', RolledBack: 'rolled back' } as const;
  const head = table(
    ['GUARD', 'ROUTE', 'CANARY', 'STATE', 'WEIGHT', 'STEP', 'LAST DECISION'],
    guards.map((g) => [
      g.name,
      g.routeKind === 'GRPCRoute' ? `${g.route} (GRPCRoute)` : g.route,
      g.canary,
      state[g.phase],
      `${g.weight}%`,
      g.steps.length === 0 ? '-' : `${g.step + 1}/${g.steps.length} (${g.steps.join(',')})`,
      g.lastDecision ? `${g.lastDecision.action} ${g.lastDecision.reason}` : '(none yet)',
    ]),
  );
  const details = guards.flatMap((g) => {
    const d = g.lastDecision;
    const lines: string[] = [];
    if (g.lastTransition)
      lines.push(
        `${g.name}: ${g.lastTransition.from}% -> ${g.lastTransition.to}% at ${g.lastTransition.at}: ${g.lastTransition.message}`,
      );
    if (d)
      lines.push(
        `${g.name}: last decision ${d.at}: ${d.message}; canary ${d.canary.requests} requests, success ${pct(d.canary.successRate)}, p99 ${ms(d.canary.p99)}; baseline ${d.baseline.requests} requests, success ${pct(d.baseline.successRate)}, p99 ${ms(d.baseline.p99)}`,
      );
    return lines;
  });
  return `${head}${details.map((l) => `${l}\n`).join('')}`;
}

export const canaryCommand: Command = {
  usage: `Usage: sockmesh canary [--json] [--run <id>]
       sockmesh canary <namespace>/<route> [--interval <s>] [--once] [--json] [--run <id>]

Without a route: every CanaryGuard the control plane runs (docs/canary.md):
state (progressing, promoted, rolled back), step and weight in force, the
last decision and its reason with the measured success rate, p99 and request
counts of canary and baseline.

With a route:

Watches the route's backends as the callers' node agents see them (the
sockmesh_requests_total and request duration metrics, reporter=source): share of
requests next to the configured weight, success rate (non-5xx) and p50/p99
latency (upper bucket bound), refreshed in place every --interval seconds
(default 2). --once prints one window and exits (for scripts).

Exit codes: 0 ok, 2 usage, 3 no mesh / unknown route.`,
  async run({ argv, stdout }) {
    const { values, positionals } = parseCommandArgs(argv, {
      interval: { type: 'string' },
      once: { type: 'boolean' },
      json: { type: 'boolean' },
      run: { type: 'string' },
    });
    if (positionals.length === 0) {
      const mesh = await LocalMesh.attach(currentBed(values.run));
      const admin = mesh.admin();
      try {
        const { guards } = await admin.canary();
        stdout.write(values.json ? `${JSON.stringify({ guards }, null, 2)}\n` : renderGuards(guards));
      } finally {
        await admin.close();
      }
      return EXIT.OK;
    }
    const ref = positionals[0]?.match(/^([a-z0-9-]+)\/([a-z0-9-]+)$/);
    if (!ref)
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        'expected <namespace>/<route> (an HTTPRoute or GRPCRoute), e.g. shop/reviews',
      );
    const interval = Number(values.interval ?? 2);
    if (!(interval >= 0.5 && interval <= 3600))
      throw new SockmeshError('SOCKMESH_E_USAGE', `--interval must be 0.5 to 3600 seconds`);
    const mesh = await LocalMesh.attach(currentBed(values.run));
    const route = mesh.model.httpRoutes.find((r) => r.namespace === ref[1] && r.name === ref[2]);
    if (!route) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no HTTPRoute or GRPCRoute ${ref[1]}/${ref[2]}`, {
        hint: `known: ${mesh.model.httpRoutes.map((r) => `${r.namespace}/${r.name}`).join(', ') || '(none)'}`,
      });
    }
    // The weighted rule: the last rule with several backends, else the first.
    const rule = [...route.rules].reverse().find((r) => r.backends.length > 1) ?? route.rules[0];
    const backends = (rule?.backends ?? []).map((b) => ({
      name: `${b.service.name}`,
      cluster: `outbound|${b.port}||${b.service.name}.${b.service.namespace}.svc.${mesh.model.clusterDomain}`,
      weight: b.weight,
    }));
    const scrape = () =>
      Promise.all(mesh.bed.nodes.map(async (n) => (await mesh.agentGet(n.name, '/metrics')).body));
    let before = await scrape();
    let lines = 0;
    for (;;) {
      await new Promise((r) => setTimeout(r, interval * 1000));
      const after = await scrape();
      const stats = canaryWindow(before, after, backends);
      before = after;
      const text = values.json
        ? `${JSON.stringify({ route: `${ref[1]}/${ref[2]}`, windowSeconds: interval, backends: stats })}\n`
        : render(`${ref[1]}/${ref[2]}`, interval, stats);
      // Refresh in place on a terminal; append otherwise (pipes, logs).
      if ((stdout as NodeJS.WriteStream).isTTY && lines > 0 && !values.json)
        stdout.write(`\x1b[${lines}A\x1b[J`);
      stdout.write(text);
      lines = text.split('\n').length - 1;
      if (values.once) return EXIT.OK;
    }
  },
};
