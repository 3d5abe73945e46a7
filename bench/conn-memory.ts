/**
 * Memory per idle L4 connection, on loopback, for quick before/after comparisons (issue 16, the
 * agent RSS goal): a source proxy process (the agent's OutboundServer, a TCP plan to a cluster
 * behind the mTLS tunnel) and a destination proxy process (TunnelServer -> InboundServer -> the
 * bench's echo server), as scenario 6 ("connection scale") runs them, without namespaces, BPF or
 * xDS. This process opens --connections idle connections through them and reads each proxy's
 * memory before and after: RSS split as own (RssAnon) and shared (RssFile), V8's heap, external
 * and ArrayBuffer memory (so native = RSS growth the V8 heap does not account for), then the same
 * after a full GC.
 *
 *   node --import tsx bench/conn-memory.ts [--connections 10000] [--proxy-args="--max-semi-space-size=1"]
 *                                          [--proxy-env MALLOC_ARENA_MAX=2] [--label A]
 *
 * Prints one JSON line. Listens on 127.77.1.1-3 only (ports chosen by the kernel, the echo server's 17000).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { CertificateAuthority } from '../certs/ca/authority.js';
import { type SvidWire, svidFromWire, svidToWire } from '../certs/index.js';
import { InboundServer } from '../mesh-agent/inbound/server.js';
import { OutboundServer } from '../mesh-agent/outbound/server.js';
import { DEFAULT_TCP_IDLE_TIMEOUT_MS } from '../mesh-agent/state/listener.js';
import { identitySni } from '../mesh-agent/tunnel/peer.js';
import { TunnelPool } from '../mesh-agent/tunnel/pool.js';
import { TunnelServer } from '../mesh-agent/tunnel/server.js';
import { cpuSeconds } from './lib/proc.js';
import {
  announce,
  benchSource,
  forkRole,
  oneEndpointCluster,
  remoteEndpoint,
  WORKLOADS,
} from './lib/roles.js';

const TD = 'memory.bench';
const SRC = `spiffe://${TD}/ns/bench/sa/client`;
const DST = `spiffe://${TD}/ns/bench/sa/echo`;
const IP = { src: '127.77.1.1', dst: '127.77.1.2', server: '127.77.1.3' } as const;
const ECHO_PORT = 17000;

interface RoleEnv {
  role: 'src' | 'dst';
  svid: SvidWire;
  tunnel?: string;
}

/** What a proxy process reports about its own memory, in KiB. */
interface Memory {
  rss: number;
  anon: number;
  file: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** V8's malloc'ed memory (not in the heap): compiled code metadata, zones. */
  mallocedMemory: number;
  /** Resident in glibc malloc's main arena (the brk heap): native allocations of the main thread. */
  mallocHeap: number;
}

function mallocHeapKiB(): number {
  const smaps = readFileSync('/proc/self/smaps', 'utf8');
  const at = smaps.indexOf('[heap]');
  if (at < 0) return 0;
  return Number(/\nRss:\s+(\d+) kB/.exec(smaps.slice(at))?.[1] ?? 0);
}

function ownMemory(): Memory {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  const m = process.memoryUsage();
  const h = v8.getHeapStatistics();
  return {
    rss: kb('VmRSS'),
    anon: kb('RssAnon'),
    file: kb('RssFile'),
    heapUsed: Math.round(m.heapUsed / 1024),
    heapTotal: Math.round(m.heapTotal / 1024),
    external: Math.round(m.external / 1024),
    arrayBuffers: Math.round(m.arrayBuffers / 1024),
    mallocedMemory: Math.round(h.malloced_memory / 1024),
    mallocHeap: mallocHeapKiB(),
  };
}

/** Answers the orchestrator's memory questions: `mem` as it is, `gc` after a full collection. */
function serveMemory(): void {
  process.on('message', (m: string) => {
    if (m === 'gc') (globalThis as { gc?: () => void }).gc?.();
    if (m.startsWith('snapshot:')) v8.writeHeapSnapshot(m.slice('snapshot:'.length));
    process.send?.({ memory: ownMemory() });
  });
}

