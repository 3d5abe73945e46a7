import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import type { LocalWorkload } from '../../../mesh-agent/inbound/policy.js';
import { TunnelError, TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import { InboundPolicy } from './fixtures/inbound-policy.js';
import { type InboundTunnel, startInboundTunnel, throughTunnel } from './fixtures/inbound-tunnel.js';

const TD = 'inbound.test';
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;

describe('inbound: authorization and identity delivery behind the tunnel', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let legacy: X509Svid;
  let app: http.Server;
  let raw: net.Server;
  const appPort = 18080;
  const rawPort = 18081;
  let tunnelAddr = '';
  let dest: InboundTunnel;
  const policy = new InboundPolicy('127.0.0.1');
  const denials: string[] = [];
  const reviews: LocalWorkload = {
    ip: '127.0.0.1',
    namespace: 'shop',
    name: 'reviews-v1',
    serviceAccount: 'reviews',
    spiffeId: id('reviews'),
    version: 'v1',
    protocolOf: (port) => (port === appPort ? 'http' : 'tcp'),
  };

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(id('frontend'));
    legacy = await ca.issueSvid(id('legacy'));
    const reviewsSvid = await ca.issueSvid(id('reviews'));
    app = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ path: req.url, xfcc: req.headers['x-forwarded-client-cert'] ?? null }));
    });
    app.listen(appPort, '127.0.0.1');
    raw = net.createServer((s) => s.pipe(s)).listen(rawPort, '127.0.0.1');
    await Promise.all([once(app, 'listening'), once(raw, 'listening')]);
    dest = await startInboundTunnel({
      ca,
      svids: [reviewsSvid],
      workloads: { byIp: (ip) => (ip === reviews.ip ? reviews : undefined) },
      authz: policy.authz,
      events: { denied: (ev) => denials.push(`${ev.source} ${ev.path ?? ''}`) },
    });
    tunnelAddr = dest.address;
  });

  after(async () => {
    await dest.close();
    app.close();
    raw.close();
  });

  const httpThroughTunnel = (pool: TunnelPool, source: X509Svid) =>
    throughTunnel(pool, {
      source,
      nodeAddress: tunnelAddr,
      expectedServerId: id('reviews'),
      authority: `127.0.0.1:${appPort}`,
    });

  it('delivers HTTP with the caller SPIFFE ID in x-forwarded-client-cert, replacing any forged one', async () => {
    const tp = new TunnelPool();
    const client = httpThroughTunnel(tp, frontend);
    try {
      const res = await client.request({
        path: '/reviews/1',
        method: 'GET',
        headers: { 'x-forwarded-client-cert': 'URI=spiffe://forged/ns/x/sa/y' },
      });
      assert.equal(res.statusCode, 200);
      const body = (await res.body.json()) as { path: string; xfcc: string };
      assert.equal(body.path, '/reviews/1');
      assert.equal(body.xfcc, `By=${id('reviews')};URI=${id('frontend')}`);
    } finally {
      await client.close();
      tp.close();
    }
  });

  it('denies an HTTP path for one principal with 403 while others pass, and reports the denial', async () => {
    policy.deny([{ principal: id('legacy'), pathPrefix: '/admin' }]);
    const tp = new TunnelPool();
    const asLegacy = httpThroughTunnel(tp, legacy);
    const asFrontend = httpThroughTunnel(tp, frontend);
    try {
      const denied = await asLegacy.request({ path: '/admin/x', method: 'GET' });
      assert.equal(denied.statusCode, 403);
      assert.equal(denied.headers['x-sockmesh-reason'], 'denied by authorization policy');
      assert.equal(await denied.body.text(), 'RBAC: access denied (deny-0)\n');
      const allowed = await asLegacy.request({ path: '/reviews/2', method: 'GET' });
      assert.equal(allowed.statusCode, 200);
      await allowed.body.text();
      const other = await asFrontend.request({ path: '/admin/x', method: 'GET' });
      assert.equal(other.statusCode, 200);
      await other.body.text();
      assert.ok(denials.includes(`${id('legacy')} /admin/x`));
    } finally {
      policy.deny([]);
      await asLegacy.close();
      await asFrontend.close();
      tp.close();
    }
  });

  it('refuses a TCP connection from a denied principal and splices allowed ones', async () => {
    policy.deny([{ principal: id('legacy') }]);
    const tp = new TunnelPool();
    try {
      await assert.rejects(
        tp.open({
          source: legacy,
          nodeAddress: tunnelAddr,
          expectedServerId: id('reviews'),
          authority: `127.0.0.1:${rawPort}`,
        }),
        (err) => err instanceof TunnelError && err.status === 403,
      );
      const s = await tp.open({
        source: frontend,
        nodeAddress: tunnelAddr,
        expectedServerId: id('reviews'),
        authority: `127.0.0.1:${rawPort}`,
      });
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.end('tcp ok');
      await once(s, 'end');
      assert.equal(Buffer.concat(got).toString(), 'tcp ok');
    } finally {
      policy.deny([]);
      tp.close();
    }
  });

  it('never relays to an address that is not a workload of this node', async () => {
    const tp = new TunnelPool();
    try {
      await assert.rejects(
        tp.open({
          source: frontend,
          nodeAddress: tunnelAddr,
          expectedServerId: id('reviews'),
          authority: `127.0.0.2:${rawPort}`,
        }),
        (err) => err instanceof TunnelError && err.status === 404,
      );
    } finally {
      tp.close();
    }
  });
});
