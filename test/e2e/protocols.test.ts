import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { LocalMesh } from '../../lab/mesh.js';
import { FIXTURES } from '../helpers/lab.js';
import { call, metric, startShop } from '../helpers/mesh.js';

const OVERLAY = fileURLToPath(new URL('./manifests/', import.meta.url));
const FRONTEND_ID = 'spiffe://cluster.local/ns/shop/sa/frontend';

/**
 * A raw TCP exchange from inside a pod: connect, stay silent for waitMs (a
 * server-first client), write payload (latin1), print what came back.
 */
async function raw(
  mesh: LocalMesh,
  from: string,
  host: string,
  port: number,
  payload: string,
  waitMs = 0,
): Promise<{ data?: string; error?: string }> {
  const script = `const s=require('net').connect(${port},${JSON.stringify(host)},()=>setTimeout(()=>s.write(Buffer.from(${JSON.stringify(payload)},'latin1')),${waitMs}));let d='';s.on('data',c=>d+=c);s.on('close',()=>process.stdout.write(JSON.stringify({data:d})));s.on('error',e=>{process.stdout.write(JSON.stringify({error:e.code}));process.exit(0)});setTimeout(()=>s.destroy(),5000).unref()`;
  const res = await mesh.exec(from, [process.execPath, '-e', script], 20_000);
  return JSON.parse(res.stdout) as { data?: string; error?: string };
}

/** The JSON body after the HTTP head of a raw response. */
function bodyOf(data: string | undefined): { caller: string | null; service: string } {
  const i = data?.indexOf('\r\n\r\n') ?? -1;
  assert.ok(data && i > 0, `no HTTP response in ${JSON.stringify(data)}`);
  return JSON.parse(data.slice(i + 4)) as { caller: string | null; service: string };
}

