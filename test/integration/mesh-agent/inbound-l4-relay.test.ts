/**
 * One L7 hop per request: the caller's node parses and routes, the destination
 * node relays the tunnel stream to the pod as bytes unless a policy on that
 * (workload, port) needs method, path or headers. Real TLS, HTTP/2 CONNECT,
 * undici and node:http on loopback; the real RBAC evaluator.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Pool } from 'undici';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { parseRbac } from '../../../mesh-agent/authz/rbac.js';
import type { LocalWorkload } from '../../../mesh-agent/inbound/policy.js';
import { InboundServer } from '../../../mesh-agent/inbound/server.js';
import type {
  Endpoint,
  HttpRequestView,
  RouteDecision,
  UpstreamCluster,
} from '../../../mesh-agent/outbound/plan.js';
import { OutboundServer } from '../../../mesh-agent/outbound/server.js';
import { TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import {
  type InboundTunnel,
  openAsSender,
  RbacCheck,
  startInboundTunnel,
  throughTunnel,
} from './fixtures/inbound-tunnel.js';

const TD = 'l4-relay.test';
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;

const denyDeleteOnAdmin = (principal: string) =>
  parseRbac({
    action: 'DENY',
    policies: {
      'no-delete-admin': {
        permissions: [
          {
            and_rules: {
              rules: [
                { header: { name: ':method', string_match: { exact: 'DELETE' } } },
                { url_path: { path: { prefix: '/admin' } } },
              ],
            },
          },
        ],
        principals: [{ authenticated: { principal_name: { exact: principal } } }],
      },
    },
  });

/** Bytes a Node HTTP proxy would rewrite: header case, padding, repeated headers, a forged XFCC. */
const ODD_REQUEST = Buffer.from(
  'GET /odd?q=1 HTTP/1.1\r\nHost: reviews.shop:9080\r\nX-Odd-CASE:   padded value   \r\n' +
    'x-dup: 1\r\nX-Dup: 2\r\nX-Forwarded-Client-Cert: By=x;URI=spiffe://forged/ns/a/sa/b\r\n\r\n',
);

