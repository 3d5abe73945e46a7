/**
 * `npm run bench`: every scenario of issue #8 in one run, side by side, on one fresh local mesh.
 *
 *   node --import tsx bench/run.ts [--quick] [--only hop,http,throughput,bulk,xds,scale,upgrade,kube-scale]
 *                                  [--agent-workers N] [--dist|--src] [--rate 1000]
 *                                  [--paths sockmesh-l4,sockmesh-l7,haproxy-l4,haproxy-l7]
 *                                  [--rounds N] [--http-seconds N] [--agent-node-flags="--flag ..."]
 *                                  [--inbound-l7]  (an L7 policy on the servers: the destination parses)
 *                                  [--accelerate]   (agents splice same-node hops with sk_msg)
 *
 *   1 hop         same-node hop, sk_msg on/off vs TCP   (runs bench/sockops-hop.ts)
 *   2 http        HTTP/1.1 1 KiB at a fixed 1000 rps, open loop: direct, sockmesh L4 and L7, HAProxy L4 and L7
 *   3 throughput  closed loop (wrk) for the same paths: ratio to direct, per proxy core
 *   4 bulk        one long-lived TCP stream: direct, sockmesh tunnel, HAProxy
 *   5 xds         control plane push times                (runs bench/xds-push.ts)
 *   6 scale       one agent with 10 000 idle + 1 000 active connections: RSS and CPU
 *   kube-scale    the control plane on a real kube-apiserver, 1 000 Services / 5 000 Pods / 100 HTTPRoutes
 *                 (runs bench/kube-scale.ts; its own bench/results/kube-scale.{json,md})
 *
 * Writes bench/results/bench.{json,md} (bench-quick.* with --quick). Root only: it builds network
 * namespaces, loads BPF and runs haproxy in the node namespaces; everything is torn down at the end.
 */
import { spawn } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LocalMesh } from '../lab/mesh.js';
import {
  agentGroups,
  agentsForBench,
  CLIENT,
  execIn,
  MANIFESTS,
  NODE,
  SERVER,
  startServers,
  VIP,
  WORKLOADS,
  waitServers,
  withFds,
} from './lib/bed.js';
import { type HaproxyPair, startHaproxyPair } from './lib/haproxy.js';
import {
  CpuWindow,
  cmdline,
  comm,
  groupMemoryMiB,
  groupRssMiB,
  type ProcGroup,
  type ProcUsage,
  rssMiB,
} from './lib/proc.js';
import { renderMarkdown, renderTerminal } from './lib/report.js';
import { type Verdict, verdictsFor } from './lib/targets.js';
import type { BulkRow, HttpRow, Report, Results, ScaleResult, ThroughputRow } from './lib/types.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');
const RESULTS = join(HERE, 'results');
const ALL = ['hop', 'http', 'throughput', 'bulk', 'xds', 'scale', 'upgrade', 'kube-scale'] as const;
type Scenario = (typeof ALL)[number];

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    rate: { type: 'string', default: '1000' },
    'agent-workers': { type: 'string' },
    dist: { type: 'boolean', default: false },
    src: { type: 'boolean', default: false },
    paths: { type: 'string' },
    rounds: { type: 'string' },
    'agent-node-flags': { type: 'string' },
    accelerate: { type: 'boolean', default: false },
    'http-seconds': { type: 'string' },
    'inbound-l7': { type: 'boolean', default: false },
  },
});
const QUICK = values.quick;

/**
 * --inbound-l7: the bench manifests plus an AuthorizationPolicy on the server pods' HTTP port that
 * reads the method (DENY DELETE on 8080; the load only sends GET), so the destination node parses
 * every request as it did before the one-L7-hop change: that lever's before/after on the same
 * build. Tied to the port: on a TCP stream (the L4 path's 8081) a DENY with a method would match.
 */
