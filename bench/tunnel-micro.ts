/**
 * The proxy data path alone, on loopback, for quick before/after comparisons of hot-path changes:
 * a source proxy process (plain TCP listener -> TunnelPool CONNECT -> splice, as the outbound
 * side's forwardTcp does) and a destination proxy process (TunnelServer -> InboundServer -> the
 * server), with the bench server and the open-loop load generator of scenario 2. No namespaces,
 * no BPF, no xDS: only the per-request cost of the tunnel (--path l4), or of the agent's HTTP
 * proxying over it (--path l7: OutboundServer with a stubbed one-rule route, InboundServer),
 * which is what scenario 2's rows are made of once connections are up.
 *
 *   node --import tsx bench/tunnel-micro.ts [--rate 1000]   (or node dist/bench/tunnel-micro.js) [--seconds 10] [--connections 16]
 *                                           [--proxy-args="--max-semi-space-size=8"] [--runs 1]
 *                                           [--impl mesh|proto] [--path l4|l7|bulk] [--dst-l7] [--dst-bytes]
 *
 * --path bulk is scenario 4 on loopback: the L4 splice as --path l4, carrying one connection of
 * bench/workloads/bulk.mjs (64 KiB writes for --seconds) to the server's bulk sink, each run
 * preceded by the same transfer straight to the sink (the direct baseline of that run); it prints
 * Gbit/s, the ratio to direct and CPU-seconds per GB of each proxy process.
 *
 * --path l7 runs the destination as the agent does by default: the lean relay (requests parsed
 * with llhttp, heads rewritten with the caller's XFCC, answers as bytes). --dst-l7 makes it parse
 * every request with node:http + undici (as a policy that reads method, path or headers does);
 * --dst-bytes relays as bytes unparsed (`--trust-tunnel-senders`): the A/B/C of those in one build.
 *
 * Prints JSON: CPU-seconds per 1000 requests of each proxy process, and the load's latency.
 * Listens on 127.77.0.1-3 only (ports chosen by the kernel, except the server's 18080/18081).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CertificateAuthority } from '../certs/ca/authority.js';
import { type SvidWire, svidFromWire, svidToWire } from '../certs/index.js';
import { reportTo } from '../mesh-agent/agent/proxy-runtime.js';
import { InboundServer } from '../mesh-agent/inbound/server.js';
import { splice } from '../mesh-agent/io/streams.js';
import type { HttpRequestView, RouteDecision } from '../mesh-agent/outbound/plan.js';
import { OutboundServer } from '../mesh-agent/outbound/server.js';
import { MeshTelemetry } from '../mesh-agent/telemetry/mesh-telemetry.js';
import { identitySni } from '../mesh-agent/tunnel/peer.js';
import { TunnelPool } from '../mesh-agent/tunnel/pool.js';
import { TunnelServer } from '../mesh-agent/tunnel/server.js';
import { cpuSplit, rssMiB } from './lib/proc.js';
import {
  announce,
  benchSource,
  forkRole,
  mtlsServer,
  mtlsSession,
  oneEndpointCluster,
  remoteEndpoint,
  WORKLOADS,
} from './lib/roles.js';

const TD = 'micro.bench';
const SRC = `spiffe://${TD}/ns/bench/sa/client`;
const DST = `spiffe://${TD}/ns/bench/sa/server`;
const IP = { src: '127.77.0.1', dst: '127.77.0.2', server: '127.77.0.3' } as const;
const SERVER_PORT = 18081;
const BULK_PORT = 18082;

interface RoleEnv {
  role: 'src' | 'dst';
  /** `mesh`: the agent's classes; `proto`: the bare node:http2 CONNECT-over-mTLS prototype, for reference. */
  impl: 'mesh' | 'proto';
  /** l4: the TCP splice; l7: the agent's HTTP proxying on both sides (OutboundServer, InboundServer); bulk: l4 to the bulk sink. */
  path: 'l4' | 'l7' | 'bulk';
  svid: SvidWire;
  tunnel?: string;
  /** The destination parses HTTP (a policy there reads requests) instead of relaying it. */
  dstL7?: boolean;
  /** The destination relays HTTP as bytes, unparsed (`--trust-tunnel-senders`). */
  dstBytes?: boolean;
}

