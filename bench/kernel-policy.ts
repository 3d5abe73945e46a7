/**
 * Kernel L4 policy benchmark (issue 19): does a connect cost the same with 10,
 * 1 000, 10 000 and 100 000 rules in the BPF maps, and what do the rules cost
 * in memory and push time?
 *
 *   node --import tsx bench/kernel-policy.ts [--connects 20000] [--rounds 3] [--sizes 10,1000,10000,100000]
 *     [--cpu 0]
 *
 * One test bed (one node, one pod), one run: a C client (bench/kpolicy/connect.c) in the
 * pod times blocking connect()s, (a) allowed by policy (redirected to a stand-in proxy that
 * accepts and drops) and (b) denied (connect4 answers EPERM: the program's cost with no
 * handshake). The baseline is the same allowed connect with no policy loaded. Sizes run
 * interleaved, each round in another order, and the median round is reported. Client and
 * proxy share one CPU, as in bench/sockops-hop.ts. Also measured: map memory per rule
 * (fdinfo memlock of the rule maps), the time to swap one 100 000-rule set for another, and
 * the time to compile 100 000 rules from RBAC with the proxy's Authorizer.
 *
 * Writes bench/results/kernel-policy.json and .md. Root only; the bed is torn down at the end.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { KernelPolicyTable, KernelRule, SockopsDataplane } from '../bpf-sockops/index.js';
import type { RbacConfig } from '../mesh-agent/authz/rbac.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');
const RESULTS = join(HERE, 'results');
const PROXY_PORT = 15001;
const ALLOWED = '10.99.0.1';
const DENIED = '10.99.0.2';
const CLIENT_ID = 1;

const { values } = parseArgs({
  options: {
    connects: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    sizes: { type: 'string', default: '10,1000,10000,100000' },
    cpu: { type: 'string', default: '0' },
  },
});

interface Probe {
  ok: number;
  eperm: number;
  other: number;
  lastError: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  cpuUsPerConnect: number;
}

interface Row {
  rules: number | 'none';
  allowed: Probe;
  denied: Probe | null;
  /** Kernel memory of the rule and destination maps with this set loaded. */
  mapBytes: number;
  pushMs: number;
}

/** `n` rules: the two the probes hit, the rest for other callers and destinations. */
function table(n: number, cgroupId: bigint, salt: number): KernelPolicyTable {
  const rules: KernelRule[] = [
    { source: CLIENT_ID, destination: 1, port: 0, verdict: 'allow', policy: 1 },
    { source: CLIENT_ID, destination: 2, port: 0, verdict: 'deny', policy: 2 },
  ];
  for (let i = rules.length; i < n; i++) {
    rules.push({
      source: 2 + (i % 1000),
      destination: 3 + Math.floor(i / 1000),
      port: (i + salt) % 7 === 0 ? 0 : 1 + ((i + salt) % 60000),
      verdict: i % 2 ? 'allow' : 'deny',
      policy: 3 + (i % 100),
    });
  }
  return {
    destinations: new Map([
      [ALLOWED, 1],
      [DENIED, 2],
    ]),
    sources: new Map([[cgroupId, CLIENT_ID]]),
    rules: rules.slice(0, Math.max(n, 2)),
    policies: Array.from({ length: 103 }, (_, i) => `bench/p${i}`),
  };
}

const median = <T>(xs: T[], key: (x: T) => number): T =>
  [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)]!;

/** RBAC for `sets` destinations, each allowing `perSet` of `identities` by name on one port. */
function rbacTable(
  identities: number,
  sets: number,
  perSet: number,
): { ids: Map<string, number>; dests: { ip: string; rbac: RbacConfig[] }[] } {
  const ids = new Map<string, number>();
  for (let i = 0; i < identities; i++) ids.set(`spiffe://cluster.local/ns/n${i % 50}/sa/s${i}`, i + 1);
  const names = [...ids.keys()];
  const dests = Array.from({ length: sets }, (_, s) => ({
    ip: `10.${100 + Math.floor(s / 250)}.${s % 250}.1`,
    rbac: [
      {
        action: 'ALLOW' as const,
        policies: [
          {
            name: `bench/allow-${s}/rule-0`,
            permissions: [{ kind: 'destination-port' as const, port: 8000 + (s % 100) }],
            principals: Array.from({ length: perSet }, (_, k) => ({
              kind: 'authenticated' as const,
              principalName: {
                kind: 'exact' as const,
                value: names[(s * 7 + k) % names.length]!,
                ignoreCase: false,
              },
            })),
          },
        ],
      },
    ] as unknown as RbacConfig[],
  }));
  return { ids, dests };
}

