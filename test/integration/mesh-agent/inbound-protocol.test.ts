import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { Authorizer } from '../../../mesh-agent/authz/index.js';
import type { AuthorizationCheck, AuthzRequest, LocalWorkload } from '../../../mesh-agent/inbound/policy.js';
import { TunnelError, TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import {
  type InboundTunnel,
  openAsSender,
  startInboundTunnel,
  throughTunnel,
} from './fixtures/inbound-tunnel.js';

const TD = 'inbound-protocol.test';
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;

/** The real RBAC evaluator behind the inbound seam; policies are swapped per test. */
class Rbac implements AuthorizationCheck {
  authorizer = new Authorizer([]);
  check(req: AuthzRequest) {
    const d = this.authorizer.evaluate({
      sourcePrincipal: req.sourcePrincipal,
      sourceNamespace: req.sourceNamespace,
      destinationPort: req.port,
      method: req.method,
      path: req.path,
    });
    return d.allowed
      ? { allowed: true as const }
      : { allowed: false as const, policy: d.policy ?? 'default-deny', reason: d.reason };
  }
  needsHttp() {
    return true;
  }
}

const rule = (action: 'ALLOW' | 'DENY', name: string, principal: string, permission: object) =>
  ({
    action,
    policies: {
      [name]: {
        permissions: [permission],
        principals: [{ authenticated: { principal_name: { exact: principal } } }],
      },
    },
  }) as const;

describe('inbound: the sender chooses TCP or HTTP, authorization cannot be bypassed by it', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let legacy: X509Svid;
  let echo: net.Server;
  let app: http.Server;
  let tunnelAddr = '';
  let dest: InboundTunnel | undefined;
  let echoPort = 0;
  let appPort = 0;
  const rbac = new Rbac();
  let pod: LocalWorkload;

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(id('frontend'));
    legacy = await ca.issueSvid(id('legacy'));
    const reviewsSvid = await ca.issueSvid(id('reviews'));
    // A byte echo on a port an HTTP Service also targets (the pod declares it HTTP).
    echo = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
    app = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ path: req.url, xfcc: req.headers['x-forwarded-client-cert'] ?? null }));
    });
    app.listen(0, '127.0.0.1');
    await Promise.all([once(echo, 'listening'), once(app, 'listening')]);
    echoPort = (echo.address() as net.AddressInfo).port;
    appPort = (app.address() as net.AddressInfo).port;
    pod = {
      ip: '127.0.0.1',
      namespace: 'shop',
      name: 'reviews-v1',
      serviceAccount: 'reviews',
      spiffeId: id('reviews'),
      version: 'v1',
      // The echo port is declared HTTP by some Service; the app port only TCP.
      protocolOf: (port) => (port === echoPort ? 'http' : 'tcp'),
    };
    dest = await startInboundTunnel({
      ca,
      svids: [reviewsSvid],
      workloads: { byIp: (ip) => (ip === pod.ip ? pod : undefined) },
      authz: rbac,
    });
    tunnelAddr = dest.address;
  });

  after(async () => {
    await dest?.close();
    echo?.close();
    app?.close();
  });

  const sender = (source: X509Svid, port: number, protocol?: 'http' | 'tcp') => ({
    source,
    nodeAddress: tunnelAddr,
    expectedServerId: id('reviews'),
    authority: `127.0.0.1:${port}`,
    ...(protocol ? { protocol } : {}),
  });
  const open = (tp: TunnelPool, source: X509Svid, port: number, protocol?: 'http' | 'tcp') =>
    openAsSender(tp, sender(source, port, protocol));
  /** An undici Pool whose connections are tunnel streams the sender marked HTTP. */
  const httpThroughTunnel = (tp: TunnelPool, source: X509Svid, port: number) =>
    throughTunnel(tp, sender(source, port, 'http'));

  async function roundTrip(s: NodeJS.ReadWriteStream & { end(b: string): void }, payload: string) {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.end(payload);
    await once(s, 'end');
    return Buffer.concat(got).toString();
  }

  it('splices bytes as TCP when the sender proxied TCP, even to a port declared HTTP', async () => {
    const tp = new TunnelPool();
    try {
      // Not HTTP at all: an HTTP parser on the receiving side would drop the connection.
      const s = await open(tp, frontend, echoPort, 'tcp');
      assert.equal(await roundTrip(s, '\x00\x01binary hello\r\n'), '\x00\x01binary hello\r\n');
    } finally {
      tp.close();
    }
  });

  it('parses HTTP when the sender proxied HTTP, even to a port no Service declares HTTP', async () => {
    const tp = new TunnelPool();
    const client = httpThroughTunnel(tp, frontend, appPort);
    try {
      const res = await client.request({
        path: '/x',
        method: 'GET',
        headers: { 'x-forwarded-client-cert': 'URI=spiffe://forged/ns/x/sa/y' },
      });
      assert.equal(res.statusCode, 200);
      const body = (await res.body.json()) as { xfcc: string };
      assert.equal(
        body.xfcc,
        `By=${id('reviews')};URI=${id('frontend')}`,
        'HTTP handling: identity delivered',
      );
    } finally {
      await client.close();
      tp.close();
    }
  });

  it('without a sender protocol, falls back to the port declaration', async () => {
    const tp = new TunnelPool();
    try {
      // Declared TCP: spliced, so the app's own HTTP parser answers the junk.
      const toApp = await open(tp, frontend, appPort);
      assert.match(await roundTrip(toApp, 'raw bytes\r\n\r\n'), /^HTTP\/1\.1 400 /);
      // Declared HTTP: parsed by the inbound side, which answers what is not HTTP itself (no echo).
      const toEcho = await open(tp, frontend, echoPort);
      const answer = await roundTrip(toEcho, 'raw bytes\r\n\r\n');
      assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.ok(!answer.includes('raw bytes'), answer);
    } finally {
      tp.close();
    }
  });

  it('on a TCP stream, a DENY rule with an HTTP-only condition matches (refused)', async () => {
    rbac.authorizer = Authorizer.fromWire([
      rule('DENY', 'no-get-for-legacy', id('legacy'), {
        header: { name: ':method', string_match: { exact: 'GET' } },
      }),
    ]);
    const tp = new TunnelPool();
    try {
      await assert.rejects(
        open(tp, legacy, echoPort, 'tcp'),
        (e) => e instanceof TunnelError && e.status === 403,
      );
      const other = await open(tp, frontend, echoPort, 'tcp');
      assert.equal(await roundTrip(other, 'ok'), 'ok', 'the DENY rule names legacy only');
    } finally {
      rbac.authorizer = new Authorizer([]);
      tp.close();
    }
  });

  it('on a TCP stream, an ALLOW rule with an HTTP-only condition does not match (refused)', async () => {
    rbac.authorizer = Authorizer.fromWire([
      rule('ALLOW', 'frontend-api', id('frontend'), { url_path: { path: { prefix: '/api/' } } }),
    ]);
    const tp = new TunnelPool();
    const client = httpThroughTunnel(tp, frontend, appPort);
    try {
      await assert.rejects(
        open(tp, frontend, echoPort, 'tcp'),
        (e) => e instanceof TunnelError && e.status === 403,
      );
      // The same rule allows the HTTP requests it describes, and only those.
      const ok = await client.request({ path: '/api/x', method: 'GET' });
      assert.equal(ok.statusCode, 200);
      await ok.body.text();
      const no = await client.request({ path: '/admin', method: 'GET' });
      assert.equal(no.statusCode, 403);
      assert.equal(await no.body.text(), 'RBAC: access denied (default-deny)\n');
    } finally {
      rbac.authorizer = new Authorizer([]);
      await client.close();
      tp.close();
    }
  });
});
