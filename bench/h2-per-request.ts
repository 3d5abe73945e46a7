/**
 * Issue 16's lever "requests multiplexed between nodes", measured before building it: what one L7
 * request costs each node when it crosses as HTTP/1.1 inside a CONNECT stream of the mTLS tunnel
 * (today's shape: the caller's node keeps HTTP/1.1 connections to the pod running inside CONNECT
 * streams, the destination relays their bytes) against one HTTP/2 stream per request on the same
 * session (the destination turns each stream back into HTTP/1.1 for the pod, on pooled
 * connections). Both designs share everything else: the same node:http front for the client, the
 * same lean HTTP/1.1 client (outbound/http1-upstream.ts), one TLS 1.3 session with the SVIDs of the
 * mesh, the bench server and the open-loop load of scenario 2.
 *
 *   node --import tsx bench/h2-per-request.ts [--rate 1000] [--seconds 10] [--pairs 3]
 *
 * Prints one JSON line per run (design, CPU-seconds per 1 000 requests of each side, latency) and
 * writes bench/results/lever-h2-per-request.json. Listens on 127.78.0.1-3 only.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CertificateAuthority } from '../certs/ca/authority.js';
import { type SvidWire, svidFromWire, svidToWire } from '../certs/index.js';
import { HOP_BY_HOP } from '../mesh-agent/io/headers.js';
import { Http1Upstream } from '../mesh-agent/outbound/http1-upstream.js';
import { cpuSplit } from './lib/proc.js';
import { announce, forkRole, mtlsServer, mtlsSession, WORKLOADS } from './lib/roles.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const TD = 'h2req.bench';
const SRC = `spiffe://${TD}/ns/bench/sa/client`;
const DST = `spiffe://${TD}/ns/bench/sa/server`;
const IP = { src: '127.78.0.1', dst: '127.78.0.2', server: '127.78.0.3' } as const;
const SERVER_PORT = 18091;
const UPSTREAM = `${IP.server}:${SERVER_PORT}`;

type Design = 'connect' | 'streams';
interface RoleEnv {
  role: 'src' | 'dst';
  design: Design;
  svid: SvidWire;
  tunnel?: string;
}

/** Idle HTTP/1.1 connections, one request at a time each, as the agent's upstream pools keep them. */
class Http1Pool {
  private readonly idle: Http1Upstream[] = [];
  constructor(private readonly connect: () => Promise<Duplex>) {}
  take(): Http1Upstream {
    return (
      this.idle.pop() ??
      new Http1Upstream(
        this.connect,
        (c) => {
          const i = this.idle.indexOf(c);
          if (i >= 0) this.idle.splice(i, 1);
        },
        UPSTREAM,
      )
    );
  }
  give(c: Http1Upstream): void {
    this.idle.push(c);
  }
}

function endToEnd(
  h: http.IncomingHttpHeaders | http2.IncomingHttpHeaders,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || k.startsWith(':') || HOP_BY_HOP.has(k)) continue;
    out[k] = v as string | string[];
  }
  return out;
}

async function runDst(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const server = mtlsServer(svid, IP.dst);
  const [host, port] = UPSTREAM.split(':');
  const dial = () =>
    new Promise<Duplex>((resolve, reject) => {
      const s = net.connect({ host, port: Number(port), noDelay: true }, () => resolve(s));
      s.once('error', reject);
    });
  const pool = new Http1Pool(dial);
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    if (env.design === 'connect') {
      // Today's relay: the CONNECT stream's bytes to the pod and back.
      dial().then(
        (up) => {
          stream.respond({ ':status': 200 });
          stream.pipe(up).pipe(stream);
          up.on('error', () => stream.destroy());
        },
        () => stream.close(http2.constants.NGHTTP2_CONNECT_ERROR),
      );
      return;
    }
    const conn = pool.take();
    conn
      .request({
        method: String(headers[':method']),
        path: String(headers[':path']),
        headers: { ...endToEnd(headers), host: String(headers[':authority']) },
        body: null,
      })
      .then(
        (res) => {
          stream.respond({ ':status': res.statusCode, ...res.headers });
          res.body.pipe(stream);
          res.body.once('end', () => pool.give(conn));
        },
        () => stream.respond({ ':status': 503 }, { endStream: true }),
      );
  });
}