describe('inbound: HTTP relayed as L4 when no policy needs the request (one L7 hop)', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let app: http.Server;
  let h2app: http2.Http2Server;
  let raw: net.Server;
  const rawBytes: Buffer[] = [];
  let inbound: InboundServer;
  let tunnelAddr = '';
  let dest: InboundTunnel;
  const rbac = new RbacCheck();
  let appPort = 0;
  let h2Port = 0;
  let rawPort = 0;
  const reviews: LocalWorkload = {
    ip: '127.0.0.1',
    namespace: 'shop',
    name: 'reviews-v1',
    serviceAccount: 'reviews',
    spiffeId: id('reviews'),
    version: 'v1',
    protocolOf: () => 'http',
  };

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(id('frontend'));
    const reviewsSvid = await ca.issueSvid(id('reviews'));
    app = http.createServer((req, res) => {
      req.resume();
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          method: req.method,
          path: req.url,
          xfcc: req.headers['x-forwarded-client-cert'] ?? null,
        }),
      );
    });
    h2app = http2.createServer();
    h2app.on('stream', (s, h) => {
      s.respond({ ':status': 200, 'content-type': 'application/json' });
      s.end(JSON.stringify({ xfcc: h['x-forwarded-client-cert'] ?? null }));
    });
    raw = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        rawBytes.push(d);
        if (Buffer.concat(rawBytes).includes('\r\n\r\n'))
          s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok', () => s.end());
      });
    });
    app.listen(0, '127.0.0.1');
    h2app.listen(0, '127.0.0.1');
    raw.listen(0, '127.0.0.1');
    await Promise.all([once(app, 'listening'), once(h2app, 'listening'), once(raw, 'listening')]);
    appPort = (app.address() as net.AddressInfo).port;
    h2Port = (h2app.address() as net.AddressInfo).port;
    rawPort = (raw.address() as net.AddressInfo).port;
    // The relay is opt-in (--trust-tunnel-senders): sound only where no workload holds an SVID.
    dest = await startInboundTunnel({
      ca,
      svids: [reviewsSvid],
      workloads: { byIp: (ip) => (ip === reviews.ip ? reviews : undefined) },
      authz: rbac,
      trustSenderIdentity: true,
    });
    ({ inbound, address: tunnelAddr } = dest);
  });

  after(async () => {
    await dest.close();
    app.closeAllConnections();
    app.close();
    h2app.close();
    raw.close();
  });

  beforeEach(() => {
    rbac.configs = [];
  });

  const sender = (port: number, protocol: 'http' | 'unsaid' = 'http') => ({
    source: frontend,
    nodeAddress: tunnelAddr,
    expectedServerId: id('reviews'),
    authority: `127.0.0.1:${port}`,
    ...(protocol === 'http' ? { protocol } : {}),
  });
  /** What the sending node proxy opens for an HTTP connection it has routed (see OutboundServer.dial). */
  const openHttpAsSender = (tp: TunnelPool, port: number) => openAsSender(tp, sender(port));
  /** A keep-alive HTTP/1.1 client whose connections are tunnel streams opened the way the sender opens them. */
  const senderPool = (tp: TunnelPool, port: number, protocol: 'http' | 'unsaid' = 'http') =>
    throughTunnel(tp, sender(port, protocol), { origin: `http://127.0.0.1:${port}`, connections: 1 });

  it('relays the request bytes unparsed to the pod (byte-identical) and counts the relayed stream', async () => {
    const tp = new TunnelPool();
    try {
      const before = inbound.relayedHttpStreams;
      rawBytes.length = 0;
      const s = await openHttpAsSender(tp, rawPort);
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.end(ODD_REQUEST);
      await once(s, 'end');
      assert.match(Buffer.concat(got).toString(), /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
      assert.deepEqual(Buffer.concat(rawBytes), ODD_REQUEST);
      assert.equal(inbound.relayedHttpStreams, before + 1);
    } finally {
      tp.close();
    }
  });

  it('parses (and so replaces XFCC) when the sender does not say it wrote the caller identity', async () => {
    const tp = new TunnelPool();
    const client = senderPool(tp, appPort, 'unsaid');
    try {
      const before = inbound.relayedHttpStreams;
      const res = await client.request({
        path: '/x',
        method: 'GET',
        headers: { 'x-forwarded-client-cert': 'By=x;URI=spiffe://forged/ns/a/sa/b' },
      });
      const body = (await res.body.json()) as { xfcc: string };
      assert.equal(body.xfcc, `By=${id('reviews')};URI=${id('frontend')}`);
      assert.equal(inbound.relayedHttpStreams, before);
    } finally {
      await client.close();
      tp.close();
    }
  });

  it('still denies per method and path when an L7 rule applies to the port (the stream is parsed)', async () => {
    rbac.configs = [denyDeleteOnAdmin(id('frontend'))];
    const tp = new TunnelPool();
    const client = senderPool(tp, appPort);
    try {
      const before = inbound.relayedHttpStreams;
      const denied = await client.request({ path: '/admin/users', method: 'DELETE' });
      assert.equal(denied.statusCode, 403);
      assert.match(await denied.body.text(), /RBAC: access denied \(no-delete-admin\)/);
      const get = await client.request({ path: '/admin/users', method: 'GET' });
      assert.equal(get.statusCode, 200);
      await get.body.text();
      const other = await client.request({ path: '/reviews/1', method: 'DELETE' });
      assert.equal(other.statusCode, 200);
      await other.body.text();
      assert.equal(inbound.relayedHttpStreams, before, 'no stream was relayed as bytes');
    } finally {
      await client.close();
      tp.close();
    }
  });

  it('closes an already relayed keep-alive connection when a new policy needs L7; the next request is checked', async () => {
    const tp = new TunnelPool();
    const client = senderPool(tp, appPort);
    try {
      const before = inbound.relayedHttpStreams;
      const first = await client.request({ path: '/admin/users', method: 'DELETE' });
      assert.equal(first.statusCode, 200, 'no policy yet');
      await first.body.text();
      assert.equal(inbound.relayedHttpStreams, before + 1);
      // The relayed stream stays open (keep-alive) until policy changes.
      rbac.configs = [denyDeleteOnAdmin(id('frontend'))];
      assert.ok(inbound.recheck() >= 1, 'the relayed stream is closed by the re-check');
      // Same client, same pool: it reconnects, and that connection is parsed and checked.
      let denied = await client.request({ path: '/admin/users', method: 'DELETE' }).catch(() => undefined);
      // A request racing the close may fail once with a reset; the retry is what a client does.
      denied ??= await client.request({ path: '/admin/users', method: 'DELETE' });
      assert.equal(denied.statusCode, 403);
      await denied.body.text();
      assert.equal(inbound.relayedHttpStreams, before + 1, 'the new connection is not relayed');
      // And back: once the rule is gone, a re-check leaves the parsed connection alone and new ones relay.
      rbac.configs = [];
      assert.equal(inbound.recheck(), 0);
    } finally {
      await client.close();
      tp.close();
    }
  });

  it('closes a relayed stream whose caller a new connection-level rule denies', async () => {
    const tp = new TunnelPool();
    try {
      const s = await openHttpAsSender(tp, rawPort);
      rbac.configs = [
        parseRbac({
          action: 'DENY',
          policies: {
            'no-frontend': {
              permissions: [{ any: true }],
              principals: [{ authenticated: { principal_name: { exact: id('frontend') } } }],
            },
          },
        }),
      ];
      const closed = new Promise((resolve) => s.once('close', resolve));
      assert.ok(inbound.recheck() >= 1);
      await closed;
    } finally {
      tp.close();
    }
  });

  it('plaintext HTTP (permissive) is still parsed: a caller denied at L4 gets a 403, not a reset', async () => {
    rbac.configs = [
      parseRbac({
        action: 'ALLOW',
        policies: {
          'frontend-only': {
            permissions: [{ any: true }],
            principals: [{ authenticated: { principal_name: { exact: id('frontend') } } }],
          },
        },
      }),
    ];
    // As the kernel hands it over: a socket whose local end is the pod's ip:port.
    const taker = net.createServer((s) => inbound.handlePlaintext(s));
    taker.listen(0, '127.0.0.1');
    await once(taker, 'listening');
    const before = inbound.relayedHttpStreams;
    const client = new Pool(`http://127.0.0.1:${(taker.address() as net.AddressInfo).port}`);
    try {
      const res = await client.request({ path: '/', method: 'GET' });
      assert.equal(res.statusCode, 403);
      assert.match(await res.body.text(), /RBAC: access denied \(default-deny\)/);
      assert.equal(inbound.relayedHttpStreams, before);
    } finally {
      await client.close();
      taker.close();
    }
  });

  describe("through the caller node's OutboundServer (remote endpoint, the tunnel, this inbound)", () => {
    let outbound: OutboundServer;
    let callerInbound: InboundServer;
    let tunnels: TunnelPool;
    let port = 0;
    let target = 0;

    before(async () => {
      const [tunnelIp = '', tunnelPort = ''] = tunnelAddr.split(':');
      const endpoint = (): Endpoint => ({
        key: `127.0.0.1:${target}`,
        ip: '127.0.0.1',
        port: target,
        node: 'node2',
        local: false,
        tunnelAddress: `${tunnelIp}:${tunnelPort}`,
        spiffeId: id('reviews'),
        version: 'v1',
        workload: 'reviews-v1',
        namespace: 'shop',
      });
      const cluster: UpstreamCluster = {
        name: 'outbound|9080||reviews.shop.svc.cluster.local',
        pick: endpoint,
        tryAcquire: () => () => {},
        report: () => {},
        track: () => () => {},
        connectTimeoutMs: 5000,
        service: 'reviews.shop',
        version: undefined,
      };
      const route = (req: HttpRequestView): RouteDecision => {
        const headers: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = v;
        return {
          kind: 'forward',
          cluster,
          timeoutMs: 15_000,
          idleTimeoutMs: undefined,
          retry: undefined,
          headers,
          hashKey: undefined,
          routeName: 'reviews',
        };
      };
      const source = {
        ip: '127.0.0.1',
        namespace: 'shop',
        name: 'frontend-1',
        serviceAccount: 'frontend',
        spiffeId: id('frontend'),
        version: 'v1',
      };
      callerInbound = new InboundServer({
        workloads: { byIp: () => undefined },
        authz: { check: () => ({ allowed: true }), needsHttp: () => false },
      });
      tunnels = new TunnelPool();
      outbound = new OutboundServer({
        planner: {
          plan: () => ({ kind: 'http', service: 'reviews.shop', route }),
          endpointAt: () => undefined,
        },
        origDst: { lookup: () => ({ ip: '10.96.0.20', port: 9080 }) },
        sources: { byIp: (ip) => (ip === '127.0.0.1' ? source : undefined) },
        svids: { svidFor: (s) => (s === id('frontend') ? frontend : undefined) },
        tunnels,
        inbound: callerInbound,
        localWorkloads: { byIp: () => undefined },
      });
      port = (await outbound.listen(0, '127.0.0.1')).port;
    });

    after(async () => {
      await outbound.close();
      await callerInbound.close();
      tunnels.close();
    });

    it('HTTP/1.1: the app gets the caller identity in XFCC written by the caller node, a forged one replaced', async () => {
      target = appPort;
      const before = inbound.relayedHttpStreams;
      const client = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
      try {
        for (let i = 0; i < 3; i++) {
          const res = await client.request({
            path: `/reviews/${i}`,
            method: 'GET',
            headers: { 'x-forwarded-client-cert': 'By=x;URI=spiffe://forged/ns/a/sa/b' },
          });
          assert.equal(res.statusCode, 200);
          const body = (await res.body.json()) as { path: string; xfcc: string };
          assert.equal(body.path, `/reviews/${i}`);
          assert.equal(body.xfcc, `By=${id('reviews')};URI=${id('frontend')}`);
        }
        assert.equal(inbound.relayedHttpStreams, before + 1, 'one relayed stream carried all three requests');
      } finally {
        await client.close();
      }
    });

    it('a caller a connection-level rule denies gets 403 UAEX from its own node (the CONNECT is refused)', async () => {
      target = appPort;
      rbac.configs = [
        parseRbac({
          action: 'DENY',
          policies: {
            'no-frontend': {
              permissions: [{ any: true }],
              principals: [{ authenticated: { principal_name: { exact: id('frontend') } } }],
            },
          },
        }),
      ];
      // As the agent does on every config: the pooled relayed stream of the test before is closed.
      inbound.recheck();
      const client = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
      try {
        const res = await client.request({ path: '/reviews/1', method: 'GET' });
        assert.equal(res.statusCode, 403);
        assert.equal(res.headers['x-sockmesh-flags'], 'UAEX');
        await res.body.text();
      } finally {
        rbac.configs = [];
        await client.close();
      }
    });

    it('h2c (gRPC-style): the stream is relayed and still carries the caller identity', async () => {
      target = h2Port;
      const before = inbound.relayedHttpStreams;
      const session = http2.connect(`http://127.0.0.1:${port}`);
      try {
        const req = session.request({
          ':path': '/pkg.Svc/Call',
          ':method': 'POST',
          'content-type': 'application/grpc',
          'x-forwarded-client-cert': 'By=x;URI=spiffe://forged/ns/a/sa/b',
        });
        req.end();
        const chunks: Buffer[] = [];
        req.on('data', (d: Buffer) => chunks.push(d));
        await once(req, 'end');
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { xfcc: string };
        assert.equal(body.xfcc, `By=${id('reviews')};URI=${id('frontend')}`);
        assert.equal(inbound.relayedHttpStreams, before + 1);
      } finally {
        session.close();
      }
    });
  });
});
