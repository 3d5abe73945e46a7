/**
 * Http1Upstream (the caller's node's HTTP/1.1 connection upstream) against real servers on
 * loopback: node:http for the ordinary exchanges, a raw TCP server for answers node:http would
 * never write (smuggling-shaped, cut short, unasked).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { connectTcp } from '../../../mesh-agent/io/streams.js';
import { type Http1Response, Http1Upstream } from '../../../mesh-agent/outbound/http1-upstream.js';

async function text(r: Http1Response): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r.body) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

function connection(port: number, gone: Http1Upstream[] = []): Http1Upstream {
  return new Http1Upstream(
    () => connectTcp('127.0.0.1', port, 2000),
    (c) => gone.push(c),
    `127.0.0.1:${port}`,
  );
}

describe('Http1Upstream against node:http', { timeout: 30_000 }, () => {
  const sockets = new Set<net.Socket>();
  let port = 0;
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        body: Buffer.concat(parts).toString(),
      });
      if (req.url === '/slow') return; // never answered
      if (req.url === '/close') res.setHeader('connection', 'close');
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('x'.repeat(1 << 20));
        return;
      }
      res.writeHead(201, [
        'set-cookie',
        'a=1',
        'x-dup',
        'one',
        'x-dup',
        'two',
        'keep-alive',
        'timeout=5',
        'content-type',
        'text/plain',
      ]);
      res.end(`you said ${Buffer.concat(parts).toString()}`);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  before(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('keep-alive: requests one after another share one connection; bodies buffered, streamed chunked, or with their length', async () => {
    const gone: Http1Upstream[] = [];
    const c = connection(port, gone);
    const before = seen.length;
    const a = await c.request({ method: 'GET', path: '/a?x=1', headers: { host: 'svc' }, body: null });
    assert.equal(a.statusCode, 201);
    assert.equal(await text(a), 'you said ');
    const b = await c.request({
      method: 'POST',
      path: '/b',
      headers: { host: 'svc' },
      body: Buffer.from('hello'),
    });
    assert.equal(await text(b), 'you said hello');
    const streamed = Readable.from([Buffer.from('part1-'), Buffer.from('part2')]);
    const d = await c.request({ method: 'PUT', path: '/c', headers: { host: 'svc' }, body: streamed });
    assert.equal(await text(d), 'you said part1-part2');
    const sized = Readable.from([Buffer.from('abc'), Buffer.from('de')]);
    const e = await c.request({
      method: 'POST',
      path: '/d',
      headers: { host: 'svc', 'content-length': '5' },
      body: sized,
    });
    assert.equal(await text(e), 'you said abcde');
    assert.equal(sockets.size, 1, 'one connection for the four requests');
    const got = seen.slice(before);
    assert.deepEqual(
      got.map((s) => [s.method, s.url, s.body]),
      [
        ['GET', '/a?x=1', ''],
        ['POST', '/b', 'hello'],
        ['PUT', '/c', 'part1-part2'],
        ['POST', '/d', 'abcde'],
      ],
    );
    assert.equal(got[1]!.headers['content-length'], '5');
    assert.equal(got[2]!.headers['transfer-encoding'], 'chunked');
    assert.equal(got[3]!.headers['content-length'], '5');
    assert.equal(gone.length, 0);
    c.close();
    assert.equal(gone.length, 1, 'closing an idle connection reports it gone');
  });

  it('answer headers: lower-case, repeated ones as arrays, set-cookie always an array, hop-by-hop left out', async () => {
    const c = connection(port);
    const r = await c.request({
      method: 'GET',
      path: '/',
      headers: { host: 'svc', 'x-trace': 'a' },
      body: null,
    });
    await text(r);
    assert.deepEqual(r.headers['set-cookie'], ['a=1']);
    assert.deepEqual(r.headers['x-dup'], ['one', 'two']);
    assert.equal(r.headers['keep-alive'], undefined);
    assert.equal(r.headers.connection, undefined);
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.equal(seen.at(-1)!.headers['x-trace'], 'a');
    c.close();
  });

  it('HEAD: the announced length is not waited for; the connection serves the next request', async () => {
    const c = connection(port);
    const h = await c.request({ method: 'HEAD', path: '/', headers: { host: 'svc' }, body: null });
    assert.equal(await text(h), '');
    const g = await c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null });
    assert.equal(await text(g), 'you said ');
    c.close();
  });

  it('an answer saying connection: close ends the connection once read (gone)', async () => {
    const gone: Http1Upstream[] = [];
    const c = connection(port, gone);
    const r = await c.request({ method: 'GET', path: '/close', headers: { host: 'svc' }, body: null });
    assert.equal(await text(r), 'you said ');
    assert.equal(gone.length, 1);
    await assert.rejects(c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null }), {
      code: 'UND_ERR_SOCKET',
    });
  });

  it('the deadline: no answer in time fails with TimeoutError and closes the connection', async () => {
    const gone: Http1Upstream[] = [];
    const c = connection(port, gone);
    await assert.rejects(
      c.request({ method: 'GET', path: '/slow', headers: { host: 'svc' }, body: null, timeoutMs: 100 }),
      { name: 'TimeoutError' },
    );
    assert.equal(gone.length, 1);
  });

  it('the idle timeout: no byte for that long fails as a headers timeout', async () => {
    const c = connection(port);
    await assert.rejects(
      c.request({ method: 'GET', path: '/slow', headers: { host: 'svc' }, body: null, idleTimeoutMs: 100 }),
      { code: 'UND_ERR_HEADERS_TIMEOUT' },
    );
  });

  it('a body dropped before its end closes the connection (the rest is still on the wire)', async () => {
    const gone: Http1Upstream[] = [];
    const c = connection(port, gone);
    const r = await c.request({ method: 'GET', path: '/big', headers: { host: 'svc' }, body: null });
    r.body.destroy();
    await once(r.body, 'close');
    assert.equal(gone.length, 1);
  });

  it('a header value with CR or LF is refused before anything is written', async () => {
    const c = connection(port);
    const before = seen.length;
    await assert.rejects(
      c.request({
        method: 'GET',
        path: '/',
        headers: { host: 'svc', 'x-a': 'b\r\nx-injected: 1' },
        body: null,
      }),
      { code: 'UND_ERR_INVALID_ARG' },
    );
    await assert.rejects(
      c.request({ method: 'GET', path: '/', headers: { host: 'svc', 'bad name': 'b' }, body: null }),
      { code: 'UND_ERR_INVALID_ARG' },
    );
    assert.equal(seen.length, before);
    c.close();
  });
});

describe('Http1Upstream against answers node:http would not write', { timeout: 30_000 }, () => {
  let answer: (sock: net.Socket) => void = () => {};
  const raw = net.createServer((s) => {
    s.once('data', () => answer(s));
    s.on('error', () => {});
  });
  let port = 0;
  before(async () => {
    raw.listen(0, '127.0.0.1');
    await once(raw, 'listening');
    port = (raw.address() as AddressInfo).port;
  });
  after(() => raw.close());

  it('content-length and transfer-encoding together (response smuggling) fail the request as a reset', async () => {
    answer = (s) =>
      s.write(
        'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n',
      );
    const gone: Http1Upstream[] = [];
    const c = connection(port, gone);
    await assert.rejects(c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null }), {
      code: 'UND_ERR_SOCKET',
    });
    assert.equal(gone.length, 1);
  });

  it("headers named by the answer's Connection header are for this hop only: left out", async () => {
    answer = (s) =>
      s.write(
        'HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n',
      );
    const c = connection(port);
    const r = await c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null });
    await text(r);
    assert.deepEqual(r.headers, { 'x-kept': '2', 'content-length': '0' });
    c.close();
  });

  it('100 Continue then the answer: the interim one is skipped', async () => {
    answer = (s) => s.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    const c = connection(port);
    const r = await c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null });
    assert.equal(r.statusCode, 200);
    assert.equal(await text(r), 'ok');
    c.close();
  });

  it('a body delimited by the close of the connection is complete at the close', async () => {
    answer = (s) => s.end('HTTP/1.1 200 OK\r\n\r\nuntil the end');
    const gone: Http1Upstream[] = [];
    const c = connection(port, gone);
    const r = await c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null });
    assert.equal(await text(r), 'until the end');
    assert.equal(gone.length, 1);
  });

  it('an answer cut short fails its body', async () => {
    answer = (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort');
    const c = connection(port);
    const r = await c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null });
    await assert.rejects(text(r), { code: 'UND_ERR_SOCKET' });
  });

  it('a connection refused fails the request and is gone', async () => {
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const p = (closed.address() as AddressInfo).port;
    closed.close();
    const gone: Http1Upstream[] = [];
    const c = connection(p, gone);
    await assert.rejects(c.request({ method: 'GET', path: '/', headers: { host: 'svc' }, body: null }), {
      code: 'ECONNREFUSED',
    });
    assert.equal(gone.length, 1);
  });
});
