/**
 * Same-node hop benchmark: a pod talking to a listener in its node's netns,
 * (1) plain TCP, not captured; (2) captured by connect4 with sk_msg off;
 * (3) captured with sk_msg on. Measures 100 B ping-pong RTT (p50/p99) and
 * 64 KiB-write throughput, all in one run on one fresh test bed.
 *
 *   node --import tsx bench/sockops-hop.ts [--iterations 20000] [--bytes 1073741824] [--runs 3] [--cpu 0]
 *     [--impl node,c]
 *
 * Each path is measured twice: with Node workers (what the proxy sees) and with
 * bench/hop/hop.c (compiled with cc at run time), whose blocking syscalls leave
 * the kernel path's own cost visible.
 *
 * Writes bench/results/sockops-hop.json and .md. Workers are this same file
 * run with --worker inside the bed's namespaces.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { SockopsDataplane as SockopsDataplaneT } from '../bpf-sockops/index.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');
const SELF = fileURLToPath(import.meta.url);
const MSG = 100;
const CHUNK = 64 * 1024;

const { values } = parseArgs({
  options: {
    worker: { type: 'string' },
    target: { type: 'string' },
    listen: { type: 'string' },
    iterations: { type: 'string', default: '20000' },
    cpu: { type: 'string', default: '0' },
    bytes: { type: 'string', default: String(1024 ** 3) },
    runs: { type: 'string', default: '3' },
    impl: { type: 'string', default: 'node,c' },
  },
});

function hostPort(s: string | undefined): { host: string; port: number } {
  const [host = '', port = ''] = (s ?? '').split(':');
  return { host, port: Number(port) };
}

// ---- workers (run inside the bed) -------------------------------------------

/** First byte picks the mode: 'P' ping-pong echo, 'S' sink that answers with the byte count. */
function serverWorker(): void {
  const server = createServer((sock: Socket) => {
    let mode: number | undefined;
    let total = 0;
    sock.setNoDelay(true);
    sock.on('data', (b: Buffer) => {
      if (mode === undefined) {
        mode = b[0];
        b = b.subarray(1);
      }
      if (mode === 0x50) sock.write(b);
      else total += b.length;
    });
    sock.on('end', () => {
      const out = Buffer.alloc(8);
      out.writeBigUInt64LE(BigInt(total));
      sock.end(out);
    });
    sock.on('error', () => {});
  });
  const { host, port } = hostPort(values.listen);
  server.listen({ host, port }, () => process.stdout.write('{"listening":true}\n'));
}

function open(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(hostPort(values.target));
    s.setNoDelay(true);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function pingPongWorker(): Promise<void> {
  const iterations = Number(values.iterations);
  const warmup = Math.min(1000, iterations);
  const s = await open();
  s.write('P');
  const msg = Buffer.alloc(MSG, 0x61);
  const rtts: number[] = [];
  let pending = 0;
  let t0 = 0n;
  let i = 0;
  await new Promise<void>((resolve) => {
    const send = () => {
      pending = MSG;
      t0 = process.hrtime.bigint();
      s.write(msg);
    };
    s.on('data', (b: Buffer) => {
      pending -= b.length;
      if (pending > 0) return;
      const rtt = Number(process.hrtime.bigint() - t0) / 1000;
      if (i++ >= warmup) rtts.push(rtt);
      if (i < iterations + warmup) send();
      else resolve();
    });
    send();
  });
  s.destroy();
  rtts.sort((a, b) => a - b);
  const pct = (p: number) => rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))] ?? 0;
  process.stdout.write(`${JSON.stringify({ p50: pct(0.5), p99: pct(0.99), samples: rtts.length })}\n`);
}