async function main(): Promise<void> {
  const { TestBed } = await import('../lab/testbed.js');
  const { SockopsDataplane: Dataplane } = await import('../bpf-sockops/index.js');
  const { compileKernelPolicy } = await import('../mesh-agent/authz/kernel-policy.js');
  const { nullLogger } = await import('../lib/log.js');
  const connects = values.connects;
  const rounds = Number(values.rounds);
  const sizes = (values.sizes ?? '').split(',').map(Number);
  const cpu = values.cpu;
  const binary = join(tmpdir(), `sockmesh-kpolicy-connect-${process.pid}`);
  execFileSync('cc', ['-O2', '-o', binary, join(HERE, 'kpolicy', 'connect.c')]);

  const bed = await TestBed.create({ nodes: 1 });
  const node = bed.nodes[0]!;
  let dp: SockopsDataplane | undefined;
  const children: { kill(sig?: NodeJS.Signals): boolean }[] = [];
  try {
    const pod = await bed.addPod({ name: 'client', namespace: 'bench', node: node.name });
    dp = Dataplane.open({ cgroupPath: node.cgroupPath, bpffsDir: node.bpffsDir, logger: nullLogger });
    dp.setProxy({ ip: node.gatewayIp, port: PROXY_PORT });
    dp.setAcceleration(false);
    dp.enrolPod(pod.cgroupId, { mode: 'permissive' });
    const proxy = bed.spawn(
      node,
      [
        'taskset',
        '-c',
        cpu,
        process.execPath,
        '-e',
        `require('node:net').createServer(s=>s.destroy()).listen({host:'${node.gatewayIp}',port:${PROXY_PORT},backlog:4096},()=>console.log('up'))`,
      ],
      { cwd: REPO },
    );
    children.push(proxy);
    await new Promise<void>((resolve, reject) => {
      proxy.stdout?.once('data', () => resolve());
      proxy.once('exit', (code) => reject(new Error(`proxy exited ${code}`)));
    });
    const probe = async (ip: string): Promise<Probe> => {
      const res = await bed.exec(pod, ['taskset', '-c', cpu, binary, ip, String(PROXY_PORT), connects], {
        timeoutMs: 600_000,
      });
      if (res.code !== 0) throw new Error(`connect probe failed (${res.code}): ${res.stderr}`);
      return JSON.parse(res.stdout.trim()) as Probe;
    };
    const empty: KernelPolicyTable = { destinations: new Map(), sources: new Map(), rules: [], policies: [] };
    const load = (t: KernelPolicyTable) => {
      const t0 = performance.now();
      dp!.policy.replace(t);
      return performance.now() - t0;
    };
    // Warm up the path (and the proxy's accept loop) before measuring.
    load(empty);
    await probe(ALLOWED);

    const configs: (number | 'none')[] = ['none', ...sizes];
    const samples = new Map<number | 'none', Row[]>(configs.map((c) => [c, []]));
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? configs : [...configs].reverse();
      for (const c of order) {
        const pushMs = load(c === 'none' ? empty : table(c, pod.cgroupId, r));
        const mapBytes = dp.policy.memoryBytes();
        const allowed = await probe(ALLOWED);
        const denied = c === 'none' ? null : await probe(DENIED);
        if (allowed.ok !== Number(connects))
          throw new Error(`allowed connects failed: ${JSON.stringify(allowed)}`);
        if (denied && denied.eperm !== Number(connects))
          throw new Error(`denied connects were not all refused: ${JSON.stringify(denied)}`);
        samples.get(c)!.push({ rules: c, allowed, denied, mapBytes, pushMs });
        process.stderr.write(
          `round ${r + 1} ${c}: allowed p50 ${allowed.p50Us} us, denied p50 ${denied?.p50Us ?? '-'} us\n`,
        );
      }
    }
    const rows = configs.map((c) => median(samples.get(c)!, (x) => x.allowed.p50Us));
    const deniedRows = sizes.map((c) => median(samples.get(c)!, (x) => x.denied!.p50Us));

    // Push: one 100 000-rule set replaced by another (write the new generation, flip, empty the old).
    const big = Math.max(...sizes);
    load(table(big, pod.cgroupId, 1));
    load(table(big, pod.cgroupId, 2));
    const swap = dp.policy.status().lastSwapMs!;
    // Memory per rule from the largest set against the empty maps.
    load(empty);
    const emptyBytes = dp.policy.memoryBytes();
    load(table(big, pod.cgroupId, 3));
    const bytesPerRule = (dp.policy.memoryBytes() - emptyBytes) / big;
    // Compile: RBAC -> rules with the proxy's Authorizer, about 100 000 rules.
    const rbac = rbacTable(1000, 97, 20);
    const c0 = performance.now();
    const compiled = compileKernelPolicy({
      identities: rbac.ids,
      destinations: rbac.dests,
      sources: new Map(),
    });
    const compileMs = performance.now() - c0;
    const compiledLoadMs = load({ ...compiled, sources: new Map([[pod.cgroupId, CLIENT_ID]]) });
    load(empty);

    const base = rows[0]!.allowed;
    const report = {
      date: new Date().toISOString(),
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, kernel: release(), node: process.version },
      connectsPerProbe: Number(connects),
      rounds,
      allowed: rows.map((r) => ({
        rules: r.rules,
        p50Us: r.allowed.p50Us,
        p99Us: r.allowed.p99Us,
        cpuUsPerConnect: r.allowed.cpuUsPerConnect,
        p50VsBaseline: r.allowed.p50Us / base.p50Us,
        cpuVsBaseline: r.allowed.cpuUsPerConnect / base.cpuUsPerConnect,
      })),
      denied: deniedRows.map((r) => ({
        rules: r.rules,
        p50Us: r.denied!.p50Us,
        p99Us: r.denied!.p99Us,
        cpuUsPerConnect: r.denied!.cpuUsPerConnect,
        p50VsSmallest: r.denied!.p50Us / deniedRows[0]!.denied!.p50Us,
      })),
      memory: { rules: big, bytesPerRule, emptyMapBytes: emptyBytes },
      push: {
        swap100kLiveMs: swap.live,
        swap100kTotalMs: swap.total,
        compile: { rules: compiled.rules.length, compileMs, loadMs: compiledLoadMs },
      },
    };
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, 'kernel-policy.json'), `${JSON.stringify(report, null, 2)}\n`);
    writeFileSync(join(RESULTS, 'kernel-policy.md'), markdown(report));
    process.stdout.write(markdown(report));
  } finally {
    for (const c of children) c.kill('SIGKILL');
    try {
      dp?.detach();
    } finally {
      await bed.destroy();
    }
  }
}

