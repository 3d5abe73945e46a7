import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { Raw } from '../../unit/mesh-agent/fixtures/envoy.js';
import {
  breakers,
  type Harness,
  localCluster,
  type MeshResources,
  reviewsRoutes,
  startOutbound,
} from './fixtures/outbound-harness.js';

/**
 * Upstream knobs, per path: /fail-once/<key> answers 503 the first time,
 * /fail-always 503, /slow-once/<key> stalls the first time, /reset-once/<key>
 * resets the first stream. Every answer echoes the request body's length.
 */
class Upstream {
  seen = new Map<string, number>();
  bodies: number[] = [];
  private count(path: string): number {
    const n = (this.seen.get(path) ?? 0) + 1;
    this.seen.set(path, n);
    return n;
  }
  /** status to answer, or 'stall' / 'reset'. */
  decide(path: string): number | 'stall' | 'reset' {
    const n = this.count(path);
    if (path.startsWith('/fail-once/')) return n === 1 ? 503 : 200;
    if (path.startsWith('/fail-always')) return 503;
    if (path.startsWith('/slow-once/')) return n === 1 ? 'stall' : 200;
    if (path.startsWith('/reset-once/')) return n === 1 ? 'reset' : 200;
    return 200;
  }
}

/** An Envoy RetryPolicy as the control plane writes it into a route. */
const policy = (extra: Raw = {}): Raw => ({
  retry_on: '5xx,connect-failure,reset',
  num_retries: { value: 2 },
  retry_back_off: { base_interval: { seconds: 0, nanos: 1_000_000 } },
  ...extra,
});

/** Everything to `port` (one local endpoint of cluster `name`), with this retry policy and timeout. */
function mesh(
  name: string,
  port: number,
  retry: Raw | undefined,
  opts: { timeoutMs?: number; cluster?: Raw } = {},
): MeshResources {
  const route: Raw = { cluster: name };
  if (retry) route.retry_policy = retry;
  if (opts.timeoutMs !== undefined)
    route.timeout = { seconds: Math.floor(opts.timeoutMs / 1000), nanos: (opts.timeoutMs % 1000) * 1e6 };
  return {
    vip: { http: true },
    routes: reviewsRoutes([{ match: { prefix: '/' }, route }]),
    clusters: [localCluster(name, [port], opts.cluster)],
  };
}

interface H2Reply {
  status: number;
  flags: string | undefined;
  body: string;
  trailers: http2.IncomingHttpHeaders;
}

function h2call(session: http2.ClientHttp2Session, path: string, body?: Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const s = session.request(
      { ':method': body ? 'POST' : 'GET', ':path': path },
      { endStream: body === undefined },
    );
    let status = 0;
    let flags: string | undefined;
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    s.on('response', (h) => {
      status = Number(h[':status']);
      flags = h['x-sockmesh-flags'] as string | undefined;
    });
    s.on('trailers', (t) => {
      trailers = t;
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve({ status, flags, body: Buffer.concat(chunks).toString(), trailers }));
    s.on('error', reject);
    if (body) s.end(body);
  });
}