function withInboundL7Policy(): string {
  const dir = join(tmpdir(), `sockmesh-bench-manifests-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(MANIFESTS)) copyFileSync(join(MANIFESTS, f), join(dir, f));
  writeFileSync(
    join(dir, '50-inbound-l7.yaml'),
    [
      'apiVersion: sockmesh.io/v1alpha1',
      'kind: AuthorizationPolicy',
      'metadata: { name: server-no-delete, namespace: bench }',
      'spec:',
      '  selector: { matchLabels: { app: server } }',
      '  action: DENY',
      '  rules:',
      '    - to:',
      '        - ports: [8080]',
      '          methods: [DELETE]',
      '',
    ].join('\n'),
  );
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
/** How long the agents sit idle before their idle memory is read. */
const SETTLE_MS = 30_000;
const only = (values.only?.split(',') ?? [...ALL]).map((s) => s.trim());
for (const s of only) {
  if (!(ALL as readonly string[]).includes(s)) {
    process.stderr.write(`unknown scenario '${s}'; known: ${ALL.join(', ')}\n`);
    process.exit(2);
  }
}
const selected = new Set(only as Scenario[]);

const P = QUICK
  ? {
      rounds: 1,
      httpSeconds: 8,
      warmup: 2,
      wrkSeconds: 5,
      bulkSeconds: 3,
      idle: 10_000,
      active: 1_000,
      activeSeconds: 8,
    }
  : {
      rounds: 3,
      httpSeconds: 20,
      warmup: 3,
      wrkSeconds: 15,
      bulkSeconds: 10,
      idle: 10_000,
      active: 1_000,
      activeSeconds: 20,
    };
if (values.rounds) P.rounds = Number(values.rounds);
if (values['http-seconds']) P.httpSeconds = Number(values['http-seconds']);
const RATE = Number(values.rate);
const HTTP_CONNECTIONS = 16;
const WRK_CONNECTIONS = 32;

const log = (s: string) => process.stderr.write(`[bench] ${s}\n`);

// ---- paths -------------------------------------------------------------------------------------

interface PathDef {
  id: 'direct' | 'sockmesh-l4' | 'sockmesh-l7' | 'haproxy-l4' | 'haproxy-l7';
  label: string;
  client: string;
  url: string;
  /** Which proxy processes carry this path ('' for none). */
  proxies: 'agents' | 'haproxy' | '';
}

/** `--paths a,b`: only these HTTP paths (the direct baseline always runs: everything is relative to it). */
const PATHS = values.paths?.split(',').map((s) => s.trim());

function httpPaths(mesh: LocalMesh, hap: HaproxyPair): PathDef[] {
  return allHttpPaths(mesh, hap).filter((p) => p.id === 'direct' || !PATHS || PATHS.includes(p.id));
}

function allHttpPaths(mesh: LocalMesh, hap: HaproxyPair): PathDef[] {
  const direct = mesh.pod(SERVER.plain).ip;
  return [
    {
      id: 'direct',
      label: 'direct pod to pod',
      client: CLIENT.plain,
      url: `http://${direct}:8080/`,
      proxies: '',
    },
    {
      id: 'sockmesh-l4',
      label: 'sockmesh L4 tunnel',
      client: CLIENT.meshed,
      url: `http://${VIP.l4}:8080/`,
      proxies: 'agents',
    },
    {
      id: 'sockmesh-l7',
      label: 'sockmesh L7 (HTTPRoute)',
      client: CLIENT.meshed,
      url: `http://${VIP.l7}:8080/`,
      proxies: 'agents',
    },
    {
      id: 'haproxy-l4',
      label: 'HAProxy pair, mode tcp',
      client: CLIENT.plain,
      url: `http://${hap.entry.host}:${hap.entry.ports.l4}/`,
      proxies: 'haproxy',
    },
    {
      id: 'haproxy-l7',
      label: 'HAProxy pair, mode http',
      client: CLIENT.plain,
      url: `http://${hap.entry.host}:${hap.entry.ports.l7}/`,
      proxies: 'haproxy',
    },
  ];
}

// ---- the run -----------------------------------------------------------------------------------

interface Ctx {
  mesh: LocalMesh;
  hap: HaproxyPair;
  agents: ProcGroup[];
  haproxies: ProcGroup[];
}

function groupsFor(ctx: Ctx, p: PathDef['proxies']): ProcGroup[] {
  return p === 'agents' ? ctx.agents : p === 'haproxy' ? ctx.haproxies : [];
}

interface OpenLoop {
  requests: number;
  errors: number;
  achievedRps: number;
  latencyMs: Record<string, number | null>;
  serviceMs: Record<string, number | null>;
  sendLagMs: Record<string, number | null>;
}

function firstLine(err: unknown): string {
  const s = err instanceof Error ? err.message : String(err);
  return (
    s
      .split('\n')
      .find((l) => /error|fail/i.test(l))
      ?.trim()
      .slice(0, 300) ?? s.slice(0, 300)
  );
}

