/**
 * The attacker's side of the listener suites: the agent's listeners in a child process
 * (bytes-target.ts), an upstream that records every byte it is sent, raw sockets, and HTTP/2
 * frames built by hand (HPACK literals without Huffman), so nothing between the test and
 * the agent's parser tidies the bytes up.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { HttpLimits } from '../../mesh-agent/io/http-limits.js';
import type { TargetMemory, TargetReady } from './bytes-target.js';

/** What the upstream was sent: raw bytes per connection, and the requests its parsers made of them. */
export interface Received {
  connections: number;
  bytes: Buffer;
  requests: Array<{
    proto: 'http/1.1' | 'h2';
    method: string;
    path: string;
    headers: string[];
    body: string;
  }>;
}

/**
 * The mesh's destination pod: HTTP/1.1 or h2c (prior knowledge) on one port, `200 ok` to
 * anything (after 2.5 s for `/slow...`), and a log of every byte received (what a proxy
 * passed on, whatever it parsed).
 */
export class RecordingUpstream {
  private readonly server: net.Server;
  private readonly h1 = http.createServer({ maxHeaderSize: 1 << 20 }, (req, res) =>
    this.answer('http/1.1', req, res),
  );
  private readonly h2 = http2.createServer((req, res) => this.answer('h2', req, res));
  private chunks: Buffer[] = [];
  private received: Received = { connections: 0, bytes: Buffer.alloc(0), requests: [] };
  port = 0;

  constructor() {
    this.h1.maxHeadersCount = 0;
    this.h1.on('clientError', (_e, s) => s.destroy());
    this.server = net.createServer((sock) => {
      this.received.connections++;
      sock.on('error', () => {});
      // The parsers read through a stream of our own, so every byte passes here first.
      const conn = new Duplex({
        read: () => sock.resume(),
        write: (c: Buffer, _e, cb) => sock.write(c, cb),
        final: (cb) => {
          sock.end();
          cb();
        },
        destroy: (_e, cb) => {
          sock.destroy();
          cb(null);
        },
      });
      let first = true;
      sock.on('data', (c: Buffer) => {
        this.chunks.push(c);
        if (first) {
          first = false;
          (c.subarray(0, 3).toString() === 'PRI' ? this.h2 : this.h1).emit('connection', conn);
        }
        if (!conn.push(c)) sock.pause();
      });
      sock.on('end', () => conn.push(null));
      sock.on('close', () => conn.destroy());
    });
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Everything received since the last call. */
  take(): Received {
    const got = { ...this.received, bytes: Buffer.concat(this.chunks) };
    this.chunks = [];
    this.received = { connections: 0, bytes: Buffer.alloc(0), requests: [] };
    return got;
  }

  close(): void {
    this.server.close();
    this.h1.close();
    this.h2.close();
  }

  private answer(
    proto: 'http/1.1' | 'h2',
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ): void {
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      this.received.requests.push({
        proto,
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.rawHeaders,
        body: Buffer.concat(body).toString('latin1'),
      });
      // `/slow`: an answer that takes a while, as a busy pod's does.
      const delay = req.url?.startsWith('/slow') ? 2500 : 0;
      setTimeout(() => (res as http.ServerResponse).end('ok'), delay);
    });
  }
}

export interface Target {
  ready: TargetReady['ready'];
  child: ChildProcess;
  /** Memory after a full GC, and the handles still open. */
  memory(): Promise<TargetMemory['memory']>;
  /** Resident set now and its high-water mark, from /proc (bytes). */
  rss(): { now: number; peak: number };
  alive(): boolean;
  stop(): Promise<void>;
}

const TARGET = path.join(path.dirname(fileURLToPath(import.meta.url)), 'bytes-target.ts');

