/**
 * The destination's lean HTTP/1.1 relay (default, no `--trust-tunnel-senders`): a port no
 * policy reads requests on is relayed with each request head rewritten (the caller's own
 * x-forwarded-client-cert replaced by the mTLS peer's), bodies as llhttp delimited them, and
 * the pod's answers back byte for byte. Real TLS 1.3 tunnel, HTTP/2 CONNECT, the real RBAC
 * evaluator, pods on loopback (node:http, and raw sockets that record every byte).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { parseRbac } from '../../../mesh-agent/authz/rbac.js';
import type { InboundServer } from '../../../mesh-agent/inbound/server.js';
import { TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import {
  type InboundTunnel,
  openAsSender,
  RbacCheck,
  reviewsPod,
  startInboundTunnel,
  throughTunnel,
} from './fixtures/inbound-tunnel.js';

const TD = 'lean-relay.test';
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;
const OURS = `By=${id('reviews')};URI=${id('frontend')}`;
const FORGED = 'By=spiffe://evil/ns/x/sa/y;URI=spiffe://evil/ns/x/sa/admin';

/** A pod that records every byte of every connection, answering with `answer(bytesSoFar, socket)`. */
class RawPod {
  readonly server: net.Server;
  readonly conns: Array<{ socket: net.Socket; bytes: Buffer[] }> = [];
  port = 0;
  constructor(onData: (conn: { socket: net.Socket; bytes: Buffer[] }, chunk: Buffer) => void) {
    this.server = net.createServer((socket) => {
      socket.on('error', () => {});
      const conn = { socket, bytes: [] as Buffer[] };
      this.conns.push(conn);
      socket.on('data', (d: Buffer) => {
        conn.bytes.push(d);
        onData(conn, d);
      });
    });
  }
  async listen(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as net.AddressInfo).port;
  }
  all(): string {
    return Buffer.concat(this.conns.flatMap((c) => c.bytes)).toString('latin1');
  }
  close(): void {
    for (const c of this.conns) c.socket.destroy();
    this.server.close();
  }
}

/** Reads from `s` until `done(text)` holds or the stream ends. */
async function readUntil(s: Duplex, done: (text: string) => boolean): Promise<string> {
  let text = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      text += d.toString('latin1');
      if (done(text)) finish();
    };
    const finish = () => {
      s.off('data', onData);
      s.off('end', finish);
      s.off('error', reject);
      resolve(text);
    };
    s.on('data', onData);
    s.once('end', finish);
    s.once('error', reject);
  });
}

/** A CONNECT stream to `port` behind `dest`, opened as the frontend's node opens it (HTTP). */
const openAsFrontend = (tp: TunnelPool, frontend: X509Svid, dest: InboundTunnel, port: number) =>
  openAsSender(tp, {
    source: frontend,
    nodeAddress: dest.address,
    expectedServerId: id('reviews'),
    authority: `127.0.0.1:${port}`,
    protocol: 'http',
  });

/** A listening pod that answers with `onData`; kept in `pods` to be closed after the suite. */
async function startRawPod(onData: ConstructorParameters<typeof RawPod>[0], pods: RawPod[]): Promise<RawPod> {
  const p = new RawPod(onData);
  await p.listen();
  pods.push(p);
  return p;
}

const count = (text: string, re: RegExp) => (text.match(re) ?? []).length;