/** The reference: http2 CONNECT over mTLS with nothing else, the shape of the issue's Node prototype. */
async function runProtoDst(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const server = mtlsServer(svid, IP.dst);
  server.on('stream', (stream, headers) => {
    const [host, port] = String(headers[':authority']).split(':');
    const up = net.connect({ host, port: Number(port), noDelay: true }, () => {
      stream.respond({ ':status': 200 });
      stream.pipe(up).pipe(stream);
    });
    up.on('error', () => stream.destroy());
    stream.on('error', () => up.destroy());
  });
}

async function runProtoSrc(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const session = mtlsSession(env.tunnel ?? '', svid, DST);
  const server = net.createServer({ noDelay: true }, (sock) => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': targetOf(env) });
    sock.pipe(stream).pipe(sock);
    sock.on('error', () => stream.destroy());
    stream.on('error', () => sock.destroy());
  });
  server.listen(0, IP.src, () => {
    announce(`${IP.src}:${(server.address() as net.AddressInfo).port}`);
  });
}

function targetOf(env: RoleEnv): string {
  return `${IP.server}:${env.path === 'bulk' ? BULK_PORT : SERVER_PORT}`;
}

async function runDst(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const workload = {
    ip: IP.server,
    namespace: 'bench',
    name: 'server',
    serviceAccount: 'server',
    spiffeId: DST,
    version: 'v1',
    protocolOf: () => (env.path === 'l7' ? ('http' as const) : ('tcp' as const)),
  };
  const inbound = new InboundServer({
    workloads: { byIp: (ip) => (ip === IP.server ? workload : undefined) },
    authz: { check: () => ({ allowed: true }), needsHttp: () => env.dstL7 === true },
    trustSenderIdentity: env.dstBytes === true,
  });
  const server = new TunnelServer({
    identities: {
      svidBySni: (sni) => (sni === identitySni(DST) ? svid : undefined),
      bundle: () => svid.bundle,
    },
    handler: inbound,
  });
  const addr = await server.listen(0, IP.dst);
  announce(`${IP.dst}:${addr.port}`);
}

/**
 * The agent's outbound side as it is, with the decisions of a one-rule HTTPRoute stubbed in place of
 * the xDS-fed planner (routing itself is ~1 % of an L7 request's CPU) and the agent's telemetry.
 */
async function runSrcL7(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const telemetry = new MeshTelemetry({ nodeName: 'micro-src' });
  const endpoint = remoteEndpoint(IP.server, SERVER_PORT, env.tunnel ?? '', DST, 'server');
  const cluster = oneEndpointCluster('outbound|8080||web.bench.svc.cluster.local', 'web', endpoint);
  const source = benchSource(SRC);
  const route = (req: HttpRequestView): RouteDecision => {
    // The planner hands back a fresh header object the route's mutations were applied to.
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = v;
    return {
      kind: 'forward',
      cluster,
      timeoutMs: 15_000,
      idleTimeoutMs: undefined,
      retry: undefined,
      headers,
      hashKey: undefined,
      routeName: 'web',
    };
  };
  const inbound = new InboundServer({
    workloads: { byIp: () => undefined },
    authz: { check: () => ({ allowed: true }), needsHttp: () => false },
  });
  const outbound = new OutboundServer({
    planner: {
      plan: () => ({ kind: 'http', service: 'web.bench.svc.cluster.local', route }),
      endpointAt: () => undefined,
    },
    origDst: { lookup: () => ({ ip: '10.96.1.10', port: 8080 }) },
    sources: { byIp: () => source },
    svids: { svidFor: () => svid },
    tunnels: new TunnelPool(),
    inbound,
    localWorkloads: { byIp: () => undefined },
    tracer: {
      startSpan: (name, parent, attrs, kind) => telemetry.startSpan(name, parent ?? null, attrs, kind),
    },
    events: { completed: (r) => reportTo(telemetry, r), breakerOverflow: () => {} },
  });
  const addr = await outbound.listen(0, IP.src);
  announce(`${IP.src}:${addr.port}`);
}