async function runDst(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const workload = {
    ip: IP.server,
    namespace: 'bench',
    name: 'echo',
    serviceAccount: 'echo',
    spiffeId: DST,
    version: 'v1',
    protocolOf: () => 'tcp' as const,
  };
  const inbound = new InboundServer({
    workloads: { byIp: (ip) => (ip === IP.server ? workload : undefined) },
    authz: { check: () => ({ allowed: true }), needsHttp: () => false },
  });
  const server = new TunnelServer({
    identities: {
      svidBySni: (sni) => (sni === identitySni(DST) ? svid : undefined),
      bundle: () => svid.bundle,
    },
    handler: inbound,
  });
  const addr = await server.listen(0, IP.dst);
  serveMemory();
  announce(`${IP.dst}:${addr.port}`);
}

/** The agent's outbound side as it is, with a TCP plan (a Service port declared TCP) in place of the xDS-fed planner. */
async function runSrc(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const endpoint = remoteEndpoint(IP.server, ECHO_PORT, env.tunnel ?? '', DST, 'echo');
  const cluster = oneEndpointCluster('outbound|7000||echo.bench.svc.cluster.local', 'echo', endpoint);
  const source = benchSource(SRC);
  const outbound = new OutboundServer({
    planner: {
      plan: () => ({
        kind: 'tcp',
        service: 'echo.bench.svc.cluster.local',
        cluster: () => cluster,
        // The agent's default (Envoy's tcp_proxy idle_timeout): every L4 connection has one.
        idleTimeoutMs: DEFAULT_TCP_IDLE_TIMEOUT_MS,
      }),
      endpointAt: () => undefined,
    },
    origDst: { lookup: () => ({ ip: '10.96.1.11', port: 7000 }) },
    sources: { byIp: () => source },
    svids: { svidFor: () => svid },
    tunnels: new TunnelPool(),
    inbound: new InboundServer({
      workloads: { byIp: () => undefined },
      authz: { check: () => ({ allowed: true }), needsHttp: () => false },
    }),
    localWorkloads: { byIp: () => undefined },
    events: { completed: () => {}, breakerOverflow: () => {} },
  });
  const addr = await outbound.listen(0, IP.src);
  serveMemory();
  announce(`${IP.src}:${addr.port}`);
}

function startRole(
  env: RoleEnv,
  execArgv: string[],
  extraEnv: Record<string, string>,
): Promise<{ child: ChildProcess; address: string }> {
  return forkRole(fileURLToPath(import.meta.url), 'MEMORY_ROLE', env, ['--expose-gc', ...execArgv], extraEnv);
}

function ask(child: ChildProcess, what: string): Promise<Memory> {
  return new Promise((resolve) => {
    child.once('message', (m: { memory: Memory }) => resolve(m.memory));
    child.send(what);
  });
}

/** Opens n connections to addr, 64 at a time; each is proven through with one echoed byte, then stays idle. */
async function openIdle(addr: string, n: number): Promise<{ socks: net.Socket[]; failed: number }> {
  const [host = '', port = ''] = addr.split(':');
  const socks: net.Socket[] = [];
  let failed = 0;
  let i = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const s = net.connect({ host, port: Number(port), noDelay: true });
      s.on('error', () => {});
      s.once('close', () => resolve());
      s.once('connect', () => s.write('x'));
      s.once('data', () => {
        s.removeAllListeners('close');
        socks.push(s);
        resolve();
      });
    }).then(() => {});
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (i < n) {
        i++;
        const before = socks.length;
        await one();
        if (socks.length === before) failed++;
      }
    }),
  );
  return { socks, failed };
}