function markdown(r: {
  date: string;
  machine: Record<string, unknown>;
  connectsPerProbe: number;
  rounds: number;
  allowed: {
    rules: number | 'none';
    p50Us: number;
    p99Us: number;
    cpuUsPerConnect: number;
    p50VsBaseline: number;
    cpuVsBaseline: number;
  }[];
  denied: {
    rules: number | 'none';
    p50Us: number;
    p99Us: number;
    cpuUsPerConnect: number;
    p50VsSmallest: number;
  }[];
  memory: { rules: number; bytesPerRule: number; emptyMapBytes: number };
  push: {
    swap100kLiveMs: number;
    swap100kTotalMs: number;
    compile: { rules: number; compileMs: number; loadMs: number };
  };
}): string {
  const f = (n: number, d = 1) => n.toFixed(d);
  const lines = [
    `# Kernel L4 policy (bench/kernel-policy.ts, ${r.date})`,
    '',
    `${r.machine.cores} × ${r.machine.cpu}, Linux ${r.machine.kernel}, Node ${r.machine.node}; ${r.connectsPerProbe} connects per probe, median of ${r.rounds} rounds.`,
    '',
    '## Allowed connect (connect4 verdict + redirect + handshake to the stand-in proxy)',
    '',
    '| rules | p50 µs | p99 µs | CPU µs/connect | p50 vs no policy | CPU vs no policy |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.allowed.map(
      (a) =>
        `| ${a.rules === 'none' ? 'no policy' : a.rules} | ${f(a.p50Us)} | ${f(a.p99Us)} | ${f(a.cpuUsPerConnect, 2)} | ${f(a.p50VsBaseline, 2)} | ${f(a.cpuVsBaseline, 2)} |`,
    ),
    '',
    '## Denied connect (connect4 answers EPERM: no packet, no handshake)',
    '',
    '| rules | p50 µs | p99 µs | CPU µs/connect | p50 vs 10 rules |',
    '| ---: | ---: | ---: | ---: | ---: |',
    ...r.denied.map(
      (d) =>
        `| ${d.rules} | ${f(d.p50Us, 2)} | ${f(d.p99Us, 2)} | ${f(d.cpuUsPerConnect, 2)} | ${f(d.p50VsSmallest, 2)} |`,
    ),
    '',
    '## Memory and push',
    '',
    `- map memory: ${f(r.memory.bytesPerRule)} bytes per rule (${r.memory.rules} rules; empty maps ${r.memory.emptyMapBytes} bytes)`,
    `- swapping one ${r.memory.rules}-rule set for another: live after ${f(r.push.swap100kLiveMs, 0)} ms (new generation written, flipped), old generation gone after ${f(r.push.swap100kTotalMs, 0)} ms`,
    `- compiling ${r.push.compile.rules} rules from RBAC with the proxy's Authorizer: ${f(r.push.compile.compileMs, 0)} ms, then loading them: ${f(r.push.compile.loadMs, 0)} ms`,
    '',
  ];
  return lines.join('\n');
}

await main();