async function runSrc(env: RoleEnv): Promise<void> {
  if (env.path === 'l7') return runSrcL7(env);
  const svid = svidFromWire(env.svid);
  const pool = new TunnelPool();
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) => {
    sock.on('error', () => {});
    pool
      .open({
        source: svid,
        nodeAddress: env.tunnel ?? '',
        expectedServerId: DST,
        authority: targetOf(env),
        forwardedFor: `${sock.remoteAddress}:${sock.remotePort}`,
      })
      .then(
        (up) => {
          splice(sock, up);
          sock.resume();
        },
        () => sock.destroy(),
      );
  });
  server.listen(0, IP.src, () => {
    announce(`${IP.src}:${(server.address() as net.AddressInfo).port}`);
  });
}

/** One bulk.mjs transfer to `addr`: its JSON line ({bytes, seconds, gbps}). */
async function bulkTransfer(addr: string, seconds: number): Promise<{ bytes: number; gbps: number }> {
  const [host = '', port = ''] = addr.split(':');
  const gen = spawn(process.execPath, [join(WORKLOADS, 'bulk.mjs'), host, port, String(seconds)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  gen.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const [code] = await once(gen, 'close');
  if (code !== 0) throw new Error(`bulk.mjs to ${addr} exited with ${code}`);
  return JSON.parse(out) as { bytes: number; gbps: number };
}

/** Direct, then through the proxies; CPU of each proxy per GB it carried. */
async function bulkRun(
  direct: string,
  viaProxy: string,
  pids: { src: number; dst: number },
  seconds: number,
) {
  const base = await bulkTransfer(direct, seconds);
  const cpu0 = { src: cpuSplit(pids.src), dst: cpuSplit(pids.dst) };
  const through = await bulkTransfer(viaProxy, seconds);
  const cpu1 = { src: cpuSplit(pids.src), dst: cpuSplit(pids.dst) };
  const gb = through.bytes / 1e9;
  const perGb = (a: { user: number; system: number }, b: { user: number; system: number }) =>
    +((b.user - a.user + b.system - a.system) / gb).toFixed(3);
  return {
    directGbps: +base.gbps.toFixed(3),
    gbps: +through.gbps.toFixed(3),
    ratio: +(through.gbps / base.gbps).toFixed(3),
    srcCpuPerGb: perGb(cpu0.src, cpu1.src),
    dstCpuPerGb: perGb(cpu0.dst, cpu1.dst),
    srcCores: +((cpu1.src.user + cpu1.src.system - cpu0.src.user - cpu0.src.system) / seconds).toFixed(3),
    dstCores: +((cpu1.dst.user + cpu1.dst.system - cpu0.dst.user - cpu0.dst.system) / seconds).toFixed(3),
    rssMiB: { src: Math.round(rssMiB(pids.src)), dst: Math.round(rssMiB(pids.dst)) },
  };
}

function startRole(env: RoleEnv, execArgv: string[]): Promise<{ child: ChildProcess; address: string }> {
  return forkRole(fileURLToPath(import.meta.url), 'MICRO_ROLE', env, execArgv);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: 'boolean', default: false },
      rate: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '10' },
      connections: { type: 'string', default: '16' },
      'proxy-args': { type: 'string', default: '' },
      runs: { type: 'string', default: '1' },
      impl: { type: 'string', default: 'mesh' },
      path: { type: 'string', default: 'l4' },
      'dst-l7': { type: 'boolean', default: false },
      'dst-bytes': { type: 'boolean', default: false },
    },
  });
  if (values.role) {
    const env = JSON.parse(process.env.MICRO_ROLE ?? '{}') as RoleEnv;
    // A clean exit, so --cpu-prof (passed with --proxy-args) gets to write its profile.
    process.on('SIGTERM', () => process.exit(0));
    if (env.impl === 'proto') await (env.role === 'src' ? runProtoSrc(env) : runProtoDst(env));
    else await (env.role === 'src' ? runSrc(env) : runDst(env));
    return;
  }
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const proxyArgs = values['proxy-args'].split(' ').filter(Boolean);
  const children: ChildProcess[] = [];
  try {
    const backend = spawn(process.execPath, [join(WORKLOADS, 'server.mjs')], {
      env: {
        ...process.env,
        HOST: IP.server,
        PORT_HTTP: String(SERVER_PORT),
        PORT_BULK: String(BULK_PORT),
        PORT_ECHO: '0',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(backend);
    await once(backend.stdout!, 'data');
    const impl = values.impl === 'proto' ? 'proto' : 'mesh';
    const path = values.path === 'l7' ? 'l7' : values.path === 'bulk' ? 'bulk' : 'l4';
    if (impl === 'proto' && path === 'l7') throw new Error('the prototype is L4 only');
    const dst = await startRole(
      {
        role: 'dst',
        impl,
        path,
        svid: svidToWire(await ca.issueSvid(DST)),
        dstL7: values['dst-l7'],
        dstBytes: values['dst-bytes'],
      },
      proxyArgs,
    );
    children.push(dst.child);
    const src = await startRole(
      { role: 'src', impl, path, svid: svidToWire(await ca.issueSvid(SRC)), tunnel: dst.address },
      proxyArgs,
    );
    children.push(src.child);
    const pids = { src: src.child.pid ?? 0, dst: dst.child.pid ?? 0 };
    const seconds = Number(values.seconds);
    const rate = Number(values.rate);
    const results = [];
    if (path === 'bulk') {
      for (let run = 0; run < Number(values.runs); run++) {
        results.push(await bulkRun(`${IP.server}:${BULK_PORT}`, src.address, pids, seconds));
      }
    }
    for (let run = 0; path !== 'bulk' && run < Number(values.runs); run++) {
      const cpu0 = { src: cpuSplit(pids.src), dst: cpuSplit(pids.dst) };
      const gen = spawn(
        process.execPath,
        [
          join(WORKLOADS, 'open-loop.mjs'),
          `http://${src.address}/`,
          String(rate),
          String(seconds),
          values.connections,
          '1',
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      gen.stdout?.on('data', (b: Buffer) => {
        out += b.toString();
      });
      await once(gen, 'close');
      const load = JSON.parse(out) as { latencyMs: Record<string, number>; errors: number };
      const per1k = (a: { user: number; system: number }, b: { user: number; system: number }) => ({
        user: (b.user - a.user) / ((rate * (seconds + 1)) / 1000),
        system: (b.system - a.system) / ((rate * (seconds + 1)) / 1000),
      });
      const s = per1k(cpu0.src, cpuSplit(pids.src));
      const d = per1k(cpu0.dst, cpuSplit(pids.dst));
      results.push({
        dst: values['dst-l7'] ? 'parsed' : values['dst-bytes'] ? 'bytes' : 'lean',
        srcCpuPer1k: +(s.user + s.system).toFixed(4),
        dstCpuPer1k: +(d.user + d.system).toFixed(4),
        split: { src: s, dst: d },
        p50: +(load.latencyMs.p50 ?? 0).toFixed(3),
        p90: +(load.latencyMs.p90 ?? 0).toFixed(3),
        p99: +(load.latencyMs.p99 ?? 0).toFixed(3),
        errors: load.errors,
        rssMiB: { src: Math.round(rssMiB(pids.src)), dst: Math.round(rssMiB(pids.dst)) },
      });
    }
    for (const r of results) process.stdout.write(`${JSON.stringify(r)}\n`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    for (const c of children) c.kill('SIGKILL');
  }
}

await main();
