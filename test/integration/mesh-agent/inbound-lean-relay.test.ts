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

const count = (text: string, re: RegExp) => (text.match(re) ?? []).length;

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

  const open = (tp: TunnelPool, port: number) =>
    openAsSender(tp, {
      source: frontend,
      nodeAddress: dest.address,
      expectedServerId: id('reviews'),
      authority: `127.0.0.1:${port}`,
      protocol: 'http',
    });

  const rawPod = async (onData: ConstructorParameters<typeof RawPod>[0]) => {
    const p = new RawPod(onData);
    await p.listen();
    pods.push(p);
    return p;
  };

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
