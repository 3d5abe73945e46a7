/**
 * The pod-facing HTTP/1.1 server alone (mesh-agent/io/http1-server.ts), for the one question of
 * how it reads the pod's socket: `native` lets llhttp read the socket's handle itself
 * (parser.consume, as node:http's server does), `stream` makes it read 'data' events (the handle
 * is marked taken before the server sees the socket, so the server falls back to its stream
 * path). Same build, same process layout, the two modes alternated round by round.
 *
 *   node dist/bench/http1-server-read.js [--rounds 3] [--seconds 8] [--connections 16]
 *
 * A server process answers every request with 1 KiB at once; this process is the load: each of
 * --connections keep-alive connections sends its next GET when the last answer is in (closed
 * loop). Prints one JSON line per run: requests, CPU-seconds per 1 000 requests of the server
 * process (user and system), the load average. (Instruction counts were the plan: this VM has no
 * PMU, `perf stat -e instructions:u` says "not supported".)
 * Listens on 127.0.0.1, port chosen by the kernel.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { httpLimits } from '../mesh-agent/io/http-limits.js';
import { Http1Server } from '../mesh-agent/io/http1-server.js';
import { cpuSplit } from './lib/proc.js';
import { forkRole } from './lib/roles.js';

const ROLE_ENV = 'SOCKMESH_HTTP1_READ_ROLE';
type Mode = 'native' | 'stream';

if (process.argv.includes('--role')) serve(JSON.parse(process.env[ROLE_ENV]!).mode as Mode);
else await main();

function serve(mode: Mode): void {
  const body = 'x'.repeat(1024);
  const http = new Http1Server(httpLimits(), (_req, answer) =>
    answer.respond(200, { 'content-type': 'text/plain' }, body),
  );
  const listener = net.createServer({ pauseOnConnect: true }, (sock) => {
    // The load generator resets its connections at the end of a run.
    sock.on('error', () => {});
    if (mode === 'stream') (sock as unknown as { _handle: { _consumed?: boolean } })._handle._consumed = true;
    http.serve(sock);
  });
  listener.listen(0, '127.0.0.1', () => {
    const { port } = listener.address() as net.AddressInfo;
    process.send?.({ listening: `127.0.0.1:${port}` });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '8' },
      connections: { type: 'string', default: '16' },
    },
  });
  const script = fileURLToPath(import.meta.url);
  for (let round = 1; round <= Number(values.rounds); round++) {
    for (const mode of ['stream', 'native'] as const) {
      const { child, address } = await forkRole(script, ROLE_ENV, { role: 'server', mode } as {
        role: string;
      });
      try {
        const row = await load(child, address, Number(values.seconds), Number(values.connections));
        console.log(JSON.stringify({ round, mode, ...row, load: (await import('node:os')).loadavg() }));
      } finally {
        child.kill();
        await once(child, 'exit');
      }
    }
  }
}

/** Closed-loop load; the server's CPU counted after a 2 s warm-up. */
async function load(
  server: ChildProcess,
  address: string,
  seconds: number,
  connections: number,
): Promise<Record<string, number>> {
  const [host, port] = address.split(':');
  let answered = 0;
  let running = true;
  const request = Buffer.from('GET /bench HTTP/1.1\r\nHost: reviews\r\n\r\n', 'latin1');
  const socks: net.Socket[] = [];
  for (let i = 0; i < connections; i++) {
    const s = net.connect(Number(port), host);
    await once(s, 'connect');
    let buf: Buffer = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const m = /content-length: (\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
        const total = end + 4 + Number(m?.[1] ?? 0);
        if (buf.length < total) return;
        buf = buf.subarray(total);
        answered++;
        if (running) s.write(request);
      }
    });
    s.write(request);
    socks.push(s);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const pid = server.pid!;
  const cpu0 = cpuSplit(pid);
  const n0 = answered;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const cpu1 = cpuSplit(pid);
  const requests = answered - n0;
  running = false;
  for (const s of socks) s.destroy();
  const cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system;
  return {
    requests,
    reqPerSec: Math.round(requests / seconds),
    cpuPer1k: Number(((cpu / requests) * 1000).toFixed(4)),
    userPer1k: Number((((cpu1.user - cpu0.user) / requests) * 1000).toFixed(4)),
    systemPer1k: Number((((cpu1.system - cpu0.system) / requests) * 1000).toFixed(4)),
  };
}