const diffPer = (a: Memory, b: Memory, n: number) =>
  Object.fromEntries(
    Object.keys(a).map((k) => [k, +((b[k as keyof Memory] - a[k as keyof Memory]) / n).toFixed(2)]),
  ) as unknown as Memory;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: 'boolean', default: false },
      connections: { type: 'string', default: '10000' },
      'proxy-args': { type: 'string', default: '' },
      'proxy-env': { type: 'string', default: '' },
      label: { type: 'string', default: '' },
      /** Writes each proxy's heap snapshot with the connections open: <prefix>-src/dst.heapsnapshot. */
      snapshot: { type: 'string', default: '' },
    },
  });
  if (values.role) {
    const env = JSON.parse(process.env.MEMORY_ROLE ?? '{}') as RoleEnv;
    process.on('SIGTERM', () => process.exit(0));
    await (env.role === 'src' ? runSrc(env) : runDst(env));
    return;
  }
  const n = Number(values.connections);
  const proxyArgs = values['proxy-args'].split(' ').filter(Boolean);
  const proxyEnv = Object.fromEntries(
    values['proxy-env']
      .split(' ')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const children: ChildProcess[] = [];
  let socks: net.Socket[] = [];
  try {
    const echo = spawn(process.execPath, [join(WORKLOADS, 'server.mjs')], {
      env: { ...process.env, HOST: IP.server, PORT_HTTP: '0', PORT_BULK: '0', PORT_ECHO: String(ECHO_PORT) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(echo);
    await once(echo.stdout!, 'data');
    const dst = await startRole(
      { role: 'dst', svid: svidToWire(await ca.issueSvid(DST)) },
      proxyArgs,
      proxyEnv,
    );
    children.push(dst.child);
    const src = await startRole(
      { role: 'src', svid: svidToWire(await ca.issueSvid(SRC)), tunnel: dst.address },
      proxyArgs,
      proxyEnv,
    );
    children.push(src.child);
    const roles = { src: src.child, dst: dst.child };
    // Warm: the tunnel session, the JIT of the path, then a settled baseline.
    const warm = await openIdle(src.address, 200);
    for (const s of warm.socks) s.destroy();
    await new Promise((r) => setTimeout(r, 1000));
    const base = { src: await ask(roles.src, 'gc'), dst: await ask(roles.dst, 'gc') };
    if (values.snapshot)
      for (const r of ['src', 'dst'] as const)
        await ask(roles[r], `snapshot:${values.snapshot}-${r}-base.heapsnapshot`);
    const cpu0 = { src: cpuSeconds(src.child.pid ?? 0), dst: cpuSeconds(dst.child.pid ?? 0) };
    const t0 = performance.now();
    const opened = await openIdle(src.address, n);
    socks = opened.socks;
    const openSeconds = (performance.now() - t0) / 1000;
    const cpu = {
      src: cpuSeconds(src.child.pid ?? 0) - cpu0.src,
      dst: cpuSeconds(dst.child.pid ?? 0) - cpu0.dst,
    };
    // Held idle as the mesh bench holds them (it samples 2 s after the last open).
    await new Promise((r) => setTimeout(r, 3000));
    const idle = { src: await ask(roles.src, 'mem'), dst: await ask(roles.dst, 'mem') };
    const gced = { src: await ask(roles.src, 'gc'), dst: await ask(roles.dst, 'gc') };
    if (values.snapshot)
      for (const r of ['src', 'dst'] as const)
        await ask(roles[r], `snapshot:${values.snapshot}-${r}.heapsnapshot`);
    const held = socks.length;
    const role = (r: 'src' | 'dst') => ({
      base: base[r],
      idle: idle[r],
      afterGc: gced[r],
      perConnectionKiB: diffPer(base[r], idle[r], held),
      perConnectionAfterGcKiB: diffPer(base[r], gced[r], held),
      openCpuMsPerConnection: +((cpu[r] * 1000) / held).toFixed(3),
    });
    const out = {
      label: values.label,
      proxyArgs,
      proxyEnv,
      connections: held,
      failed: opened.failed,
      openSeconds: +openSeconds.toFixed(2),
      load: +(readFileSync('/proc/loadavg', 'utf8').split(' ')[0] ?? 0),
      src: role('src'),
      dst: role('dst'),
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    for (const s of socks) s.destroy();
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    for (const c of children) c.kill('SIGKILL');
  }
}

await main();