describe('outbound: h2c requests follow the same retry policy as HTTP/1.1', () => {
  const up = new Upstream();
  let h2server: http2.Http2Server;
  let h1server: http.Server;
  let h2port = 0;
  let h1port = 0;
  let harness: Harness;
  let client: http2.ClientHttp2Session;

  before(async () => {
    h2server = http2.createServer();
    h2server.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      const path = String(headers[':path']);
      let size = 0;
      stream.on('data', (c: Buffer) => {
        size += c.length;
      });
      stream.on('end', () => {
        up.bodies.push(size);
        const d = up.decide(path);
        if (d === 'stall') return;
        if (d === 'reset') {
          stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
          return;
        }
        stream.respond({ ':status': d, 'content-type': 'text/plain' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(`status=${d} body=${size}`);
      });
    });
    h1server = http.createServer((req, res) => {
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
      });
      req.on('end', () => {
        up.bodies.push(size);
        const d = up.decide(req.url ?? '/');
        if (d === 'stall') return;
        if (d === 'reset') {
          req.socket.destroy();
          return;
        }
        res.writeHead(d).end(`status=${d} body=${size}`);
      });
    });
    h2server.listen(0, '127.0.0.1');
    h1server.listen(0, '127.0.0.1');
    await Promise.all([once(h2server, 'listening'), once(h1server, 'listening')]);
    h2port = (h2server.address() as AddressInfo).port;
    h1port = (h1server.address() as AddressInfo).port;
    harness = await startOutbound(mesh('h2', h2port, policy()));
    client = http2.connect(`http://127.0.0.1:${harness.port}`);
  });

  after(async () => {
    client?.close();
    await harness?.close();
    h2server?.close();
    h1server?.close();
  });

  const lastRecord = () => harness.records.at(-1)!;
  /** A config update: requests on the open h2c connection are planned against it (as every request is). */
  const use = (r: MeshResources) => {
    harness.apply(r);
  };
  const settle = () => new Promise((r) => setTimeout(r, 50));

  it('retries an h2c request answered 503 and succeeds', async () => {
    const r = await h2call(client, '/fail-once/a');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.trailers['grpc-status'], '0', 'trailers relayed');
    assert.equal(up.seen.get('/fail-once/a'), 2);
    await settle();
    assert.equal(lastRecord().attempts, 2);
    assert.equal(lastRecord().flags, '-');
  });

  it('replays a buffered request body on the retry', async () => {
    const body = Buffer.alloc(10_000, 'x');
    const before = up.bodies.length;
    const r = await h2call(client, '/fail-once/body', body);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'status=200 body=10000');
    assert.deepEqual(up.bodies.slice(before), [10_000, 10_000]);
  });

  it('does not retry a body bigger than the replay buffer (as Envoy)', async () => {
    const body = Buffer.alloc(100 * 1024, 'y');
    const r = await h2call(client, '/fail-once/big', body);
    assert.equal(r.status, 503);
    assert.equal(r.body, `status=503 body=${100 * 1024}`);
    assert.equal(up.seen.get('/fail-once/big'), 1);
    await settle();
    assert.equal(lastRecord().attempts, 1);
  });

  it('retries an upstream stream reset', async () => {
    const r = await h2call(client, '/reset-once/a');
    assert.equal(r.status, 200);
    assert.equal(up.seen.get('/reset-once/a'), 2);
  });

  it('bounds each try by the per-try timeout and retries', async () => {
    use(mesh('h2', h2port, policy({ per_try_timeout: { seconds: 0, nanos: 200_000_000 } })));
    const started = performance.now();
    const r = await h2call(client, '/slow-once/a');
    assert.equal(r.status, 200);
    assert.equal(up.seen.get('/slow-once/a'), 2);
    assert.ok(performance.now() - started < 5000, 'the stalled first try did not hold the request');
  });

  it('gives up after num_retries with the last 5xx and the URX flag', async () => {
    use(mesh('h2', h2port, policy()));
    const r = await h2call(client, '/fail-always/a');
    assert.equal(r.status, 503);
    assert.equal(r.flags, 'URX');
    assert.equal(up.seen.get('/fail-always/a'), 3);
    await settle();
    assert.equal(lastRecord().flags, 'URX');
    assert.equal(lastRecord().attempts, 3);
  });

  it('stops retrying when the retry breaker is full', async () => {
    // The cluster's retry breaker (circuit_breakers max_retries) admits no retry at all.
    use(mesh('h2', h2port, policy(), { cluster: breakers({ maxRetries: 0 }) }));
    const r = await h2call(client, '/fail-once/breaker');
    assert.equal(r.status, 503);
    assert.equal(up.seen.get('/fail-once/breaker'), 1);
  });

  it('does not retry without a retry policy', async () => {
    use(mesh('h2', h2port, undefined));
    const r = await h2call(client, '/fail-once/nopolicy', Buffer.alloc(70_000, 'z'));
    assert.equal(r.status, 503);
    assert.equal(r.body, 'status=503 body=70000', 'the body streams through whole');
    assert.equal(up.seen.get('/fail-once/nopolicy'), 1);
  });

  it('HTTP/1.1 takes the same loop: 503 then 200, body replayed', async () => {
    use(mesh('h1', h1port, policy()));
    const before = up.bodies.length;
    const res = await request(`http://127.0.0.1:${harness.port}/fail-once/h1`, {
      method: 'POST',
      body: 'hello',
      headers: { 'content-length': '5' },
    });
    assert.equal(res.statusCode, 200);
    assert.equal(await res.body.text(), 'status=200 body=5');
    assert.deepEqual(up.bodies.slice(before), [5, 5]);
    await settle();
    assert.equal(lastRecord().attempts, 2);
  });
});
