/**
 * The pod-facing HTTP/1.1 server of the caller's node (mesh-agent/io/http1-server.ts), black box:
 * raw bytes from a "pod" socket into an OutboundServer wired as the agent wires it (the harness),
 * in front of a real node:http upstream on loopback. What pods do with HTTP/1.1: long keep-alive
 * connections, pipelining, chunked bodies both ways, 100-continue, Upgrade, HTTP/1.0, HEAD and
 * 204, a client that resets mid-body, a client that reads its answer slowly (the upstream is held
 * back: memory stays bounded), and the headers timeout counted from a request's first byte.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  type Harness,
  localCluster,
  type MeshResources,
  reviewsRoutes,
  startOutbound,
} from './fixtures/outbound-harness.js';

const MiB = 2 ** 20;

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  chunked: boolean;
}

/** A pod's connection: bytes in, answers parsed as they come (length, chunked, or to the close). */
class Pod {
  readonly sock: net.Socket;
  private buf = Buffer.alloc(0);
  closed = false;
  private wake: (() => void) | undefined;
  /** Answers to HEAD requests have no body: say so before reading them. */
  headNext = 0;

  constructor(port: number) {
    this.sock = net.connect(port, '127.0.0.1');
    this.sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  async connected(): Promise<this> {
    await once(this.sock, 'connect');
    return this;
  }

  write(s: string | Buffer): void {
    this.sock.write(s);
  }

  private async more(what: string, ms = 5000): Promise<void> {
    if (this.closed) throw new Error(`closed while waiting for ${what}; have ${this.buf.toString('latin1')}`);
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve, reject) => {
      this.wake = resolve;
      timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    }).finally(() => {
      clearTimeout(timer);
      this.wake = undefined;
    });
  }

  /** Bytes up to and including `marker`. */
  async until(marker: string): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(marker);
      if (i >= 0) {
        const s = this.buf.subarray(0, i + marker.length).toString('latin1');
        this.buf = this.buf.subarray(i + marker.length);
        return s;
      }
      await this.more(JSON.stringify(marker));
    }
  }

  private async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) await this.more(`${n} bytes`);
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return b;
  }

  async answer(): Promise<Answer> {
    const head = await this.until('\r\n\r\n');
    const [line, ...rest] = head.trimEnd().split('\r\n');
    const status = Number(line!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of rest) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const bodiless = status < 200 || status === 204 || status === 304 || this.headNext-- > 0;
    if (this.headNext < 0) this.headNext = 0;
    if (bodiless) return { status, headers, body: Buffer.alloc(0), chunked: false };
    if (headers['content-length'] !== undefined)
      return { status, headers, body: await this.take(Number(headers['content-length'])), chunked: false };
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const size = Number.parseInt(await this.until('\r\n'), 16);
        if (size === 0) {
          await this.until('\r\n');
          return { status, headers, body: Buffer.concat(parts), chunked: true };
        }
        parts.push(await this.take(size));
        await this.take(2);
      }
    }
    while (!this.closed) await this.more('the close').catch(() => {});
    const body = this.buf;
    this.buf = Buffer.alloc(0);
    return { status, headers, body, chunked: false };
  }

  async closedByPeer(ms = 5000): Promise<void> {
    const until = Date.now() + ms;
    while (!this.closed && Date.now() < until)
      await this.more('the close', until - Date.now()).catch(() => {});
    assert.ok(this.closed, 'the agent closed the connection');
  }

  /** What came after the answers read so far. */
  rest(): string {
    return this.buf.toString('latin1');
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** What the upstream saw of each request. */
interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  aborted: boolean;
}

