/**
 * What kernel TCP health costs: connect + request churn from node1 (under its
 * dataplane) to a server on node2, with the TCP health callbacks on and off,
 * alternating in the same run on the same test bed. "On" is what the agent
 * does: every connection tagged with its workload pair (one map update and
 * one delete from user space) and the kernel taking RTT, retransmit, RTO and
 * state callbacks for it. "Off" is the same dataplane with TCP health switched
 * off (the sockops program still runs for capture).
 *
 *   node --import tsx bench/tcp-health.ts [--connections 3000] [--concurrency 8] [--runs 3] [--bytes 4096]
 *
 * Per connection: CPU of the client and server processes (user + system,
 * from their own process.cpuUsage), and the sockops program's own run time
 * and invocations (kernel.bpf_stats_enabled is switched on for the run and
 * restored). Writes bench/results/tcp-health.json and .md.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const PORT = 7300;

const { values } = parseArgs({
  options: {
    worker: { type: 'string' },
    target: { type: 'string' },
    bpffs: { type: 'string' },
    connections: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '8' },
    runs: { type: 'string', default: '3' },
    bytes: { type: 'string', default: '4096' },
  },
});

const emit = (ev: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(ev)}\n`);

// ---- workers (run inside the bed) -------------------------------------------

/** Answers each request (a 4-byte length) with that many bytes, then waits for the client to close. */
function serverWorker(): void {
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => {});
    sock.once('data', (b: Buffer) => sock.write(Buffer.alloc(b.readUInt32LE(0), 1)));
  });
  server.listen(PORT, values.target, () => emit({ event: 'listening' }));
  process.stdin.on('data', () => emit({ event: 'cpu', ...process.cpuUsage() }));
}

