import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { Authorizer } from '../../../mesh-agent/authz/index.js';
import type { AuthorizationCheck } from '../../../mesh-agent/inbound/policy.js';
import type { OutboundPlan, RouteDecision } from '../../../mesh-agent/outbound/plan.js';
import { type Harness, SOURCE_ID, startOutbound, TestCluster } from './fixtures/outbound-harness.js';

/** Answers which backend it is, so per-request routing shows. */
function named(name: string): http.Server {
  return http.createServer((req, res) => res.end(`${name} ${req.url}`));
}

describe('outbound: protocol detection on a port that does not declare its protocol', () => {
  let harness: Harness;
  // DENY DELETE from the caller: HTTP-only, so on TCP it matches (Istio), over HTTP only DELETE is denied.
  const rbac = Authorizer.fromWire([
    {
      action: 'DENY',
      policies: {
        'no-delete': {
          permissions: [{ header: { name: ':method', string_match: { exact: 'DELETE' } } }],
          principals: [{ authenticated: { principal_name: { exact: SOURCE_ID } } }],
        },
      },
    },
  ]);
  let denyDelete = false;
  const authz: AuthorizationCheck = {
    check: (req) => {
      if (!denyDelete) return { allowed: true };
      const d = rbac.evaluate({
        sourcePrincipal: req.sourcePrincipal,
        sourceNamespace: req.sourceNamespace,
        destinationPort: req.port,
        method: req.method,
        path: req.path,
      });
      return d.allowed ? { allowed: true } : { allowed: false, policy: d.policy ?? '-', reason: d.reason };
    },
    needsHttp: () => true,
  };
  const servers: net.Server[] = [];
  let stable: TestCluster;
  let canary: TestCluster;
  let tcp: TestCluster;
  let banner: TestCluster;
  let detect: (tcpCluster: TestCluster) => OutboundPlan;
  let forwardTo: (cluster: TestCluster) => RouteDecision;

  const listen = async (s: net.Server) => {
    servers.push(s);
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return (s.address() as AddressInfo).port;
  };

  before(async () => {
    stable = new TestCluster('stable', [await listen(named('stable'))]);
    const h2 = http2.createServer((req, res) => res.end(`canary-h2 ${req.url}`));
    const canaryH1 = await listen(named('canary'));
    canary = new TestCluster('canary', [canaryH1]);
    const h2port = await listen(h2);
    const h2cluster = new TestCluster('h2', [h2port]);
    tcp = new TestCluster('echo', [await listen(net.createServer((s) => s.pipe(s)))]);
    // Server-first: speaks before the client does, like SMTP or MySQL.
    banner = new TestCluster('banner', [
      await listen(net.createServer((s) => s.end('220 hello from the server\r\n'))),
    ]);
    forwardTo = (cluster: TestCluster): RouteDecision => ({
      kind: 'forward',
      cluster,
      timeoutMs: undefined,
      idleTimeoutMs: undefined,
      retry: undefined,
      headers: {},
      hashKey: undefined,
      routeName: 'r',
    });
    detect = (tcpCluster) => ({
      kind: 'detect',
      http: {
        kind: 'http',
        service: 'reviews.shop',
        route: (req) =>
          forwardTo(
            req.headers[':method'] !== undefined
              ? h2cluster
              : req.headers['x-canary'] === 'true'
                ? canary
                : stable,
          ),
      },
      tcp: { kind: 'tcp', service: 'reviews.shop', cluster: () => tcpCluster, idleTimeoutMs: undefined },
    });
    harness = await startOutbound(detect(tcp), authz);
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
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const r = s.request({ ':path': '/g' });
        let b = '';
        r.on('data', (c: Buffer) => {
          b += c;
        });
        r.on('end', () => resolve(b));
        r.on('error', reject);
      });
      assert.equal(body, 'canary-h2 /g');
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
    harness.setPlan(detect(banner));
    try {
      const c = net.connect(harness.port, '127.0.0.1');
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      await once(c, 'end');
      c.destroy();
      assert.equal(Buffer.concat(got).toString(), '220 hello from the server\r\n');
    } finally {
      harness.setPlan(detect(tcp));
    }
  });

  it('same node: an HTTP-only DENY rule hits only that method over HTTP, and the whole stream over TCP', async () => {
    // A backend no earlier test has pooled a connection to, so the connection is made under the policy.
    const fresh = new TestCluster('fresh', [await listen(named('fresh'))]);
    const base = detect(tcp);
    assert.ok(base.kind === 'detect');
    harness.setPlan({
      ...base,
      http: { ...base.http, route: () => forwardTo(fresh) },
    });
    denyDelete = true;
    try {
      const get = await request(`http://127.0.0.1:${harness.port}/r`);
      assert.equal(get.statusCode, 200);
      await get.body.text();
      const del = await request(`http://127.0.0.1:${harness.port}/r`, { method: 'DELETE' });
      assert.equal(del.statusCode, 403);
      await del.body.text();
      const c = net.connect(harness.port, '127.0.0.1');
      c.on('error', () => {});
      c.write(Buffer.from([0x00, 0x01, 0x02]));
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      await once(c, 'close');
      assert.equal(Buffer.concat(got).length, 0, 'refused');
      assert.equal(harness.records.at(-1)?.flags, 'UAEX');
    } finally {
      denyDelete = false;
      harness.setPlan(detect(tcp));
    }
  });
});