function median(xs: number[]): number {
  const v = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2;
}

/** Each round runs every path once, in order, so slow phases of a shared machine hit all paths alike. */
async function scenarioHttp(ctx: Ctx): Promise<HttpRow[]> {
  const paths = httpPaths(ctx.mesh, ctx.hap);
  const runs = new Map<string, { r: OpenLoop; usage: ProcUsage[] }[]>(paths.map((p) => [p.id, []]));
  const failures = new Map<string, string>();
  for (let round = 1; round <= P.rounds; round++) {
    for (const p of paths) {
      log(`http round ${round}/${P.rounds} ${p.id}: ${RATE} rps for ${P.httpSeconds}+${P.warmup}s`);
      const win = new CpuWindow(groupsFor(ctx, p.proxies));
      try {
        const out = await execIn(
          ctx.mesh,
          p.client,
          [
            NODE,
            join(WORKLOADS, 'open-loop.mjs'),
            p.url,
            String(RATE),
            String(P.httpSeconds),
            String(HTTP_CONNECTIONS),
            String(P.warmup),
          ],
          (P.httpSeconds + P.warmup) * 1000 + 60_000,
        );
        runs.get(p.id)?.push({ r: JSON.parse(out) as OpenLoop, usage: win.end() });
      } catch (err) {
        log(`http ${p.id} failed: ${firstLine(err)}`);
        failures.set(p.id, firstLine(err));
      }
    }
  }
  const perRun = RATE * (P.httpSeconds + P.warmup);
  const rows: HttpRow[] = [];
  for (const p of paths) {
    const rs = runs.get(p.id) ?? [];
    const lat = (k: string) => median(rs.map((x) => x.r.latencyMs[k] ?? Number.NaN));
    const direct = rows[0];
    // Paired by round (each round runs direct first, then this path): the median of the differences.
    const directRuns = runs.get('direct') ?? [];
    const added = (k: string) =>
      median(
        rs.map((x, i) => (x.r.latencyMs[k] ?? Number.NaN) - (directRuns[i]?.r.latencyMs[k] ?? Number.NaN)),
      );
    const proxies = (rs[0]?.usage ?? []).map((u, i) => {
      const cpu = rs.reduce((a, x) => a + (x.usage[i]?.cpuSeconds ?? 0), 0);
      const last = rs[rs.length - 1]?.usage[i] ?? u;
      return {
        ...last,
        cpuSeconds: cpu,
        cores: median(rs.map((x) => x.usage[i]?.cores ?? 0)),
        cpuSecPer1kReq: cpu / ((perRun * rs.length) / 1000),
      };
    });
    rows.push({
      path: p.id,
      label: p.label,
      p50: lat('p50'),
      p90: lat('p90'),
      p99: lat('p99'),
      p999: lat('p999'),
      addedP50: direct ? added('p50') : null,
      addedP90: direct ? added('p90') : null,
      addedP99: direct ? added('p99') : null,
      errors: rs.reduce((a, x) => a + x.r.errors, 0),
      achievedRps: median(rs.map((x) => x.r.achievedRps)),
      sendLagP99: median(rs.map((x) => x.r.sendLagMs.p99 ?? Number.NaN)),
      rounds: rs.map((x) => ({
        p50: x.r.latencyMs.p50 ?? null,
        p90: x.r.latencyMs.p90 ?? null,
        p99: x.r.latencyMs.p99 ?? null,
      })),
      proxies,
      ...(failures.has(p.id) ? { error: failures.get(p.id) } : {}),
    });
  }
  return rows;
}