async function clientWorker(): Promise<void> {
  const total = Number(values.connections);
  const bytes = Number(values.bytes);
  const tag = values.bpffs
    ? (await import('../bpf-sockops/index.js')).TcpHealthMaps.open(values.bpffs)
    : undefined;
  const pair = {
    source: { namespace: 'bench', workload: 'client' },
    destination: { namespace: 'bench', workload: 'server' },
    leg: 'tunnel' as const,
  };
  const request = Buffer.alloc(4);
  request.writeUInt32LE(bytes);
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const s = connect({ host: values.target, port: PORT, noDelay: true });
      let got = 0;
      s.once('connect', () => {
        const conn = {
          localIp: s.localAddress,
          localPort: s.localPort,
          remoteIp: s.remoteAddress,
          remotePort: s.remotePort,
        };
        if (tag?.tag(conn, pair)) s.once('close', () => tag.untag(conn));
        s.write(request);
      });
      s.on('data', (b: Buffer) => {
        got += b.length;
        if (got >= bytes) s.end();
      });
      s.once('close', () => (got >= bytes ? resolve() : reject(new Error('short answer'))));
      s.once('error', reject);
    });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async () => {
      while (next < total) {
        next++;
        await one();
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  tag?.close();
  emit({ event: 'done', connections: total, wallMs, user: cpu.user, system: cpu.system });
}

// ---- the run ------------------------------------------------------------------

interface PhaseResult {
  mode: 'on' | 'off';
  connections: number;
  connPerS: number;
  clientCpuUsPerConn: number;
  serverCpuUsPerConn: number;
  sockopsNsPerConn: number;
  sockopsCallsPerConn: number;
  rttSamplesPerConn: number;
}

function progStats(id: number): { ns: number; cnt: number } {
  const j = JSON.parse(
    execFileSync('bpftool', ['prog', 'show', 'id', String(id), '--json'], { encoding: 'utf8' }),
  ) as {
    run_time_ns?: number;
    run_cnt?: number;
  };
  return { ns: j.run_time_ns ?? 0, cnt: j.run_cnt ?? 0 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

async function main(): Promise<void> {
  const { TestBed } = await import('../lab/testbed.js');
  const { SockopsDataplane } = await import('../bpf-sockops/index.js');
  const { createInterface } = await import('node:readline');
  const statsWas = execFileSync('sysctl', ['-n', 'kernel.bpf_stats_enabled'], { encoding: 'utf8' }).trim();
  const bed = await TestBed.create({ nodes: 2 });
  const [node1, node2] = bed.nodes;
  const dp = SockopsDataplane.open({ cgroupPath: node1!.cgroupPath, bpffsDir: node1!.bpffsDir });
  const server = bed.spawn(node2!, [
    process.execPath,
    '--import',
    'tsx',
    SELF,
    '--worker',
    'server',
    '--target',
    node2!.underlayIp,
  ]);
  const lines = createInterface({ input: server.stdout! });
  const next = () =>
    new Promise<Record<string, number>>((resolve) => lines.once('line', (l) => resolve(JSON.parse(l))));
  const results: PhaseResult[] = [];
  try {
    execFileSync('sysctl', ['-qw', 'kernel.bpf_stats_enabled=1']);
    await next(); // listening
    const sockopsId = dp.status().programs.find((p) => p.name === 'sm_sockops')!.id;
    const phase = async (mode: 'on' | 'off', connections: number): Promise<PhaseResult> => {
      dp.tcpHealth.setEnabled(mode === 'on');
      const before = { prog: progStats(sockopsId), rtt: samples() };
      server.stdin!.write('x');
      const s0 = await next();
      const argv = [
        process.execPath,
        '--import',
        'tsx',
        SELF,
        ...['--worker', 'client', '--target', node2!.underlayIp],
        ...[
          '--connections',
          String(connections),
          '--concurrency',
          values.concurrency!,
          '--bytes',
          values.bytes!,
        ],
        ...(mode === 'on' ? ['--bpffs', node1!.bpffsDir] : []),
      ];
      const r = await bed.exec(node1!, argv, { cwd: join(HERE, '..'), timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`client failed: ${r.stderr}`);
      const done = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, number>;
      server.stdin!.write('x');
      const s1 = await next();
      const after = { prog: progStats(sockopsId), rtt: samples() };
      return {
        mode,
        connections,
        connPerS: (connections / done.wallMs!) * 1000,
        clientCpuUsPerConn: (done.user! + done.system!) / connections,
        serverCpuUsPerConn: (s1.user! + s1.system! - s0.user! - s0.system!) / connections,
        sockopsNsPerConn: (after.prog.ns - before.prog.ns) / connections,
        sockopsCallsPerConn: (after.prog.cnt - before.prog.cnt) / connections,
        rttSamplesPerConn: (after.rtt - before.rtt) / connections,
      };
    };
    const samples = () => dp.tcpHealth.read().reduce((a, p) => a + p.rttSamples, 0);
    await phase('off', 300); // warm-up: JIT, page cache, the LRU entry
    await phase('on', 300);
    for (let i = 0; i < Number(values.runs); i++) {
      for (const mode of i % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const r = await phase(mode, Number(values.connections));
        results.push(r);
        process.stderr.write(`${JSON.stringify(r)}\n`);
      }
    }
  } finally {
    execFileSync('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsWas}`]);
    server.kill('SIGKILL');
    try {
      dp.detach();
    } finally {
      await bed.destroy();
    }
  }
  const summary = (mode: 'on' | 'off') => {
    const rs = results.filter((r) => r.mode === mode);
    const m = (k: keyof PhaseResult) => median(rs.map((r) => r[k] as number));
    return {
      connPerS: m('connPerS'),
      clientCpuUsPerConn: m('clientCpuUsPerConn'),
      serverCpuUsPerConn: m('serverCpuUsPerConn'),
      sockopsNsPerConn: m('sockopsNsPerConn'),
      sockopsCallsPerConn: m('sockopsCallsPerConn'),
      rttSamplesPerConn: m('rttSamplesPerConn'),
    };
  };
  const on = summary('on');
  const off = summary('off');
  const meta = {
    date: new Date().toISOString(),
    kernel: release(),
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
    node: process.version,
    params: {
      connections: Number(values.connections),
      concurrency: Number(values.concurrency),
      runs: Number(values.runs),
      bytes: Number(values.bytes),
    },
  };
  writeFileSync(
    join(HERE, 'results', 'tcp-health.json'),
    `${JSON.stringify({ ...meta, on, off, phases: results }, null, 2)}\n`,
  );
  const pct = (a: number, b: number) =>
    b === 0 ? '–' : `${a >= b ? '+' : ''}${(((a - b) / b) * 100).toFixed(1)}%`;
  const row = (what: string, k: keyof typeof on, digits: number) =>
    `| ${what} | ${off[k].toFixed(digits)} | ${on[k].toFixed(digits)} | ${pct(on[k], off[k])} |`;
  const md = `# Kernel TCP health: cost per connection

Measured ${meta.date} on Linux ${meta.kernel}, ${meta.cpus}, Node ${meta.node}.
${meta.params.connections} connections per phase (connect, ${meta.params.bytes} B answer to a 4 B request, close),
${meta.params.concurrency} at a time, from node1 (under its dataplane) to node2 over the lab underlay;
${meta.params.runs} phases with TCP health on and ${meta.params.runs} off, alternating in the same run; medians.
"On" includes the client tagging each connection (one map update, one delete), as the agent does.

| per connection | off | on | on vs off |
| --- | ---: | ---: | ---: |
${row('connections/s', 'connPerS', 0)}
${row('client CPU (µs, user + system)', 'clientCpuUsPerConn', 1)}
${row('server CPU (µs, user + system)', 'serverCpuUsPerConn', 1)}
${row('sockops program run time (ns)', 'sockopsNsPerConn', 0)}
${row('sockops invocations', 'sockopsCallsPerConn', 1)}
${row('RTT samples recorded', 'rttSamplesPerConn', 1)}

Every phase (the machine is shared: compare the sockops run time, which is the program's own, before process CPU):

| phase | mode | connections/s | client CPU µs | server CPU µs | sockops ns | RTT samples |
| ---: | --- | ---: | ---: | ---: | ---: | ---: |
${results
  .map(
    (r, i) =>
      `| ${i + 1} | ${r.mode} | ${r.connPerS.toFixed(0)} | ${r.clientCpuUsPerConn.toFixed(1)} | ${r.serverCpuUsPerConn.toFixed(1)} | ${r.sockopsNsPerConn.toFixed(0)} | ${r.rttSamplesPerConn.toFixed(1)} |`,
  )
  .join('\n')}

Reproduce (root, after \`npm run build\`):

    node --import tsx bench/tcp-health.ts --connections ${meta.params.connections} --concurrency ${meta.params.concurrency} --runs ${meta.params.runs} --bytes ${meta.params.bytes}
`;
  writeFileSync(join(HERE, 'results', 'tcp-health.md'), md);
  process.stdout.write(md);
}

if (values.worker === 'server') serverWorker();
else if (values.worker === 'client') await clientWorker();
else await main();