async function throughputWorker(): Promise<void> {
  const total = Number(values.bytes);
  const s = await open();
  const chunk = Buffer.alloc(CHUNK, 0x62);
  const reply: Buffer[] = [];
  s.on('data', (b: Buffer) => reply.push(b));
  const ended = new Promise((r) => s.once('end', r));
  const t0 = process.hrtime.bigint();
  s.write('S');
  let sent = 0;
  while (sent < total) {
    const n = Math.min(CHUNK, total - sent);
    sent += n;
    if (!s.write(n === CHUNK ? chunk : chunk.subarray(0, n))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await ended;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const got = Number(Buffer.concat(reply).readBigUInt64LE(0));
  process.stdout.write(`${JSON.stringify({ bytes: got, seconds, gbps: (got * 8) / seconds / 1e9 })}\n`);
}

// ---- driver -------------------------------------------------------------------

type Impl = 'node' | 'c';

interface Row {
  impl: Impl;
  path: string;
  p50us: number;
  p99us: number;
  gbps: number;
  redirectedMsgs: string;
  /** C workers: blocking reads the kernel answered with EAGAIN (retried). */
  eagain: number;
}

async function driver(): Promise<void> {
  const { TestBed } = await import('../lab/testbed.js');
  const { SockopsDataplane } = await import('../bpf-sockops/index.js');
  const { nullLogger } = await import('../lib/log.js');
  const iterations = values.iterations;
  const bytes = values.bytes;
  const runs = Number(values.runs);
  // Client and server share one CPU: cross-CPU wake-ups in this VM cost tens of
  // microseconds and vary run to run, which would drown the path being measured.
  const cpu = values.cpu;

  const bed = await TestBed.create({ nodes: 1 });
  const node = bed.nodes[0]!;
  let dp: SockopsDataplaneT | undefined;
  const children: { kill(sig?: NodeJS.Signals): boolean }[] = [];
  try {
    const pod = await bed.addPod({ name: 'bench', namespace: 'bench', node: node.name });
    dp = SockopsDataplane.open({ cgroupPath: node.cgroupPath, bpffsDir: node.bpffsDir, logger: nullLogger });
    dp.setProxy({ ip: node.gatewayIp, port: 15001 });
    const hopBinary = join(tmpdir(), `sockmesh-hop-${process.pid}`);
    const impls = (values.impl ?? 'node,c').split(',').filter((i): i is Impl => i === 'node' || i === 'c');
    if (impls.includes('c')) execFileSync('cc', ['-O2', '-o', hopBinary, join(HERE, 'hop', 'hop.c')]);
    const workerArgv = (impl: Impl, mode: string, ...args: string[]): string[] =>
      impl === 'c'
        ? ['taskset', '-c', cpu, hopBinary, mode, ...args]
        : ['taskset', '-c', cpu, process.execPath, '--import', 'tsx', SELF, '--worker', mode, ...args];
    // The stand-in proxy (15001) and a plain listener (15002) in the node netns, system cgroup.
    const startServers = async (impl: Impl) => {
      const started: (typeof children)[number][] = [];
      for (const port of [15001, 15002]) {
        const where = `${node.gatewayIp}:${port}`;
        const child = bed.spawn(
          node,
          workerArgv(impl, 'server', ...(impl === 'c' ? [where] : ['--listen', where])),
          {
            cwd: REPO,
          },
        );
        children.push(child);
        started.push(child);
        await new Promise<void>((resolve, reject) => {
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
        });
      }
      return () => {
        for (const c of started) c.kill('SIGKILL');
      };
    };
    const run = async (impl: Impl, mode: 'pingpong' | 'throughput', target: string) => {
      const args =
        impl === 'c'
          ? [target, mode === 'pingpong' ? iterations : bytes]
          : ['--target', target, '--iterations', iterations, '--bytes', bytes];
      const res = await bed.exec(pod, workerArgv(impl, mode, ...args), { cwd: REPO, timeoutMs: 300_000 });
      if (res.code !== 0) throw new Error(`${impl} ${mode} worker failed (${res.code}): ${res.stderr}`);
      return JSON.parse(res.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;
    };
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

    const scenarios: { path: string; target: string; setup: () => void }[] = [
      {
        path: 'plain TCP (not captured)',
        target: `${node.gatewayIp}:15002`,
        setup: () => {
          dp!.removePod(pod.cgroupId);
          dp!.setAcceleration(false);
        },
      },
      {
        path: 'captured, sk_msg off',
        target: '10.96.0.10:80',
        setup: () => {
          dp!.enrolPod(pod.cgroupId);
          dp!.setAcceleration(false);
        },
      },
      {
        path: 'captured, sk_msg on',
        target: '10.96.0.10:80',
        setup: () => {
          dp!.enrolPod(pod.cgroupId);
          dp!.setAcceleration(true);
        },
      },
    ];
    const rows: Row[] = [];
    for (const impl of impls) {
      const stopServers = await startServers(impl);
      for (const sc of scenarios) {
        sc.setup();
        const before = dp.counters().messagesRedirected;
        const p50s: number[] = [];
        const p99s: number[] = [];
        const gbps: number[] = [];
        let eagain = 0;
        for (let r = 0; r < runs; r++) {
          const pp = await run(impl, 'pingpong', sc.target);
          eagain += pp.eagain ?? 0;
          p50s.push(pp.p50 ?? 0);
          p99s.push(pp.p99 ?? 0);
          const tp = await run(impl, 'throughput', sc.target);
          if (tp.bytes !== Number(bytes))
            throw new Error(`${sc.path}: sink got ${tp.bytes} of ${bytes} bytes`);
          gbps.push(tp.gbps ?? 0);
          eagain += tp.eagain ?? 0;
        }
        rows.push({
          impl,
          eagain,
          path: sc.path,
          p50us: median(p50s),
          p99us: median(p99s),
          gbps: median(gbps),
          redirectedMsgs: String(dp.counters().messagesRedirected - before),
        });
        process.stderr.write(`done: ${impl} ${sc.path}\n`);
      }
      stopServers();
    }
    report(rows, { iterations: Number(iterations), bytes: Number(bytes), runs, cpu, impl: impls.join(',') });
  } finally {
    for (const c of children) c.kill('SIGKILL');
    try {
      dp?.detach();
    } finally {
      await bed.destroy();
    }
  }
}

function report(
  rows: Row[],
  params: { iterations: number; bytes: number; runs: number; cpu: string; impl: string },
): void {
  const command = `node --import tsx bench/sockops-hop.ts --iterations ${params.iterations} --bytes ${params.bytes} --runs ${params.runs} --cpu ${params.cpu} --impl ${params.impl}`;
  const env = {
    kernel: release(),
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    node: process.version,
    objectsSha256: createHash('sha256')
      .update(readFileSync(join(REPO, 'bpf-sockops', 'obj', 'redir.bpf.o')))
      .digest('hex')
      .slice(0, 16),
  };
  const table = [
    '| workers | path | RTT p50 (µs) | RTT p99 (µs) | vs plain TCP p50 | throughput 64 KiB writes (Gbit/s) | sk_msg redirects | blocking reads answered EAGAIN |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => {
      const plain = rows.find((x) => x.impl === r.impl && x.path === rows[0]?.path);
      const vs =
        plain && plain.p50us > 0 ? `${(((r.p50us - plain.p50us) / plain.p50us) * 100).toFixed(0)}%` : '–';
      return `| ${r.impl === 'c' ? 'C (hop.c)' : 'Node'} | ${r.path} | ${r.p50us.toFixed(1)} | ${r.p99us.toFixed(1)} | ${vs} | ${r.gbps.toFixed(2)} | ${r.redirectedMsgs} | ${r.impl === 'c' ? r.eagain : '–'} |`;
    }),
  ].join('\n');
  const md = `# Same-node hop: pod <-> node proxy

Measured ${new Date().toISOString()} on Linux ${env.kernel}, ${env.cores} x ${env.cpu}, Node ${env.node}.
100 B ping-pong RTT over ${params.iterations} round trips (after 1000 warm-up) and ${params.bytes} bytes
in 64 KiB writes to a sink; median of ${params.runs} runs each. Client and server are pinned to
CPU ${params.cpu} together (so the figures show the CPU cost of the path, not cross-CPU wake-up
latency, which varies wildly in this VM). With Node workers the RTT includes two event-loop turns
(what the proxy sees); the C workers (\`bench/hop/hop.c\`, blocking read/write) show the kernel
path's own cost. Compare rows of the same workers, not absolute numbers.

${table}

Reproduce (root, after \`npm run build:bpf && npm run build:addon\`):

    ${command}
`;
  mkdirSync(join(HERE, 'results'), { recursive: true });
  writeFileSync(join(HERE, 'results', 'sockops-hop.md'), md);
  writeFileSync(
    join(HERE, 'results', 'sockops-hop.json'),
    `${JSON.stringify({ command, measuredAt: new Date().toISOString(), env, params, rows }, null, 2)}\n`,
  );
  console.log(table);
  console.log(`\nwritten to bench/results/sockops-hop.{json,md}\n${command}`);
}

if (values.worker === 'server') serverWorker();
else if (values.worker === 'pingpong') await pingPongWorker();
else if (values.worker === 'throughput') await throughputWorker();
else await driver();