async function runSrc(env: RoleEnv): Promise<void> {
  const svid = svidFromWire(env.svid);
  const session = mtlsSession(env.tunnel ?? '', svid, DST);
  const pool = new Http1Pool(
    () =>
      new Promise<Duplex>((resolve, reject) => {
        const s = session.request({ ':method': 'CONNECT', ':authority': UPSTREAM });
        s.once('response', () => resolve(s));
        s.once('error', reject);
      }),
  );
  const front = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    if (env.design === 'connect') {
      const conn = pool.take();
      conn
        .request({
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          headers: endToEnd(req.headers),
          body: null,
        })
        .then(
          (up) => {
            res.writeHead(up.statusCode, up.headers);
            up.body.pipe(res);
            up.body.once('end', () => pool.give(conn));
          },
          () => res.writeHead(503).end(),
        );
      return;
    }
    const up = session.request({
      ':method': req.method ?? 'GET',
      ':path': req.url ?? '/',
      ':authority': UPSTREAM,
      ...endToEnd(req.headers),
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(503);
      res.end();
    });
    up.once('response', (h) => {
      res.writeHead(Number(h[':status']), endToEnd(h));
      up.pipe(res);
    });
  });
  front.listen(0, IP.src, () => {
    announce(`${IP.src}:${(front.address() as net.AddressInfo).port}`);
  });
}

function startRole(env: RoleEnv): Promise<{ child: ChildProcess; address: string }> {
  return forkRole(fileURLToPath(import.meta.url), 'H2REQ_ROLE', env);
}

async function measure(
  ca: CertificateAuthority,
  design: Design,
  rate: number,
  seconds: number,
): Promise<Record<string, unknown>> {
  const children: ChildProcess[] = [];
  try {
    const dst = await startRole({ role: 'dst', design, svid: svidToWire(await ca.issueSvid(DST)) });
    children.push(dst.child);
    const src = await startRole({
      role: 'src',
      design,
      svid: svidToWire(await ca.issueSvid(SRC)),
      tunnel: dst.address,
    });
    children.push(src.child);
    const run = async (secs: number) => {
      const pids = { src: src.child.pid ?? 0, dst: dst.child.pid ?? 0 };
      const cpu0 = { src: cpuSplit(pids.src), dst: cpuSplit(pids.dst) };
      const load0 = loadavg()[0];
      const gen = spawn(
        process.execPath,
        [join(WORKLOADS, 'open-loop.mjs'), `http://${src.address}/`, String(rate), String(secs), '16', '1'],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      gen.stdout?.on('data', (b: Buffer) => {
        out += b.toString();
      });
      await once(gen, 'close');
      const load = JSON.parse(out) as { latencyMs: Record<string, number>; errors: number };
      const per1k = (a: { user: number; system: number }, b: { user: number; system: number }) =>
        +((b.user - a.user + b.system - a.system) / ((rate * (secs + 1)) / 1000)).toFixed(4);
      return {
        design,
        srcCpuPer1k: per1k(cpu0.src, cpuSplit(pids.src)),
        dstCpuPer1k: per1k(cpu0.dst, cpuSplit(pids.dst)),
        p50: +(load.latencyMs.p50 ?? 0).toFixed(3),
        p99: +(load.latencyMs.p99 ?? 0).toFixed(3),
        errors: load.errors,
        loadavg: [+load0!.toFixed(2), +loadavg()[0]!.toFixed(2)],
      };
    };
    await run(2); // warm-up: JIT, connections, TLS session
    return await run(seconds);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    for (const c of children) c.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: 'boolean', default: false },
      rate: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '10' },
      pairs: { type: 'string', default: '3' },
    },
  });
  if (values.role) {
    const env = JSON.parse(process.env.H2REQ_ROLE ?? '{}') as RoleEnv;
    process.on('SIGTERM', () => process.exit(0));
    await (env.role === 'src' ? runSrc(env) : runDst(env));
    return;
  }
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const backend = spawn(process.execPath, [join(WORKLOADS, 'server.mjs')], {
    env: { ...process.env, HOST: IP.server, PORT_HTTP: String(SERVER_PORT), PORT_BULK: '0', PORT_ECHO: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const runs: Record<string, unknown>[] = [];
  try {
    await once(backend.stdout!, 'data');
    for (let i = 0; i < Number(values.pairs); i++)
      for (const design of ['connect', 'streams'] as const) {
        const r = await measure(ca, design, Number(values.rate), Number(values.seconds));
        runs.push(r);
        process.stdout.write(`${JSON.stringify(r)}\n`);
      }
  } finally {
    backend.kill('SIGTERM');
  }
  const command = `node --import tsx bench/h2-per-request.ts ${process.argv.slice(2).join(' ')}`.trim();
  writeFileSync(
    join(HERE, 'results', 'lever-h2-per-request.json'),
    `${JSON.stringify({ command, at: new Date().toISOString(), node: process.version, runs }, null, 2)}\n`,
  );
}

await main();