export async function startTarget(upstreamPort: number, limits: Partial<HttpLimits> = {}): Promise<Target> {
  const child = fork(TARGET, [String(upstreamPort)], {
    execArgv: ['--import', 'tsx', '--expose-gc'],
    env: { ...process.env, SOCKMESH_ATTACK_LIMITS: JSON.stringify(limits) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await new Promise<TargetReady['ready']>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('attack target did not start in 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`attack target exited (${code}) before it was ready`)));
    child.on('message', (m) => {
      if (m && typeof m === 'object' && 'ready' in m) {
        clearTimeout(timer);
        resolve((m as TargetReady).ready);
      }
    });
  });
  const status = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
      readFileSync(`/proc/${child.pid}/status`, 'utf8'),
    );
    return Number(m?.[1] ?? 0) * 1024;
  };
  return {
    ready,
    child,
    memory: () =>
      new Promise((resolve) => {
        const on = (m: unknown) => {
          if (m && typeof m === 'object' && 'memory' in m) {
            child.off('message', on);
            resolve((m as TargetMemory).memory);
          }
        };
        child.on('message', on);
        child.send('gc');
      }),
    rss: () => ({ now: status('VmRSS'), peak: status('VmHWM') }),
    alive: () => child.exitCode === null && child.signalCode === null,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** What came back on one raw connection, and who ended it. */
export interface Exchange {
  data: Buffer;
  /** `closed`: the agent closed or reset it; `timeout`: still open after waitMs (the client then closes it). */
  end: 'closed' | 'timeout';
  error?: string;
}

export type Dial = () => net.Socket | tls.TLSSocket;

export function dialTcp(host: string, port: number): Dial {
  return () => quiet(net.connect({ host, port }));
}

/** TLS 1.3 to the tunnel with a real SVID, ALPN h2: what a peer agent dials. */
export function dialTunnel(port: number, client: TargetReady['ready']['client']): Dial {
  return () =>
    quiet(
      tls.connect({
        host: '127.0.0.1',
        port,
        servername: client.sni,
        cert: client.cert,
        key: client.key,
        ca: client.ca,
        ALPNProtocols: ['h2'],
        minVersion: 'TLSv1.3',
        // The server's SVID names a SPIFFE ID, not a host: identity is checked by the agents, not here.
        checkServerIdentity: () => undefined,
      }),
    );
}

/** An attacked connection's reset is expected: whoever reads the socket reports it, never the process. */
function quiet<S extends net.Socket>(s: S): S {
  s.on('error', () => {});
  return s;
}

/**
 * Sends `chunks` (a number is a pause in ms) and collects what comes back until the agent
 * closes the connection or `waitMs` passes after the last chunk.
 */
export async function exchange(
  dial: Dial,
  chunks: Array<Buffer | string | number>,
  waitMs: number,
  /** Stop waiting as soon as what came back says enough (a reset, an answer): `waitMs` is then only a bound. */
  until?: (data: Buffer) => boolean,
): Promise<Exchange> {
  const sock = dial();
  const got: Buffer[] = [];
  let error: string | undefined;
  let closed = false;
  let enough: () => void = () => {};
  const answered = new Promise<void>((resolve) => {
    enough = resolve;
  });
  sock.on('data', (c: Buffer) => {
    got.push(c);
    if (until?.(Buffer.concat(got))) enough();
  });
  sock.on('error', (e: NodeJS.ErrnoException) => {
    error = e.code ?? e.message;
  });
  // Not events.once: it rejects on the 'error' a reset brings, and a reset is an answer here.
  const close = new Promise<void>((resolve) =>
    sock.once('close', () => {
      closed = true;
      resolve();
    }),
  );
  await Promise.race([
    new Promise((resolve) => sock.once(sock instanceof tls.TLSSocket ? 'secureConnect' : 'connect', resolve)),
    close,
  ]);
  for (const c of chunks) {
    if (closed) break;
    if (typeof c === 'number') await new Promise((r) => setTimeout(r, c));
    else await new Promise<void>((resolve) => sock.write(c, () => resolve()));
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([close, answered, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
  clearTimeout(timer);
  if (!closed) sock.destroy();
  return { data: Buffer.concat(got), end: closed ? 'closed' : 'timeout', ...(error ? { error } : {}) };
}

/** The status codes of the HTTP/1.x responses in `data`, in order. */
export function statuses(data: Buffer): number[] {
  return [...data.toString('latin1').matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
}

// --- HTTP/2 frames, by hand ---

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;
export const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4, PADDED: 8, PRIORITY: 0x20 } as const;

export function frame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream >>> 0, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an `n`-bit prefix, the prefix's other bits set from `first`. */
function hpackInt(value: number, n: number, first = 0): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A header block of literals without indexing (names and values as given: case, CRLF and all). */
export function hpack(headers: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v);
  }
  return Buffer.concat(parts);
}

export function settings(values: Array<[number, number]> = []): Buffer {
  const p = Buffer.alloc(values.length * 6);
  values.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(v >>> 0, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, p);
}

export function rst(stream: number, code = 8): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, stream, p);
}

export function ping(data = Buffer.alloc(8)): Buffer {
  return frame(FRAME.PING, 0, 0, data);
}

/** A GET the way a client would send it, plus `extra` headers. */
export function request(
  stream: number,
  extra: Array<[string, string]> = [],
  opts: { method?: string; path?: string; endStream?: boolean } = {},
): Buffer {
  const block = hpack([
    [':method', opts.method ?? 'GET'],
    [':scheme', 'http'],
    [':path', opts.path ?? '/'],
    [':authority', 'reviews.shop'],
    ...extra,
  ]);
  return frame(
    FRAME.HEADERS,
    FLAG.END_HEADERS | (opts.endStream === false ? 0 : FLAG.END_STREAM),
    stream,
    block,
  );
}

/** A client's connection start: preface and empty SETTINGS. */
export const H2_START = Buffer.concat([PREFACE, settings()]);

/** Parsed frame headers of a server's answer (incomplete trailing bytes are ignored). */
export function frames(
  data: Buffer,
): Array<{ type: number; flags: number; stream: number; payload: Buffer }> {
  const out: Array<{ type: number; flags: number; stream: number; payload: Buffer }> = [];
  let at = 0;
  while (at + 9 <= data.length) {
    const len = data.readUIntBE(at, 3);
    if (at + 9 + len > data.length) break;
    out.push({
      type: data[at + 3]!,
      flags: data[at + 4]!,
      stream: data.readUInt32BE(at + 5) & 0x7fffffff,
      payload: data.subarray(at + 9, at + 9 + len),
    });
    at += 9 + len;
  }
  return out;
}

/** How a stream ended in a server's frames: `response` (HEADERS), `reset` (RST_STREAM), `goaway` (the session ended before answering it), or `none`. */
export function streamOutcome(data: Buffer, stream: number): 'response' | 'reset' | 'goaway' | 'none' {
  for (const f of frames(data)) {
    if (f.stream === stream && f.type === FRAME.HEADERS) return 'response';
    if (f.stream === stream && f.type === FRAME.RST_STREAM) return 'reset';
    if (f.type === FRAME.GOAWAY) return 'goaway';
  }
  return 'none';
}

/**
 * Opens a CONNECT stream through the tunnel (TLS 1.3 with the SVID, HTTP/2) to `authority`
 * and runs `exchange` over it: the bytes an agent's peer relays for a pod.
 */
export async function tunnelExchange(
  port: number,
  client: TargetReady['ready']['client'],
  authority: string,
  chunks: Array<Buffer | string | number>,
  waitMs: number,
): Promise<Exchange & { status: number }> {
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    createConnection: () => dialTunnel(port, client)(),
  });
  session.on('error', () => {});
  try {
    const stream = session.request({ ':method': 'CONNECT', ':authority': authority }, { endStream: false });
    const got: Buffer[] = [];
    let error: string | undefined;
    let closed = false;
    stream.on('data', (c: Buffer) => got.push(c));
    stream.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    // The agent's side ends (END_STREAM or a reset): ours stays writable, so 'close' would wait for us.
    const close = Promise.race([once(stream, 'end'), once(stream, 'close')]).then(
      () => {
        closed = true;
      },
      () => {
        closed = true;
      },
    );
    const [h] = (await Promise.race([once(stream, 'response'), close.then(() => [{}])])) as [
      http2.IncomingHttpHeaders,
    ];
    const status = Number(h[':status'] ?? 0);
    for (const c of chunks) {
      if (closed) break;
      if (typeof c === 'number') await new Promise((r) => setTimeout(r, c));
      else await new Promise<void>((resolve) => stream.write(c, () => resolve()));
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([close, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    return {
      status,
      data: Buffer.concat(got),
      end: closed ? 'closed' : 'timeout',
      ...(error ? { error } : {}),
    };
  } finally {
    session.destroy();
  }
}

/** A header block of any size as HEADERS plus CONTINUATION frames of at most 16 KiB (the default frame size). */
export function headerFrames(stream: number, block: Buffer, endStream = true): Buffer {
  const max = 16_384;
  const out: Buffer[] = [];
  for (let at = 0; at < block.length || at === 0; at += max) {
    const last = at + max >= block.length;
    const flags = (last ? FLAG.END_HEADERS : 0) | (at === 0 && endStream ? FLAG.END_STREAM : 0);
    out.push(
      frame(at === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, flags, stream, block.subarray(at, at + max)),
    );
  }
  return Buffer.concat(out);
}