describe('L7 protocol handling end to end: detection, the sender chooses, authorization holds', () => {
  let mesh: LocalMesh;

  before(async () => {
    mesh = await startShop([OVERLAY]);
  });
  after(async () => {
    await mesh?.stop();
  });

  it('detects HTTP/1.1 on a port that declares no protocol and handles it per request', async () => {
    const url = 'http://ratings-auto.shop.svc.cluster.local:9280/';
    const ok = await call(mesh, 'shop/frontend-1', url);
    assert.equal(ok.status, 200, ok.error ?? ok.body);
    // Only the L7 path delivers the caller identity to the app.
    assert.equal((JSON.parse(ok.body) as { caller: string }).caller, FRONTEND_ID);
    // The Service's retry policy applies per request: tried again, then answered with URX.
    const failing = await call(mesh, 'shop/frontend-1', `${url}?status=503`);
    assert.equal(failing.status, 503);
    assert.equal(failing.flags, 'URX');
    const web = await call(mesh, 'shop/frontend-1', 'http://reviews-auto.shop.svc.cluster.local:9180/');
    assert.equal(web.status, 200, web.error ?? web.body);
    assert.equal((JSON.parse(web.body) as { caller: string }).caller, FRONTEND_ID);
  });

  it('routes detected HTTP by the HTTPRoute attached to the undeclared port', async () => {
    const url = 'http://reviews-auto.shop.svc.cluster.local:9180/';
    const versions = async (headers: Record<string, string>) => {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const r = await call(mesh, 'shop/frontend-1', url, { headers });
        assert.equal(r.status, 200, r.error ?? r.body);
        seen.add((JSON.parse(r.body) as { version: string }).version);
      }
      return [...seen];
    };
    assert.deepEqual(await versions({ 'x-canary': 'v2' }), ['v2']);
    assert.deepEqual(await versions({}), ['v1']);
  });

  it('detects h2c (prior knowledge) on an undeclared port', async () => {
    const out = JSON.parse(
      (
        await mesh.exec('shop/frontend-1', [
          process.execPath,
          join(FIXTURES, 'h2c-client.mjs'),
          'http://reviews-auto.shop.svc.cluster.local:9191/h2',
          '5',
        ])
      ).stdout,
    ) as Array<{ status: number; body: string }>;
    assert.deepEqual(
      out.map((a) => a.status),
      [200, 200, 200, 200, 200],
      JSON.stringify(out[0]),
    );
    const first = JSON.parse(out[0]!.body) as { protocol: string; caller: string };
    assert.equal(first.protocol, 'h2c');
    assert.equal(first.caller, FRONTEND_ID);
  });

  it('carries a binary protocol on an undeclared port at L4, bytes intact', async () => {
    // Not HTTP: the app's own HTTP parser answers 400, which only happens if the bytes reached it as sent.
    const r = await raw(
      mesh,
      'shop/frontend-1',
      'ratings-auto.shop.svc.cluster.local',
      9280,
      '\x16\x03\x01\x00\x05hello\r\n\r\n',
    );
    assert.match(r.data ?? '', /^HTTP\/1\.1 400 /, JSON.stringify(r));
  });

  it('a client that waits for the server first is carried at L4 after the detection timeout', async () => {
    const r = await raw(
      mesh,
      'shop/frontend-1',
      'ratings-auto.shop.svc.cluster.local',
      9280,
      'GET /late HTTP/1.0\r\nhost: x\r\n\r\n',
      400,
    );
    assert.match(r.data ?? '', /^HTTP\/1\.1 200 /, JSON.stringify(r));
    // Taken as TCP by node1 before the request came; node2, where the pod serves HTTP on that
    // port, parses what it finds there, so the pod reads the caller the tunnel's peer proved.
    assert.equal(bodyOf(r.data).caller, FRONTEND_ID);
  });

  it('TCP into a pod port an HTTP Service shares: admitted as TCP, and the pod reads only the identity the peer proved', async () => {
    // frontend (node1) -> reviews v2 (node2) through the tunnel, as TCP, on pod port 9080 (HTTP for
    // `reviews`). The TCP admission is the next test's; here the HTTP inside carries a forged
    // x-forwarded-client-cert, which node2 must not pass on as bytes.
    const r = await raw(
      mesh,
      'shop/frontend-1',
      'reviews-v2-tcp.shop.svc.cluster.local',
      9092,
      'GET / HTTP/1.0\r\nhost: x\r\nx-forwarded-client-cert: By=x;URI=spiffe://cluster.local/ns/kube-system/sa/admin\r\n\r\n',
    );
    assert.match(r.data ?? '', /^HTTP\/1\.1 200 /, JSON.stringify(r));
    const body = bodyOf(r.data);
    assert.equal(body.service, 'reviews');
    assert.equal(body.caller, FRONTEND_ID, 'node2 relayed a forged identity header to the pod');
  });

  it('on a TCP stream a DENY rule with an HTTP-only condition matches; over HTTP it only hits that method', async () => {
    const host = 'ratings-tcp.shop.svc.cluster.local';
    const get = 'GET / HTTP/1.0\r\nhost: x\r\n\r\n';
    const denied = await raw(mesh, 'shop/reviews-v1-1', host, 9093, get);
    assert.ok(
      denied.error !== undefined || denied.data === '',
      `reviews got through over TCP: ${JSON.stringify(denied)}`,
    );
    const other = await raw(mesh, 'shop/frontend-1', host, 9093, get);
    assert.match(other.data ?? '', /^HTTP\/1\.1 200 /, 'the DENY rule names reviews only');
    const overHttp = await call(mesh, 'shop/reviews-v1-1', 'http://ratings.shop.svc.cluster.local:9080/');
    assert.equal(overHttp.status, 200, `GET is not DELETE: ${JSON.stringify(overHttp)}`);
    const del = await call(mesh, 'shop/reviews-v1-1', 'http://ratings.shop.svc.cluster.local:9080/', {
      method: 'DELETE',
    });
    assert.equal(del.status, 403);
    const scrape = (await mesh.agentGet('node1', '/metrics')).body;
    assert.ok(metric(scrape, 'sockmesh_authz_denials_total') >= 2, 'denials counted');
  });
});
