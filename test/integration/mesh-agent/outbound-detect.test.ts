import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import type { Raw } from '../../unit/mesh-agent/fixtures/envoy.js';
import {
  type Harness,
  localCluster,
  type MeshResources,
  reviewsRoutes,
  SOURCE_ID,
  startOutbound,
} from './fixtures/outbound-harness.js';

/** Answers which backend it is, so per-request routing shows. */
function named(name: string): http.Server {
  return http.createServer((req, res) => res.end(`${name} ${req.url}`));
}

const header = (name: string, exact: string) => ({ name, string_match: { exact } });

describe('outbound: protocol detection on a port that does not declare its protocol', () => {
  let harness: Harness;
  const servers: net.Server[] = [];
  const ports = new Map<string, number>();

  const listen = async (s: net.Server) => {
    servers.push(s);
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return (s.address() as AddressInfo).port;
  };

  /**
   * The mesh as the control plane sends it: the VIP's port is undeclared, so its TCP chain
   * (to `tcp`) has an HTTP sibling whose routes pick a cluster per request by header.
   */
  const mesh = (opts: { tcp?: string; httpTo?: string; rbac?: Raw[] } = {}): MeshResources => ({
    vip: { detect: opts.tcp ?? 'echo' },
    routes: reviewsRoutes(
      opts.httpTo
        ? [{ match: { prefix: '/' }, route: { cluster: opts.httpTo } }]
        : [
            {
              match: { prefix: '/', headers: [header('x-backend', 'h2'), header('x-canary', 'true')] },
              route: { cluster: 'h2-canary' },
            },
            { match: { prefix: '/', headers: [header('x-backend', 'h2')] }, route: { cluster: 'h2' } },
            { match: { prefix: '/', headers: [header('x-canary', 'true')] }, route: { cluster: 'canary' } },
            { match: { prefix: '/' }, route: { cluster: 'stable' } },
          ],
    ),
    clusters: [...ports].map(([name, port]) => localCluster(name, [port])),
    ...(opts.rbac ? { rbac: opts.rbac } : {}),
  });

  before(async () => {
    ports.set('stable', await listen(named('stable')));
    ports.set('canary', await listen(named('canary')));
    ports.set('fresh', await listen(named('fresh')));
    ports.set('h2', await listen(http2.createServer((req, res) => res.end(`h2 ${req.url}`))));
    ports.set('h2-canary', await listen(http2.createServer((req, res) => res.end(`canary-h2 ${req.url}`))));
    ports.set('echo', await listen(net.createServer((s) => s.pipe(s))));
    // Server-first: speaks before the client does, like SMTP or MySQL.
    ports.set('banner', await listen(net.createServer((s) => s.end('220 hello from the server\r\n'))));
    // Their pod ports are not HTTP (no Service would declare them so): a same-node TCP stream into an
    // HTTP port is read by the inbound side until its first bytes, which a server-first client never sends.
    harness = await startOutbound(mesh(), { tcpPorts: new Set([ports.get('echo')!, ports.get('banner')!]) });
  });

  after(async () => {
    await harness?.close();
    for (const s of servers) s.close();
  });

  it('routes HTTP/1.1 per request: requests on one connection follow the header match', async () => {
    const agent = new Agent({ connections: 1 });
    try {
      const got: string[] = [];
      for (const canaryHeader of ['false', 'true', 'false']) {
        const res = await request(`http://127.0.0.1:${harness.port}/r`, {
          dispatcher: agent,
          headers: { 'x-canary': canaryHeader },
        });
        got.push(await res.body.text());
      }
      assert.deepEqual(got, ['stable /r', 'canary /r', 'stable /r']);
      assert.equal(harness.records.at(-1)?.protocol, 'http');
    } finally {
      await agent.close();
    }
  });

  it('routes h2c (prior knowledge) per stream', async () => {
    const s = http2.connect(`http://127.0.0.1:${harness.port}`);
    const get = (headers: Record<string, string>) =>
      new Promise<string>((resolve, reject) => {
        const r = s.request({ ':path': '/g', 'x-backend': 'h2', ...headers });
        let b = '';
        r.on('data', (c: Buffer) => {
          b += c;
        });
        r.on('end', () => resolve(b));
        r.on('error', reject);
      });
    try {
      // Streams of one session, each matched on its own headers.
      assert.deepEqual(
        [await get({}), await get({ 'x-canary': 'true' }), await get({})],
        ['h2 /g', 'canary-h2 /g', 'h2 /g'],
      );
    } finally {
      s.close();
    }
  });

  it('carries a binary protocol at L4, first bytes intact', async () => {
    const c = net.connect(harness.port, '127.0.0.1');
    const got: Buffer[] = [];
    c.on('data', (d: Buffer) => got.push(d));
    const payload = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x47, 0x45, 0x54, 0x20, 0x2f]);
    c.write(payload);
    await new Promise((r) => setTimeout(r, 200));
    c.end();
    await once(c, 'close');
    assert.deepEqual(Buffer.concat(got), payload);
    assert.equal(harness.records.at(-1)?.protocol, 'tcp');
  });

  it('a server-first protocol (the client waits) gets through at L4 after the detection timeout', async () => {
    harness.apply(mesh({ tcp: 'banner' }));
    try {
      const c = net.connect(harness.port, '127.0.0.1');
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      await once(c, 'end');
      c.destroy();
      assert.equal(Buffer.concat(got).toString(), '220 hello from the server\r\n');
    } finally {
      harness.apply(mesh());
    }
  });

  it('same node: an HTTP-only DENY rule hits only that method over HTTP, and the whole stream over TCP', async () => {
    // DENY DELETE from the caller: HTTP-only, so on TCP it matches (Istio), over HTTP only DELETE is denied.
    const denyDelete = {
      action: 'DENY',
      policies: {
        'no-delete': {
          permissions: [{ header: header(':method', 'DELETE') }],
          principals: [{ authenticated: { principal_name: { exact: SOURCE_ID } } }],
        },
      },
    };
    // A backend no earlier test has pooled a connection to, so the connection is made under the policy.
    harness.apply(mesh({ httpTo: 'fresh', rbac: [denyDelete] }));
    try {
      const get = await request(`http://127.0.0.1:${harness.port}/r`);
      assert.equal(get.statusCode, 200);
      await get.body.text();
      const del = await request(`http://127.0.0.1:${harness.port}/r`, { method: 'DELETE' });
      assert.equal(del.statusCode, 403);
      assert.equal(del.headers['x-sockmesh-flags'], 'UAEX');
      assert.match(await del.body.text(), /^RBAC: access denied \(no-delete\)\n$/);
      const c = net.connect(harness.port, '127.0.0.1');
      let error: string | undefined;
      c.on('error', (e: NodeJS.ErrnoException) => {
        error = e.code;
      });
      c.write(Buffer.from([0x00, 0x01, 0x02]));
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      await new Promise((r) => c.once('close', r));
      assert.equal(Buffer.concat(got).length, 0, 'not a byte through');
      assert.equal(error, 'ECONNRESET', 'refused with a reset');
      assert.equal(harness.records.at(-1)?.flags, 'UAEX');
    } finally {
      harness.apply(mesh());
    }
  });
});
