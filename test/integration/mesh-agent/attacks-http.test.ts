/**
 * HTTP attacks against the proxy's L7 path (issue 17, part 3), black box: raw bytes on
 * sockets, whatever parser the agent uses. The agent's listeners run in a process of their
 * own (scripts/fuzz/bytes-target.ts: the OutboundServer wired as the agent wires it, the
 * TunnelServer and the permissive InboundServer), and the destination pod is an upstream in
 * this process that records every byte it is sent (scripts/fuzz/bytes-wire.ts).
 *
 * What each part proves:
 * - request smuggling over HTTP/1.1 (CL.TE, TE.CL, TE.TE with obfuscated Transfer-Encoding,
 *   two or conflicting Content-Lengths, obs-fold, bare LF, bare CR, NUL, CONNECT): the agent
 *   answers 400 (404 for CONNECT) as Envoy does, closes the connection, and the upstream
 *   receives **not one byte**; run on the caller's node (15001, what a pod sends), on the
 *   permissive listener (15006) and through the tunnel (15008, parsed on the destination node);
 * - header limits: 431 for headers over 60 KiB or over 100 of them (Envoy's defaults), and a
 *   40 KiB header, which Envoy takes, is passed on whole;
 * - hop-by-hop headers: Connection and what it names, Keep-Alive, Proxy-*, TE, Upgrade,
 *   Trailer and a caller's own x-forwarded-client-cert never reach the upstream;
 * - h2c upgrade smuggling: `Upgrade: h2c` + `HTTP2-Settings` is served as plain HTTP/1.1
 *   (no 101), the upstream sees neither header, and HTTP/2 bytes sent after it never reach it;
 * - HTTP/2 (h2c prior knowledge on 15001): pseudo-header abuse (missing or duplicate :path,
 *   :method, a pseudo header after a regular one, an unknown one), uppercase names,
 *   connection-specific headers, CR/LF/NUL in values, a Content-Length the DATA contradicts:
 *   each stream is reset (or the session ends with GOAWAY), never answered, never passed on.
 * After every case a well-formed request on the same listener is answered 200 by the upstream.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  dialTcp,
  type Exchange,
  exchange,
  FLAG,
  FRAME,
  frame,
  H2_START,
  headerFrames,
  hpack,
  RecordingUpstream,
  request,
  startTarget,
  statuses,
  streamOutcome,
  type Target,
  tunnelExchange,
} from '../../../scripts/fuzz/bytes-wire.js';

const H = 'Host: reviews.shop\r\n';
const SMUGGLED = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;
const LIMITS = { headersTimeoutMs: 1000, idleTimeoutMs: 2000, streamIdleTimeoutMs: 2000 };

/** Requests the agent must refuse whole: [name, bytes, status]. Every one carries the marker `smuggled`. */
const REFUSED: Array<[string, string, number]> = [
  [
    'CL.TE',
    `POST /smuggled HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG`,
    400,
  ],
  [
    'TE.CL',
    `POST /smuggled HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n`,
    400,
  ],
  ['TE.TE: xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 400],
  [
    'TE.TE: space before colon',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'TE.TE: chunked, identity',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'TE.TE: two headers',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'TE.TE: CL with a tab-led TE',
    `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'TE.TE: obs-fold',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'two equal Content-Lengths',
    `POST /smuggled HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 1\r\n\r\nA`,
    400,
  ],
  [
    'conflicting Content-Lengths',
    `POST / HTTP/1.1\r\n${H}Content-Length: 0\r\nContent-Length: 25\r\n\r\n${SMUGGLED}`,
    400,
  ],
  ['Content-Length list', `POST /smuggled HTTP/1.1\r\n${H}Content-Length: 1, 1\r\n\r\nA`, 400],
  ['signed Content-Length', `POST /smuggled HTTP/1.1\r\n${H}Content-Length: +1\r\n\r\nA`, 400],
  ['obs-fold in a value', `GET /smuggled HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, 400],
  ['bare LF line ends', `GET /smuggled HTTP/1.1\n${H.trim()}\nX-A: a\n\n`, 400],
  ['bare LF in the headers', `GET /smuggled HTTP/1.1\r\n${H}X-A: a\nX-B: b\r\n\r\n`, 400],
  ['bare CR in a value', `GET /smuggled HTTP/1.1\r\n${H}X-A: a\rX-B: b\r\n\r\n`, 400],
  ['NUL in a value', `GET /smuggled HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, 400],
  ['space in a header name', `GET /smuggled HTTP/1.1\r\n${H}X A: a\r\n\r\n`, 400],
  ['headers over 60 KiB', `GET /smuggled HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(70_000)}\r\n\r\n`, 431],
  [
    'more than 100 headers',
    `GET /smuggled HTTP/1.1\r\n${H}${Array.from({ length: 120 }, (_, i) => `X-${i}: 1\r\n`).join('')}\r\n`,
    431,
  ],
  ['CONNECT', `CONNECT smuggled.example:443 HTTP/1.1\r\nHost: smuggled.example:443\r\n\r\n`, 404],
];

/** The hop-by-hop headers a caller may send: forwarded without them. */
const HOP_BY_HOP_REQUEST = `GET /hop HTTP/1.1\r\n${H}Connection: close, X-Secret, X-Other\r\nX-Secret: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nTE: gzip\r\nTrailer: X-T\r\nUpgrade: websocket\r\nX-Forwarded-Client-Cert: By=spiffe://evil/ns/x/sa/y;URI=spiffe://evil/ns/x/sa/z\r\nX-Kept: yes\r\n\r\n`;

const H2C_UPGRADE = `GET /upgrade HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`;

/** HTTP/2 requests the agent must reset: [name, HEADERS frames (and DATA) for stream 1, ms to wait for the answer]. */
const H2_REFUSED: Array<[string, Buffer, number?]> = [
  [
    'missing :path',
    frame(
      FRAME.HEADERS,
      FLAG.END_HEADERS | FLAG.END_STREAM,
      1,
      hpack([
        [':method', 'GET'],
        [':scheme', 'http'],
        [':authority', 'smuggled'],
      ]),
    ),
  ],
  ['duplicate :path', request(1, [[':path', '/smuggled']])],
  [
    'missing :method',
    frame(
      FRAME.HEADERS,
      FLAG.END_HEADERS | FLAG.END_STREAM,
      1,
      hpack([
        [':scheme', 'http'],
        [':path', '/smuggled'],
        [':authority', 'r'],
      ]),
    ),
  ],
  [
    'pseudo header after a regular one',
    frame(
      FRAME.HEADERS,
      FLAG.END_HEADERS | FLAG.END_STREAM,
      1,
      hpack([
        [':method', 'GET'],
        [':scheme', 'http'],
        ['x-a', 'smuggled'],
        [':path', '/'],
        [':authority', 'r'],
      ]),
    ),
  ],
  ['unknown pseudo header', request(1, [[':smuggled', 'x']])],
  ['empty :path', request(1, [['x-marker', 'smuggled']], { path: '' })],
  ['uppercase header name', request(1, [['X-Smuggled', '1']])],
  ['connection header', request(1, [['connection', 'smuggled']])],
  [
    'transfer-encoding header',
    request(1, [
      ['transfer-encoding', 'chunked'],
      ['x-marker', 'smuggled'],
    ]),
  ],
  ['keep-alive header', request(1, [['keep-alive', 'smuggled']])],
  ['upgrade header', request(1, [['upgrade', 'smuggled']])],
  ['proxy-connection header', request(1, [['proxy-connection', 'smuggled']])],
  ['te other than trailers', request(1, [['te', 'smuggled']])],
  [
    'header list over 60 KiB',
    headerFrames(
      1,
      hpack([
        [':method', 'GET'],
        [':scheme', 'http'],
        [':path', '/smuggled'],
        [':authority', 'r'],
        ['x-big', 'a'.repeat(70_000)],
      ]),
    ),
    // nghttp2 ends the session (GOAWAY COMPRESSION_ERROR) once the whole block is in.
    1500,
  ],
  [
    'more than 100 headers',
    request(
      1,
      Array.from({ length: 120 }, (_, i): [string, string] => [`x-smuggled-${i}`, '1']),
    ),
  ],
  [
    'content-length the DATA contradicts',
    Buffer.concat([
      request(1, [['content-length', '3']], { method: 'POST', path: '/smuggled', endStream: false }),
      frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from('smuggled body')),
    ]),
  ],
];

/**
 * Fields nghttp2 (Node's HTTP/2) drops on its own, before the agent sees the request: the
 * stream is answered without them (Envoy resets it instead); either way they never go on.
 */
const H2_DROPPED: Array<[string, Buffer]> = [
  ['CRLF in a value', request(1, [['x-a', 'a\r\nx-smuggled: 1']])],
  ['LF in a value', request(1, [['x-a', 'a\nx-smuggled: 1']])],
  ['NUL in a value', request(1, [['x-a', 'a\0smuggled']])],
  ['colon in a name', request(1, [['x:smuggled', '1']])],
];

describe('HTTP attacks on the L7 path: refused as Envoy refuses, never passed on', {
  timeout: 240_000,
}, () => {
  let upstream: RecordingUpstream;
  let target: Target;
  /** The three ways in that parse HTTP/1.1, each as "send these bytes, collect the answer". */
  let listeners: Array<
    [string, (chunks: Array<string | Buffer | number>, waitMs: number) => Promise<Exchange>]
  >;

  before(async () => {
    upstream = new RecordingUpstream();
    const port = await upstream.listen();
    target = await startTarget(port, LIMITS);
    const { outbound, plaintext, tunnel, client } = target.ready;
    listeners = [
      ['15001 (caller node)', (c, w) => exchange(dialTcp('127.0.0.1', outbound), c, w)],
      ['15006 (permissive)', (c, w) => exchange(dialTcp(plaintext.host, plaintext.port), c, w)],
      ['15008 (tunnel, parsed)', (c, w) => tunnelExchange(tunnel, client, `127.0.0.1:${port}`, c, w)],
    ];
  });

  after(async () => {
    const alive = target?.alive();
    await target?.stop();
    upstream?.close();
    assert.ok(alive, 'the agent process survived every attack');
  });

  /** A well-formed request answered 200 by the upstream, which records it. */
  const wellFormed = async (send: (typeof listeners)[number][1]) => {
    upstream.take();
    const ok = await send([`GET /ok HTTP/1.1\r\n${H}Connection: close\r\n\r\n`], 5000);
    assert.deepEqual(statuses(ok.data), [200], 'a well-formed request after the attack is answered');
    assert.equal(upstream.take().requests.length, 1);
  };

  for (const [name, bytes, status] of REFUSED) {
    it(`${name}: ${status}, connection closed, nothing upstream`, async () => {
      for (const [where, send] of listeners) {
        upstream.take();
        const ex = await send([bytes], 5000);
        await new Promise((r) => setTimeout(r, 100));
        const got = upstream.take();
        assert.deepEqual(
          statuses(ex.data),
          [status],
          `${where}: ${ex.data.toString('latin1').slice(0, 200)}`,
        );
        assert.equal(ex.end, 'closed', `${where}: the agent closes the connection`);
        assert.equal(
          got.bytes.length,
          0,
          `${where}: the upstream got ${got.bytes.toString('latin1').slice(0, 200)}`,
        );
        await wellFormed(send);
      }
    });
  }

  it('a 40 KiB header (under Envoy 60 KiB limit) is passed on whole', async () => {
    for (const [where, send] of listeners) {
      upstream.take();
      const big = 'b'.repeat(40_000);
      const ex = await send([`GET /big HTTP/1.1\r\n${H}X-Big: ${big}\r\nConnection: close\r\n\r\n`], 5000);
      assert.deepEqual(statuses(ex.data), [200], where);
      const [req] = upstream.take().requests;
      assert.equal(req?.headers[req.headers.findIndex((h) => h.toLowerCase() === 'x-big') + 1], big, where);
    }
  });

  it('hop-by-hop headers, those Connection names and a forged XFCC never reach the upstream', async () => {
    for (const [where, send] of listeners) {
      upstream.take();
      const ex = await send([HOP_BY_HOP_REQUEST], 3000);
      assert.deepEqual(statuses(ex.data), [200], where);
      const [req] = upstream.take().requests;
      assert.ok(req, `${where}: forwarded`);
      const names = req.headers.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      for (const gone of [
        'x-secret',
        'x-other',
        'keep-alive',
        'proxy-connection',
        'proxy-authorization',
        'te',
        'trailer',
        'upgrade',
      ])
        assert.ok(!names.includes(gone), `${where}: ${gone} reached the upstream: ${names}`);
      assert.ok(names.includes('x-kept'), `${where}: end-to-end headers pass`);
      const xfcc = req.headers[names.indexOf('x-forwarded-client-cert') + 1] ?? '';
      assert.ok(!xfcc.includes('evil'), `${where}: the caller's own XFCC was passed on: ${xfcc}`);
      // Whatever undici says about its own connection, never the caller's list.
      const connection = req.headers[names.indexOf('connection') + 1] ?? '';
      assert.ok(!/x-secret/i.test(connection), where);
    }
  });

  it('h2c upgrade smuggling: served as HTTP/1.1, no 101, no upgrade upstream, later HTTP/2 bytes go nowhere', async () => {
    for (const [where, send] of listeners) {
      upstream.take();
      const ex = await send([H2C_UPGRADE, 200, H2_START, request(1, [], { path: '/smuggled' })], 1000);
      await new Promise((r) => setTimeout(r, 100));
      const got = upstream.take();
      const answered = statuses(ex.data);
      assert.equal(answered[0], 200, `${where}: ${ex.data.toString('latin1').slice(0, 120)}`);
      assert.ok(!answered.includes(101), `${where}: switched protocols`);
      assert.equal(got.requests.filter((r) => r.path === '/upgrade').length, 1, where);
      const raw = got.bytes.toString('latin1');
      for (const never of ['PRI * HTTP/2.0', 'smuggled', 'h2c', 'HTTP2-Settings', 'http2-settings'])
        assert.ok(
          !raw.includes(never),
          `${where}: the upstream got ${JSON.stringify(never)}: ${raw.slice(0, 300)}`,
        );
      assert.ok(!got.requests.some((r) => r.proto === 'h2'), where);
    }
  });

  for (const [name, bytes, waitMs] of H2_REFUSED) {
    it(`HTTP/2 ${name}: stream reset, nothing upstream`, async () => {
      upstream.take();
      // Until stream 1's fate is on the wire (a loaded machine can take longer than a fixed wait).
      const ex = await exchange(
        dialTcp('127.0.0.1', target.ready.outbound),
        [H2_START, bytes],
        waitMs ?? 10_000,
        (d) => streamOutcome(d, 1) !== 'none',
      );
      await new Promise((r) => setTimeout(r, 100));
      const got = upstream.take();
      const outcome = streamOutcome(ex.data, 1);
      assert.ok(
        outcome === 'reset' || outcome === 'goaway' || (outcome === 'none' && ex.end === 'closed'),
        `stream 1 was ${outcome}`,
      );
      assert.equal(got.requests.length, 0, `the upstream got ${JSON.stringify(got.requests)}`);
      assert.ok(!got.bytes.toString('latin1').includes('smuggled'));
      // The same listener still serves h2c.
      const ok = await exchange(
        dialTcp('127.0.0.1', target.ready.outbound),
        [H2_START, request(1)],
        10_000,
        (d) => streamOutcome(d, 1) !== 'none',
      );
      assert.equal(streamOutcome(ok.data, 1), 'response');
      assert.equal(upstream.take().requests.length, 1);
    });
  }

  for (const [name, bytes] of H2_DROPPED) {
    it(`HTTP/2 ${name}: the field is dropped or the stream reset; never upstream`, async () => {
      upstream.take();
      const ex = await exchange(dialTcp('127.0.0.1', target.ready.outbound), [H2_START, bytes], 300);
      await new Promise((r) => setTimeout(r, 100));
      const got = upstream.take();
      const outcome = streamOutcome(ex.data, 1);
      assert.ok(outcome !== 'none' || ex.end === 'closed', 'stream 1 is answered or ended');
      for (const r of got.requests)
        assert.deepEqual(
          r.headers.filter((_, i) => i % 2 === 0 && !r.headers[i]!.startsWith(':')),
          ['x-forwarded-client-cert'],
          'only the mesh header the agent adds',
        );
      assert.ok(!got.bytes.toString('latin1').includes('smuggled'));
    });
  }
});