describe('the pod-facing HTTP/1.1 server on the caller node', { timeout: 120_000 }, () => {
  let harness: Harness;
  let upstream: http.Server;
  const seen: Seen[] = [];
  /** Bytes the /big handler managed to hand to its socket while the pod read nothing. */
  let bigWritten = 0;
  let releaseBig: (() => void) | undefined;
  /** Resumes the /sink handler, which reads nothing of its request body until then. */
  let releaseSink: (() => void) | undefined;

  before(async () => {
    upstream = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const chunks: Buffer[] = [];
      const rec: Seen = {
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        body: '',
        aborted: false,
      };
      seen.push(rec);
      if (url.pathname === '/sink') {
        // Reads nothing of the body until released, then counts it.
        req.pause();
        let bytes = 0;
        releaseSink = () => {
          req.on('data', (c: Buffer) => {
            bytes += c.length;
          });
          req.on('end', () => res.end(String(bytes)));
          req.resume();
        };
        return;
      }
      req.on('aborted', () => {
        rec.aborted = true;
      });
      req.on('error', () => {
        rec.aborted = true;
      });
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        rec.body = Buffer.concat(chunks).toString();
        const ms = Number(url.searchParams.get('delay') ?? 0);
        setTimeout(() => answer(url, req, res, rec), ms);
      });
    });
    const answer = (url: URL, req: http.IncomingMessage, res: http.ServerResponse, rec: Seen) => {
      switch (url.pathname) {
        case '/chunked':
          // No length: node:http answers chunked, and so must the agent.
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('one,');
          setTimeout(() => res.end('two,three'), 20);
          return;
        case '/head':
          res.writeHead(200, { 'content-length': '1234' });
          res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(1234));
          return;
        case '/empty':
          res.writeHead(204).end();
          return;
        case '/big': {
          // 64 MiB, written as fast as the socket takes it.
          const block = Buffer.alloc(MiB, 'b');
          let left = 64;
          res.writeHead(200, { 'content-length': String(64 * MiB) });
          const pump = () => {
            while (left > 0) {
              left--;
              bigWritten += MiB;
              if (!res.write(block)) {
                res.once('drain', pump);
                return;
              }
            }
            res.end();
          };
          releaseBig = pump;
          pump();
          return;
        }
        default:
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ path: req.url, method: req.method, bytes: rec.body.length }));
      }
    };
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const port = (upstream.address() as AddressInfo).port;
    const mesh: MeshResources = {
      vip: { http: true },
      routes: reviewsRoutes([{ match: { prefix: '/' }, route: { cluster: 'reviews' } }]),
      clusters: [localCluster('reviews', [port])],
    };
    harness = await startOutbound(mesh, {
      limits: { headersTimeoutMs: 600, idleTimeoutMs: 4000, streamIdleTimeoutMs: 4000 },
    });
  });

  after(async () => {
    await harness?.close();
    upstream?.closeAllConnections();
    upstream?.close();
  });

  const pod = () => new Pod(harness.port).connected();
  const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: reviews\r\n${extra}\r\n`;

  it('keep-alive: 300 requests one after another on one connection, each answered and routed', async () => {
    const p = await pod();
    const before = seen.length;
    for (let i = 0; i < 300; i++) {
      p.write(get(`/ka/${i}`));
      const a = await p.answer();
      assert.equal(a.status, 200);
      assert.equal(JSON.parse(a.body.toString()).path, `/ka/${i}`);
      assert.notEqual(a.headers.connection, 'close');
    }
    assert.equal(seen.length - before, 300);
    assert.equal(p.closed, false, 'the connection stays open');
    p.destroy();
  });

  it('pipelining: answers come in request order though later ones are ready first', async () => {
    const p = await pod();
    p.write(
      get('/pipe/1?delay=300') +
        get('/pipe/2?delay=150') +
        get('/pipe/3') +
        `POST /pipe/4 HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhello`,
    );
    const paths: string[] = [];
    for (let i = 0; i < 4; i++) paths.push(JSON.parse((await p.answer()).body.toString()).path);
    assert.deepEqual(paths, ['/pipe/1?delay=300', '/pipe/2?delay=150', '/pipe/3', '/pipe/4']);
    assert.equal(seen.find((s) => s.url === '/pipe/4')?.body, 'hello');
    p.write(get('/pipe/after'));
    assert.equal((await p.answer()).status, 200);
    p.destroy();
  });

  it('chunked both ways: a chunked request body arrives whole, an answer without length goes out chunked', async () => {
    const p = await pod();
    p.write('POST /upload HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
    await new Promise((r) => setTimeout(r, 50));
    p.write('6\r\n world\r\n0\r\n\r\n');
    const a = await p.answer();
    assert.equal(a.status, 200);
    assert.equal(JSON.parse(a.body.toString()).bytes, 11);
    assert.equal(seen.find((s) => s.url === '/upload')?.body, 'hello world');
    p.write(get('/chunked'));
    const c = await p.answer();
    assert.equal(c.chunked, true);
    assert.equal(c.body.toString(), 'one,two,three');
    p.write(get('/after-chunked'));
    assert.equal((await p.answer()).status, 200, 'the connection serves on');
    p.destroy();
  });

  it('Expect: 100-continue is answered 100 before the body is sent', async () => {
    const p = await pod();
    p.write('POST /continue HTTP/1.1\r\nHost: reviews\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n');
    const interim = await p.until('\r\n\r\n');
    assert.match(interim, /^HTTP\/1\.1 100 Continue\r\n/);
    p.write('data');
    const a = await p.answer();
    assert.equal(a.status, 200);
    assert.equal(seen.find((s) => s.url === '/continue')?.body, 'data');
    assert.equal(
      seen.find((s) => s.url === '/continue')?.headers.expect,
      undefined,
      'the expectation is this hop’s',
    );
    p.write('POST /expect HTTP/1.1\r\nHost: reviews\r\nContent-Length: 0\r\nExpect: something-else\r\n\r\n');
    assert.equal((await p.answer()).status, 417);
    p.destroy();
  });

  it('Upgrade: served as plain HTTP/1.1 (no 101, no Upgrade upstream), the connection closes after', async () => {
    const p = await pod();
    p.write(
      get(
        '/ws',
        'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n',
      ),
    );
    const a = await p.answer();
    assert.equal(a.status, 200);
    const s = seen.find((x) => x.url === '/ws');
    assert.ok(s, 'forwarded');
    assert.equal(s.headers.upgrade, undefined);
    assert.equal(a.headers.connection, 'close', 'the answer says the connection ends');
    p.write('\x81\x05hello');
    await p.closedByPeer();
    assert.equal(p.rest(), '', 'the bytes after the upgrade request are not read as HTTP/1.1');
  });

  it('Connection: close: its body may come in several reads; nothing pipelined after it goes upstream', async () => {
    const p = await pod();
    p.write('POST /last HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\nContent-Length: 10\r\n\r\nfirst');
    await new Promise((r) => setTimeout(r, 50));
    p.write(`-half${get('/after-last')}`);
    const a = await p.answer();
    assert.equal(a.status, 200);
    assert.equal(a.headers.connection, 'close');
    assert.equal(JSON.parse(a.body.toString()).bytes, 10);
    await p.closedByPeer();
    assert.ok(!seen.some((s) => s.url === '/after-last'), 'a request after Connection: close went upstream');
  });

  it('HTTP/1.0: no Host needed, answers close-delimited unless keep-alive with a length', async () => {
    const p = await pod();
    p.write('GET /chunked HTTP/1.0\r\n\r\n');
    const a = await p.answer();
    assert.equal(a.status, 200);
    assert.equal(a.chunked, false, 'no chunked to an HTTP/1.0 client');
    assert.equal(a.body.toString(), 'one,two,three');
    assert.ok(p.closed);
    const k = await pod();
    // /head answers with its length.
    k.write('GET /head HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const first = await k.answer();
    assert.equal(first.status, 200);
    assert.equal(first.headers.connection, 'keep-alive');
    k.write('GET /head HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    assert.equal((await k.answer()).status, 200);
    k.destroy();
  });

  it('HEAD and 204: no body, and the connection serves the next request', async () => {
    const p = await pod();
    p.headNext = 1;
    p.write('HEAD /head HTTP/1.1\r\nHost: reviews\r\n\r\n');
    const h = await p.answer();
    assert.equal(h.status, 200);
    assert.equal(h.headers['content-length'], '1234');
    p.write(get('/empty'));
    const e = await p.answer();
    assert.equal(e.status, 204);
    assert.equal(e.headers['transfer-encoding'], undefined);
    p.write(get('/after-head'));
    const n = await p.answer();
    assert.equal(JSON.parse(n.body.toString()).path, '/after-head', 'nothing of a body was left on the wire');
    p.destroy();
  });

  it('HTTP/1.1 without Host: 400, closed, nothing upstream', async () => {
    const p = await pod();
    const before = seen.length;
    p.write('GET /no-host HTTP/1.1\r\n\r\n');
    assert.equal((await p.answer()).status, 400);
    await p.closedByPeer();
    assert.equal(seen.length, before);
  });

  it('a client reset mid-body: the upstream request is aborted, the agent serves on', async () => {
    const p = await pod();
    p.write('POST /reset HTTP/1.1\r\nHost: reviews\r\nContent-Length: 1000000\r\n\r\n');
    p.write(Buffer.alloc(64 * 1024, 'r'));
    const until = Date.now() + 5000;
    while (!seen.some((s) => s.url === '/reset') && Date.now() < until)
      await new Promise((r) => setTimeout(r, 20));
    p.sock.resetAndDestroy();
    while (!seen.find((s) => s.url === '/reset')?.aborted && Date.now() < until)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(seen.find((s) => s.url === '/reset')?.aborted, true, 'the upstream saw the request cut');
    const q = await pod();
    q.write(get('/after-reset'));
    assert.equal((await q.answer()).status, 200);
    q.destroy();
  });

  it('a slow reader: the upstream is held back (bounded memory), and every byte arrives', async () => {
    const p = await pod();
    p.sock.pause();
    p.write(get('/big'));
    // Give the upstream every chance to push its 64 MiB while the pod reads nothing.
    await new Promise((r) => setTimeout(r, 1500));
    const held = bigWritten;
    assert.ok(held < 16 * MiB, `the upstream wrote ${held / MiB} MiB into a pod that reads nothing`);
    assert.ok(releaseBig, 'the upstream is answering');
    let got = 0;
    let head = '';
    p.sock.removeAllListeners('data');
    await new Promise<void>((resolve) => {
      p.sock.on('data', (d: Buffer) => {
        if (!head.includes('\r\n\r\n')) {
          const s = d.toString('latin1');
          const i = (head + s).indexOf('\r\n\r\n');
          if (i < 0) {
            head += s;
            return;
          }
          got += d.length - (i + 4 - head.length);
          head += s.slice(0, i + 4 - head.length);
        } else got += d.length;
        if (got >= 64 * MiB) resolve();
      });
      p.sock.resume();
    });
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.equal(got, 64 * MiB);
    p.destroy();
  });

  it("a slow upstream: the pod's request body is held back (bounded memory), and every byte arrives", async () => {
    const p = await pod();
    const size = 64 * MiB;
    p.write(`POST /sink HTTP/1.1\r\nHost: reviews\r\ncontent-length: ${size}\r\n\r\n`);
    const block = Buffer.alloc(MiB, 's');
    for (let i = 0; i < 64; i++) p.write(block);
    // The upstream reads nothing: the agent must stop reading the pod (its handle, not only its stream).
    await new Promise((r) => setTimeout(r, 1500));
    const taken = p.sock.bytesWritten - p.sock.writableLength;
    assert.ok(taken < 16 * MiB, `the agent took ${taken / MiB} MiB of a body nobody reads`);
    assert.ok(releaseSink, 'the upstream has the request');
    releaseSink();
    const a = await p.answer();
    assert.equal(a.status, 200);
    assert.equal(a.body.toString(), String(size));
    p.destroy();
  });

  it('headers timeout from the first byte (as Envoy): a silent connection waits for the idle timeout, a slow head gets 408', async () => {
    const silent = await pod();
    // Past the headers timeout (600 ms) but within the idle timeout (4 s): still open, and served.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(silent.closed, false, 'a silent connection is left to the idle timeout');
    silent.write(get('/after-silence'));
    assert.equal((await silent.answer()).status, 200);
    silent.destroy();
    const slow = await pod();
    slow.write('GET /slow-head HTTP/1.1\r\nHost: reviews\r\n');
    const a = await slow.answer();
    assert.equal(a.status, 408);
    await slow.closedByPeer();
    assert.ok(!seen.some((s) => s.url === '/slow-head'));
  });
});