/** Waits until `ok()` holds (a state reached by other sockets), failing after 10 s. */
async function eventually(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`not reached: ${ok}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('inbound: the lean HTTP/1.1 relay (default) rewrites every request head, relays bodies and answers', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let app: http.Server;
  let appPort = 0;
  let dest: InboundTunnel;
  let inbound: InboundServer;
  const rbac = new RbacCheck();
  const seen: Array<{ method: string; url: string; xfcc: string[]; body: string; trailers: object }> = [];
  const requests: Array<{ method: string; status: number; durationMs: number }> = [];
  let forged = 0;
  const reviews = reviewsPod(id('reviews'), () => 'http');
  const pods: RawPod[] = [];

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(id('frontend'));
    const reviewsSvid = await ca.issueSvid(id('reviews'));
    app = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const xfcc: string[] = [];
        for (let i = 0; i < req.rawHeaders.length; i += 2)
          if (req.rawHeaders[i]!.toLowerCase() === 'x-forwarded-client-cert')
            xfcc.push(req.rawHeaders[i + 1]!);
        seen.push({
          method: req.method!,
          url: req.url!,
          xfcc,
          body: Buffer.concat(chunks).toString(),
          trailers: req.trailers,
        });
        const status = req.url === '/missing' ? 404 : req.method === 'POST' ? 201 : 200;
        res.writeHead(status, { 'content-type': 'application/json', 'X-Odd-CASE': 'kept' });
        res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ url: req.url, xfcc }));
      });
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    appPort = (app.address() as net.AddressInfo).port;
    dest = await startInboundTunnel({
      ca,
      svids: [reviewsSvid],
      workloads: { byIp: (ip) => (ip === reviews.ip ? reviews : undefined) },
      authz: rbac,
      events: {
        denied: () => {},
        identityRejected: (ev) => {
          if (ev.reason === 'forged-xfcc') forged++;
        },
        request: (ev) => requests.push({ method: ev.method, status: ev.status, durationMs: ev.durationMs }),
      },
    });
    inbound = dest.inbound;
  });

  after(async () => {
    await dest.close();
    app.closeAllConnections();
    app.close();
    for (const p of pods) p.close();
  });

  beforeEach(() => {
    rbac.configs = [];
    seen.length = 0;
    requests.length = 0;
    forged = 0;
  });

  const open = (tp: TunnelPool, port: number) => openAsFrontend(tp, frontend, dest, port);
  const rawPod = (onData: ConstructorParameters<typeof RawPod>[0]) => startRawPod(onData, pods);

  it('a keep-alive connection: every request has the forged XFCC replaced, not only the first', async () => {
    const tp = new TunnelPool();
    try {
      const lean = inbound.leanRelayedStreams;
      const s = await open(tp, appPort);
      for (let i = 0; i < 4; i++) {
        s.write(
          `GET /r/${i} HTTP/1.1\r\nHost: reviews.shop:9080\r\nX-Forwarded-Client-Cert: ${FORGED}\r\n` +
            `x-forwarded-client-cert: ${FORGED}\r\n\r\n`,
        );
        const got = await readUntil(s, (t) => t.includes('}'));
        assert.match(got, /^HTTP\/1\.1 200 OK\r\n/);
        assert.match(got, /X-Odd-CASE: kept/, 'the answer passes unchanged');
      }
      s.end();
      assert.deepEqual(
        seen.map((r) => [r.url, r.xfcc]),
        [0, 1, 2, 3].map((i) => [`/r/${i}`, [OURS]]),
      );
      assert.equal(forged, 4, 'each forged claim is reported');
      assert.equal(inbound.leanRelayedStreams, lean + 1, 'one relayed connection carried them all');
      assert.equal(inbound.relayedHttpStreams, 0, 'nothing went as bytes unparsed');
    } finally {
      tp.close();
    }
  });

  it('pipelined requests in one write: each rewritten, answered in order; telemetry per request (HEAD, 404)', async () => {
    const tp = new TunnelPool();
    try {
      const s = await open(tp, appPort);
      const h = `Host: reviews.shop\r\nX-Forwarded-Client-Cert: ${FORGED}\r\n`;
      s.write(
        `GET /a HTTP/1.1\r\n${h}\r\nPOST /b HTTP/1.1\r\n${h}Content-Length: 5\r\n\r\nhello` +
          `HEAD /c HTTP/1.1\r\n${h}\r\nGET /missing HTTP/1.1\r\n${h}Connection: close\r\n\r\n`,
      );
      const got = await readUntil(s, () => false);
      assert.deepEqual(
        [...got.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => Number(m[1])),
        [200, 201, 200, 404],
      );
      assert.deepEqual(
        seen.map((r) => [r.method, r.url, r.xfcc, r.body]),
        [
          ['GET', '/a', [OURS], ''],
          ['POST', '/b', [OURS], 'hello'],
          ['HEAD', '/c', [OURS], ''],
          ['GET', '/missing', [OURS], ''],
        ],
      );
      assert.deepEqual(
        requests.map((r) => [r.method, r.status]),
        [
          ['GET', 200],
          ['POST', 201],
          ['HEAD', 200],
          ['GET', 404],
        ],
      );
      assert.ok(requests.every((r) => r.durationMs >= 0));
    } finally {
      tp.close();
    }
  });

  it('a chunked body with trailers arrives whole; a trailer XFCC never does', async () => {
    const tp = new TunnelPool();
    try {
      const s = await open(tp, appPort);
      s.write(
        'POST /up HTTP/1.1\r\nHost: reviews.shop\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n',
      );
      s.write('5\r\nhello\r\n');
      s.write('6;ext=1\r\n world\r\n');
      s.write(`0\r\nX-Sum: 42\r\nX-Forwarded-Client-Cert: ${FORGED}\r\n\r\n`);
      await readUntil(s, (t) => t.includes('}'));
      s.end();
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.body, 'hello world');
      assert.deepEqual(seen[0]!.trailers, { 'x-sum': '42' });
      assert.deepEqual(seen[0]!.xfcc, [OURS]);
      assert.equal(forged, 1);
    } finally {
      tp.close();
    }
  });

  it('CL.TE smuggling through the relay: 400, closed, the pod gets not one byte of it', async () => {
    const pod = await rawPod((c) => c.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      s.write(
        'POST /smuggled HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG',
      );
      const got = await readUntil(s, () => false);
      assert.match(got, /^HTTP\/1\.1 400 Bad Request\r\n/);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(pod.all(), '');
      // An invalid Transfer-Encoding llhttp refuses only after the head: not sent either.
      const s2 = await open(tp, pod.port);
      s2.write(
        'POST / HTTP/1.1\r\nHost: reviews.shop\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n',
      );
      assert.match(await readUntil(s2, () => false), /^HTTP\/1\.1 400 Bad Request\r\n/);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(pod.all(), '');
    } finally {
      tp.close();
    }
  });

  it('h2c upgrade is served as HTTP/1.1: no upgrade header to the pod, later HTTP/2 bytes go nowhere', async () => {
    const tp = new TunnelPool();
    try {
      const s = await open(tp, appPort);
      s.write(
        'GET /upgrade HTTP/1.1\r\nHost: reviews.shop\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
      );
      const first = await readUntil(s, (t) => t.includes('}'));
      assert.match(first, /^HTTP\/1\.1 200 OK/);
      s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
      await readUntil(s, () => false);
      assert.deepEqual(
        seen.map((r) => r.url),
        ['/upgrade'],
      );
    } finally {
      tp.close();
    }
  });

  it('upgrade (websocket-style 101): bytes both ways after it; an upgrade the pod declines stays parsed', async () => {
    // Answers each request head; after a 101 it echoes whatever comes.
    const state = new Map<net.Socket, { buf: string; echo: boolean }>();
    const pod = await rawPod((c, d) => {
      const st = state.get(c.socket) ?? { buf: '', echo: false };
      state.set(c.socket, st);
      if (st.echo) {
        c.socket.write(Buffer.concat([Buffer.from('echo:'), d]));
        return;
      }
      st.buf += d.toString('latin1');
      for (;;) {
        const end = st.buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = st.buf.slice(0, end);
        st.buf = st.buf.slice(end + 4);
        if (head.startsWith('GET /ws ')) {
          c.socket.write(
            'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
          );
          st.echo = true;
          if (st.buf !== '') c.socket.write(`echo:${st.buf}`);
          break;
        }
        c.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }
    });
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      // Bytes of the new protocol right behind the request (a client that does not wait for the 101).
      s.write(
        'GET /ws HTTP/1.1\r\nHost: reviews.shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly-frame',
      );
      assert.match(await readUntil(s, (t) => t.includes('echo:early-frame')), /^HTTP\/1\.1 101 /);
      s.write('GET /not-http HTTP/1.1\r\nX-Forwarded-Client-Cert: raw\r\n\r\n');
      const echoed = await readUntil(s, (t) => t.includes('raw\r\n\r\n'));
      assert.equal(echoed, 'echo:GET /not-http HTTP/1.1\r\nX-Forwarded-Client-Cert: raw\r\n\r\n');
      assert.match(
        pod.conns[0]!.bytes[0]!.toString('latin1'),
        /\r\nUpgrade: websocket\r\nconnection: upgrade\r\n/,
      );
      s.end();

      // Declined: what the client sent right behind the upgrade request is parsed and rewritten.
      const s2 = await open(tp, pod.port);
      s2.write(
        'GET /no-ws HTTP/1.1\r\nHost: reviews.shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' +
          `GET /next HTTP/1.1\r\nHost: reviews.shop\r\nX-Forwarded-Client-Cert: ${FORGED}\r\n\r\n`,
      );
      const got = await readUntil(s2, (t) => count(t, /HTTP\/1\.1 200/g) === 2 && t.endsWith('ok'));
      assert.equal(count(got, /HTTP\/1\.1 200/g), 2);
      await new Promise((r) => setTimeout(r, 50));
      const bytes = Buffer.concat(pod.conns[1]!.bytes).toString('latin1');
      assert.match(bytes, /GET \/next HTTP\/1\.1\r\n/);
      assert.ok(!bytes.includes('evil'), bytes);
      assert.equal(count(bytes, /x-forwarded-client-cert: /gi), 2);
      s2.end();
    } finally {
      tp.close();
    }
  });

  it('a large body to a pod that stops reading: the relay holds a bounded amount, then delivers it all', async () => {
    let stalled: net.Socket | undefined;
    let received = 0;
    const total = 64 * 1024 * 1024;
    const pod = await rawPod((c, d) => {
      received += d.length;
      if (!stalled) {
        stalled = c.socket;
        c.socket.pause();
      }
      if (received >= total) c.socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      const head = `PUT /big HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: ${total}\r\n\r\n`;
      // What the pod reads before the body: the head as the relay rewrites it.
      received -= head.length + `x-forwarded-client-cert: ${OURS}\r\n`.length;
      s.write(head);
      const piece = Buffer.alloc(256 * 1024, 'x');
      let sent = 0;
      // Writes until the tunnel stream stops taking bytes for a while: the relay no longer reads.
      while (sent < total) {
        sent += piece.length;
        if (!s.write(piece)) {
          const drained = await Promise.race([
            once(s, 'drain').then(() => true),
            new Promise((r) => setTimeout(r, 1000, false)),
          ]);
          if (!drained) break;
        }
      }
      assert.ok(sent < 24 * 1024 * 1024, `the sender could push ${sent} bytes into a pod that reads nothing`);
      stalled!.resume();
      while (sent < total) {
        sent += piece.length;
        if (!s.write(piece)) await once(s, 'drain');
      }
      assert.match(await readUntil(s, (t) => t.endsWith('ok')), /^HTTP\/1\.1 200 OK/);
      assert.equal(received, total);
      s.end();
    } finally {
      tp.close();
    }
  });

  it('an answer delimited by the pod closing arrives whole (8 MiB), then the stream ends', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 'y');
    const pod = await rawPod((c) => {
      c.socket.write('HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n');
      c.socket.end(big);
    });
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      s.write('GET /big HTTP/1.1\r\nHost: reviews.shop\r\n\r\n');
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
      });
      await once(s, 'end');
      assert.equal(got, 'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n'.length + big.length);
      assert.deepEqual(
        requests.map((r) => [r.method, r.status]),
        [['GET', 200]],
      );
    } finally {
      tp.close();
    }
  });

  it('half-close: the sender ends its side after the request, the answer still comes, then the stream ends', async () => {
    const tp = new TunnelPool();
    try {
      const s = await open(tp, appPort);
      s.end(`GET /half HTTP/1.1\r\nHost: reviews.shop\r\nX-Forwarded-Client-Cert: ${FORGED}\r\n\r\n`);
      const got = await readUntil(s, () => false);
      assert.match(got, /^HTTP\/1\.1 200 OK[\s\S]*"\/half"/);
      assert.deepEqual(seen[0]?.xfcc, [OURS]);
    } finally {
      tp.close();
    }
  });

  it('policy change: a relayed connection closes once a policy reads its port, the next one is parsed and checked', async () => {
    const tp = new TunnelPool();
    try {
      const lean = inbound.leanRelayedStreams;
      const s = await open(tp, appPort);
      s.write('DELETE /admin HTTP/1.1\r\nHost: reviews.shop\r\n\r\n');
      assert.match(await readUntil(s, (t) => t.includes('}')), /^HTTP\/1\.1 200/);
      assert.equal(inbound.leanRelayedStreams, lean + 1);
      rbac.configs = [
        parseRbac({
          action: 'DENY',
          policies: {
            'no-delete': {
              permissions: [{ header: { name: ':method', string_match: { exact: 'DELETE' } } }],
              principals: [{ any: true }],
            },
          },
        }),
      ];
      const closed = new Promise((r) => s.once('close', r));
      assert.ok(inbound.recheck() >= 1);
      await closed;
      const s2 = await open(tp, appPort);
      s2.write('DELETE /admin HTTP/1.1\r\nHost: reviews.shop\r\nConnection: close\r\n\r\n');
      assert.match(await readUntil(s2, () => false), /^HTTP\/1\.1 403/);
      assert.equal(inbound.leanRelayedStreams, lean + 1, 'the new connection is parsed');
    } finally {
      tp.close();
    }
  });
});

describe('inbound: the lean relay times out stalled bodies and lets its callers go when the agent drains', {
  timeout: 120_000,
}, () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let dest: InboundTunnel;
  let inbound: InboundServer;
  const reviews = reviewsPod(id('reviews'), () => 'http');
  const pods: RawPod[] = [];
  /** Small enough to wait out: the sweep runs every 200 ms (a quarter of it). */
  const STREAM_IDLE_MS = 800;
  /** The upgraded stream of the 101 test, checked again once the drain started (the last tests). */
  let upgraded: Duplex | undefined;
  const closeAfterDrain: Array<() => void> = [];

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(id('frontend'));
    dest = await startInboundTunnel({
      ca,
      svids: [await ca.issueSvid(id('reviews'))],
      workloads: { byIp: (ip) => (ip === reviews.ip ? reviews : undefined) },
      authz: new RbacCheck(),
      limits: { streamIdleTimeoutMs: STREAM_IDLE_MS },
    });
    inbound = dest.inbound;
  });

  after(async () => {
    await dest.close();
    for (const p of pods) p.close();
  });

  const open = (tp: TunnelPool, port: number) => openAsFrontend(tp, frontend, dest, port);
  const rawPod = (onData: ConstructorParameters<typeof RawPod>[0]) => startRawPod(onData, pods);

  /** A pod answering each complete request head (bodies ignored) with `answer(path)`, or holding it while `hold(path)`. */
  const headPod = async (answer: (path: string) => string, hold: (path: string) => boolean = () => false) => {
    const bufs = new Map<net.Socket, string>();
    const held: Array<() => void> = [];
    const pod = await rawPod((c, d) => {
      let buf = (bufs.get(c.socket) ?? '') + d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const path = buf.slice(0, end).split(' ')[1]!;
        buf = buf.slice(end + 4);
        const send = () => c.socket.write(answer(path));
        if (hold(path)) held.push(send);
        else send();
      }
      bufs.set(c.socket, buf);
    });
    return {
      pod,
      release: () => {
        for (const send of held.splice(0)) send();
      },
    };
  };

  const closed = (s: Duplex) =>
    new Promise<{ error: boolean }>((resolve) => {
      let error = false;
      s.on('error', () => {
        error = true;
      });
      if (s.destroyed) resolve({ error });
      else s.once('close', () => resolve({ error }));
    });

  it('a request body that stops coming: 408 after the stream idle timeout, the pod connection closes', {
    timeout: 15_000,
  }, async () => {
    // The pod waits for the whole body, as pods do.
    const { pod } = await headPod(
      () => 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok',
      () => true,
    );
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      const gone = closed(s);
      s.write('POST /upload HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: 10\r\n\r\nhalf-');
      const got = await readUntil(s, () => false);
      assert.match(got, /^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*connection: close\r\n/);
      await gone;
      await eventually(() => pod.conns[0]!.socket.readableEnded || pod.conns[0]!.socket.destroyed);
    } finally {
      tp.close();
    }
  });

  it('a body that keeps coming, byte by byte, is never cut: the timer restarts on every byte', {
    timeout: 15_000,
  }, async () => {
    const { pod } = await headPod(() => 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      const body = 'x'.repeat(12);
      s.write(`POST /slow HTTP/1.1\r\nHost: reviews.shop\r\nContent-Length: ${body.length}\r\n\r\n`);
      // 12 bytes a quarter of the timeout apart: three timeouts long in all.
      for (const b of body) {
        await new Promise((r) => setTimeout(r, STREAM_IDLE_MS / 4));
        s.write(b);
      }
      assert.match(await readUntil(s, (t) => t.endsWith('ok')), /^HTTP\/1\.1 200 OK\r\n/);
      s.end();
    } finally {
      tp.close();
    }
  });

  it('an answer that stops coming after it started: the connection is reset (no 408 in the middle of it)', {
    timeout: 15_000,
  }, async () => {
    const { pod } = await headPod(() => 'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst-half');
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      const gone = closed(s);
      s.write('GET /stalls HTTP/1.1\r\nHost: reviews.shop\r\n\r\n');
      let got = '';
      s.on('data', (d: Buffer) => {
        got += d.toString('latin1');
      });
      await gone;
      assert.match(got, /^HTTP\/1\.1 200 OK\r\n[\s\S]*first-half$/);
      assert.ok(!got.includes('408'), got);
    } finally {
      tp.close();
    }
  });

  it('an upgraded (101) connection is left alone by the stream idle timeout and by the drain', {
    timeout: 15_000,
  }, async () => {
    const echoing = new Set<net.Socket>();
    const pod = await rawPod((c, d) => {
      if (echoing.has(c.socket)) {
        c.socket.write(Buffer.concat([Buffer.from('echo:'), d]));
        return;
      }
      echoing.add(c.socket);
      c.socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    });
    const tp = new TunnelPool();
    try {
      const s = await open(tp, pod.port);
      s.write('GET /ws HTTP/1.1\r\nHost: reviews.shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
      assert.match(await readUntil(s, (t) => t.endsWith('\r\n\r\n')), /^HTTP\/1\.1 101 /);
      // Silent for longer than the stream idle timeout: websockets idle as long as they like.
      await new Promise((r) => setTimeout(r, STREAM_IDLE_MS * 2));
      s.write('ping');
      assert.equal(await readUntil(s, (t) => t.endsWith('ping')), 'echo:ping');
      upgraded = s;
    } finally {
      closeAfterDrain.push(() => tp.close());
    }
  });

  it('drain: a keep-alive client with a request in flight gets `connection: close` on its answer, then reconnects; none fails', {
    timeout: 15_000,
  }, async () => {
    const { pod, release } = await headPod(
      (path) =>
        `HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Odd-CASE: kept\r\n\r\n${path}`,
      (path) => path === '/in-flight',
    );
    // An idle keep-alive connection, next to the busy one: ended (not reset) once idle for a second of the drain.
    const { pod: idlePod } = await headPod(() => 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    const tp = new TunnelPool();
    const client = throughTunnel(
      tp,
      {
        source: frontend,
        nodeAddress: dest.address,
        expectedServerId: id('reviews'),
        authority: `127.0.0.1:${pod.port}`,
        protocol: 'http',
      },
      { client: true },
    );
    try {
      const lean = inbound.leanRelayedStreams;
      let disconnects = 0;
      client.on('disconnect', () => disconnects++);
      const get = async (path: string) => {
        const r = await client.request({ method: 'GET', path });
        return { status: r.statusCode, connection: r.headers.connection, body: await r.body.text() };
      };
      assert.deepEqual(await get('/warm'), { status: 200, connection: 'keep-alive', body: '/warm' });
      assert.deepEqual(await get('/warm2'), { status: 200, connection: 'keep-alive', body: '/warm2' });
      assert.equal(inbound.leanRelayedStreams, lean + 1, 'one pooled connection so far');

      const idle = await open(tp, idlePod.port);
      idle.write('GET /once HTTP/1.1\r\nHost: reviews.shop\r\n\r\n');
      assert.match(await readUntil(idle, (t) => t.endsWith('ok')), /^HTTP\/1\.1 200 OK/);
      const idleGone = closed(idle);
      const idleEnded = once(idle, 'end');

      // A raw view of the busy connection's answer, byte for byte: a second stream to the same pod.
      const raw = await open(tp, pod.port);
      raw.write('GET /in-flight HTTP/1.1\r\nHost: reviews.shop\r\n\r\n');
      const inFlight = get('/in-flight');
      await eventually(() => pod.conns.length === 2 && pod.all().split('/in-flight').length === 3);

      inbound.drain();
      release();
      assert.deepEqual(await inFlight, { status: 200, connection: 'close', body: '/in-flight' });
      assert.equal(
        await readUntil(raw, () => false),
        'HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Odd-CASE: kept\r\nconnection: close\r\n\r\n/in-flight',
        'the answer is byte for byte the pod one, its Connection and Keep-Alive replaced',
      );
      await eventually(() => disconnects === 1);
      await idleEnded;
      assert.deepEqual(await idleGone, { error: false }, 'the idle connection was ended, not reset');
      // The client's next request opens a new connection (on the agent that took over, in a real upgrade).
      assert.deepEqual(await get('/after'), { status: 200, connection: 'close', body: '/after' });
      assert.equal(inbound.leanRelayedStreams, lean + 4, 'warm, idle, raw, then a new connection');

      // The websocket upgraded before the drain still carries bytes both ways.
      upgraded!.write('still');
      assert.equal(await readUntil(upgraded!, (t) => t.endsWith('still')), 'echo:still');
    } finally {
      await client.close();
      tp.close();
      for (const f of closeAfterDrain) f();
    }
  });

  it('drain: an HTTP/1.0 answer and one that already closes stay as they were, but for the one Connection header', {
    timeout: 15_000,
  }, async () => {
    const { pod, release } = await headPod(
      (path) =>
        path === '/old'
          ? 'HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold'
          : 'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-eof',
      () => true,
    );
    const tp = new TunnelPool();
    try {
      const a = await open(tp, pod.port);
      a.write('GET /old HTTP/1.0\r\nHost: reviews.shop\r\nConnection: keep-alive\r\n\r\n');
      const b = await open(tp, pod.port);
      b.write('GET /eof HTTP/1.1\r\nHost: reviews.shop\r\n\r\n');
      await eventually(() => pod.conns.length === 2 && pod.all().includes('/eof'));
      release();
      for (const c of pod.conns) c.socket.end();
      assert.equal(
        await readUntil(a, () => false),
        'HTTP/1.0 200 OK\r\nContent-Length: 3\r\nconnection: close\r\n\r\nold',
      );
      assert.equal(await readUntil(b, () => false), 'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-eof');
    } finally {
      tp.close();
    }
  });
});