function wrkMs(s: string | undefined): number | null {
  const m = /^([\d.]+)(us|ms|s)$/.exec(s ?? '');
  if (!m) return null;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

async function scenarioThroughput(ctx: Ctx): Promise<ThroughputRow[]> {
  const rows: ThroughputRow[] = [];
  for (const p of httpPaths(ctx.mesh, ctx.hap)) {
    log(`throughput ${p.id}: wrk -c${WRK_CONNECTIONS} ${P.wrkSeconds}s`);
    const win = new CpuWindow(groupsFor(ctx, p.proxies));
    let out = '';
    try {
      out = await execIn(
        ctx.mesh,
        p.client,
        ['wrk', '-t1', `-c${WRK_CONNECTIONS}`, `-d${P.wrkSeconds}s`, '--latency', p.url],
        P.wrkSeconds * 1000 + 60_000,
      );
    } catch (err) {
      log(`throughput ${p.id} failed: ${firstLine(err)}`);
    }
    const usage = win.end();
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN);
    const errs = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
    const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const errors = Number(errs?.[1] ?? 0) + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
    const cores = usage.reduce((a, u) => a + u.cores, 0);
    rows.push({
      path: p.id,
      label: p.label,
      rps,
      ratio: rows[0] ? rps / rows[0].rps : null,
      p50Ms: wrkMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
      p99Ms: wrkMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
      errors,
      proxies: usage,
      rpsPerProxyCore: usage.length > 0 && cores > 0 ? rps / cores : null,
    });
  }
  return rows;
}

async function scenarioBulk(ctx: Ctx): Promise<BulkRow[]> {
  const paths = [
    {
      path: 'direct',
      client: CLIENT.plain,
      host: ctx.mesh.pod(SERVER.plain).ip,
      port: 5201,
      proxies: '' as const,
    },
    { path: 'sockmesh-l4', client: CLIENT.meshed, host: VIP.bulk, port: 5201, proxies: 'agents' as const },
    {
      path: 'haproxy-l4',
      client: CLIENT.plain,
      host: ctx.hap.entry.host,
      port: ctx.hap.entry.ports.bulk,
      proxies: 'haproxy' as const,
    },
  ];
  const rows: BulkRow[] = [];
  for (const p of paths) {
    log(`bulk ${p.path}: ${P.bulkSeconds}s`);
    const win = new CpuWindow(groupsFor(ctx, p.proxies));
    const base = rows[0]?.gbps;
    try {
      const out = await execIn(
        ctx.mesh,
        p.client,
        [NODE, join(WORKLOADS, 'bulk.mjs'), p.host, String(p.port), String(P.bulkSeconds)],
        P.bulkSeconds * 1000 + 60_000,
      );
      const r = JSON.parse(out) as { gbps: number };
      rows.push({ path: p.path, gbps: r.gbps, ratio: base ? r.gbps / base : null, proxies: win.end() });
    } catch (err) {
      // One failed path (e.g. the client's write failing) must not lose the rest of the run.
      log(`bulk ${p.path} failed: ${firstLine(err)}`);
      rows.push({ path: p.path, gbps: Number.NaN, ratio: null, proxies: win.end(), error: firstLine(err) });
    }
  }
  return rows;
}

async function scenarioScale(ctx: Ctx): Promise<ScaleResult> {
  const { mesh, agents } = ctx;
  const before = agents.map(groupRssMiB);
  log(`scale: opening ${P.idle} idle connections through the mesh`);
  const child = mesh.bed.spawn(
    mesh.pod(CLIENT.meshed),
    withFds([
      NODE,
      join(WORKLOADS, 'conns.mjs'),
      VIP.echo,
      '7000',
      String(P.idle),
      String(P.active),
      '1000',
      String(P.activeSeconds),
    ]),
  );
  const errText: string[] = [];
  child.stderr?.on('data', (b: Buffer) => errText.push(b.toString()));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async (phase: string) => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`conns.mjs ended before '${phase}': ${errText.join('').slice(-1000)}`);
    const o = JSON.parse(String(value)) as Record<string, unknown>;
    if (o.phase !== phase) throw new Error(`expected phase ${phase}, got ${String(value)}`);
    return o;
  };
  try {
    const idle = await next('idle');
    log(
      `scale: ${String(idle.open)} open (${String(idle.failed)} failed) in ${String(idle.seconds)}s; holding`,
    );
    await new Promise((r) => setTimeout(r, 2000));
    const idleWin = new CpuWindow(agents);
    await new Promise((r) => setTimeout(r, 5000));
    const idleUse = idleWin.end();
    const idleMemory = agents.map(groupMemoryMiB);
    child.stdin?.write('next\n');
    const act = await next('active');
    log(`scale: ${String(act.open)} active connections, ${P.activeSeconds}s`);
    const activeWin = new CpuWindow(agents);
    const done = await next('done');
    const activeUse = activeWin.end();
    const rtt = done.rttMs as { p50: number | null; p99: number | null };
    return {
      idleConnections: Number(idle.open),
      activeConnections: Number(act.open),
      openSeconds: Number(idle.seconds),
      failed: Number(idle.failed) + Number(act.failed),
      activeRttMs: rtt,
      answered: Number(done.answered),
      sent: Number(done.sent),
      agents: agents.map((g, i) => ({
        name: g.name,
        rssBeforeMiB: before[i] ?? 0,
        rssIdleMiB: idleUse[i]?.rssMiB ?? 0,
        rssIdleOwnMiB: idleMemory[i]?.anon ?? 0,
        rssIdleSharedMiB: idleMemory[i]?.file ?? 0,
        rssActiveMiB: activeUse[i]?.rssMiB ?? 0,
        idleCores: idleUse[i]?.cores ?? 0,
        activeCores: activeUse[i]?.cores ?? 0,
      })),
    };
  } finally {
    child.kill('SIGKILL');
  }
}

// ---- scenarios that are their own scripts ------------------------------------------------------

/** Runs one of the existing bench scripts; in quick mode its own recorded results are kept as they were. */
async function runScript(name: string, args: string[]): Promise<unknown> {
  const files = [join(RESULTS, `${name}.json`), join(RESULTS, `${name}.md`)];
  const saved = files.filter(existsSync).map((f) => {
    copyFileSync(f, `${f}.keep`);
    return f;
  });
  try {
    const argv = ['--import', 'tsx', join(HERE, `${name}.ts`), ...args];
    log(`${name}: node ${argv.slice(2).join(' ')}`);
    const code = await new Promise<number | null>((resolve, reject) => {
      const c = spawn(NODE, argv, { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
      c.on('error', reject);
      c.on('close', resolve);
    });
    if (code !== 0) throw new Error(`bench/${name}.ts exited with ${code}`);
    return JSON.parse(readFileSync(files[0] ?? '', 'utf8'));
  } finally {
    for (const f of saved) {
      if (QUICK) copyFileSync(`${f}.keep`, f);
      rmSync(`${f}.keep`, { force: true });
    }
  }
}

// ---- main --------------------------------------------------------------------------------------

function agentsRunFrom(): 'dist' | 'src' {
  if (values.dist && values.src) {
    process.stderr.write('--dist and --src exclude each other\n');
    process.exit(2);
  }
  return agentsForBench({ dist: values.dist, src: values.src }, log);
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const args = process.argv.slice(2).join(' ');
  const command =
    process.env.npm_lifecycle_event === 'bench'
      ? `npm run bench${args ? ` -- ${args}` : ''}`
      : `node --import tsx bench/run.ts${args ? ` ${args}` : ''}`;
  const machine = {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    node: process.version,
    haproxy: '',
    commit: process.env.BENCH_COMMIT ?? 'unknown',
    loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
  };
  try {
    const { execFileSync } = await import('node:child_process');
    const head = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
    }).trim();
    const dirty =
      execFileSync('git', ['-C', REPO, 'status', '--porcelain'], { encoding: 'utf8' }).trim() !== '';
    machine.commit = `${head}${dirty ? ' + uncommitted changes' : ''}`;
  } catch {
    // not a git checkout (e.g. an exported tree): BENCH_COMMIT says which commit it is
  }
  try {
    const { execFileSync } = await import('node:child_process');
    machine.haproxy = /version (\S+)/.exec(execFileSync('haproxy', ['-v'], { encoding: 'utf8' }))?.[1] ?? '';
  } catch {
    // reported as unknown
  }
  const results: Results = {};
  const verdicts: Verdict[] = [];
  const from = agentsRunFrom();

  const meshScenarios = (['http', 'throughput', 'bulk', 'scale'] as const).filter((s) => selected.has(s));
  if (meshScenarios.length > 0) {
    log('starting the local mesh (2 nodes)');
    const mesh = await LocalMesh.start({
      manifestsDir: values['inbound-l7'] ? withInboundL7Policy() : MANIFESTS,
      workloads: false,
      ...(values['agent-workers'] ? { agentWorkers: Number(values['agent-workers']) } : {}),
      ...(values['agent-node-flags']
        ? { agentNodeFlags: values['agent-node-flags'].split(' ').filter(Boolean) }
        : {}),
      ...(values.accelerate ? { agentArgs: ['--accelerate'] } : {}),
      onProgress: (s) => log(s),
    });
    let hap: HaproxyPair | undefined;
    try {
      const agents = agentGroups(mesh);
      log(
        `agent processes: ${agents
          .map(
            (g) =>
              `${g.name}=${g
                .pids()
                .map((p) => `${p}:${comm(p)}`)
                .join(',')}`,
          )
          .join(' ')}`,
      );
      results.agentProcesses = agents.flatMap((g) =>
        g.pids().map((pid) => ({
          agent: g.name,
          pid,
          role: /worker-main\.(ts|js)/.test(cmdline(pid)) ? 'worker' : 'primary',
          rssMiB: Math.round(rssMiB(pid) * 10) / 10,
        })),
      );
      // "Idle" is after V8 has had its idle-time GC: right after start the heap still
      // holds what loading the config left behind.
      log(`waiting ${SETTLE_MS / 1000} s for the idle agents to settle`);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      results.agentIdleSettleSeconds = SETTLE_MS / 1000;
      results.agentIdleMemoryMiB = Object.fromEntries(agents.map((g) => [g.name, groupMemoryMiB(g)]));
      results.agentIdleRssMiB = Object.fromEntries(
        Object.entries(results.agentIdleMemoryMiB).map(([name, m]) => [name, m.rss]),
      );
      startServers(mesh);
      hap = await startHaproxyPair(mesh.bed, {
        dir: join(mesh.paths.runDir, 'haproxy'),
        serverIp: mesh.pod(SERVER.plain).ip,
        trustDomain: 'cluster.local',
      });
      const broken = await waitServers(mesh);
      for (const b of broken) log(`WARNING: a mesh path does not answer before the run: ${b}`);
      if (broken.length > 0) results.brokenPaths = broken;
      const ctx: Ctx = {
        mesh,
        hap,
        agents,
        haproxies: [
          { name: 'haproxy node1', pids: () => hap?.pids.node1 ?? [] },
          { name: 'haproxy node2', pids: () => hap?.pids.node2 ?? [] },
        ],
      };
      if (selected.has('http')) results.http = await scenarioHttp(ctx);
      if (selected.has('throughput')) results.throughput = await scenarioThroughput(ctx);
      if (selected.has('bulk')) results.bulk = await scenarioBulk(ctx);
      if (selected.has('scale')) results.scale = await scenarioScale(ctx);
    } finally {
      hap?.stop();
      await mesh.stop();
    }
  }
  if (selected.has('hop')) {
    results.hop = (await runScript(
      'sockops-hop',
      QUICK ? ['--iterations', '5000', '--bytes', String(256 * 2 ** 20), '--runs', '1'] : ['--runs', '3'],
    )) as Results['hop'];
  }
  if (selected.has('xds')) {
    results.xds = (await runScript(
      'xds-push',
      QUICK ? ['--services', '1000', '--clients', '10,100', '--rounds', '2'] : [],
    )) as Results['xds'];
  }

  if (selected.has('upgrade')) {
    results.upgrade = await runScript(
      'agent-upgrade',
      QUICK ? ['--rounds', '1', '--requests', '5000', '--drain-timeout', '10'] : [],
    );
  }

  if (selected.has('kube-scale')) {
    results.kubeScale = await runScript(
      'kube-scale',
      QUICK ? ['--services', '200', '--routes', '20', '--clients', '10', '--rounds', '1'] : [],
    );
  }

  // ---- verdicts against the issue's targets ----
  verdicts.push(...verdictsFor(results));

  const report: Report = {
    command,
    startedAt,
    finishedAt: new Date().toISOString(),
    quick: QUICK,
    scenarios: [...selected],
    machine,
    params: {
      ...P,
      rate: RATE,
      httpConnections: HTTP_CONNECTIONS,
      wrkConnections: WRK_CONNECTIONS,
      agentWorkers:
        values['agent-workers'] ??
        'agent default (one per core from 4 cores, else none: the proxy in the agent process)',
      agentsRunFrom: from === 'dist' ? 'dist (compiled JS)' : 'sources through tsx',
      agentNodeFlags: values['agent-node-flags'] ?? '',
      agentAccelerate: values.accelerate ? 'on (--accelerate)' : 'agent default',
    },
    verdicts,
    results,
  };
  const name = QUICK ? 'bench-quick' : 'bench';
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(RESULTS, `${name}.md`), renderMarkdown(report));
  process.stdout.write(renderTerminal(report));
  process.stdout.write(`\nwritten to bench/results/${name}.{json,md}\n`);
}

await main();
