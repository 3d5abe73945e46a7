/**
 * Permissive mode end to end: a meshed namespace labelled `sockmesh.io/mtls:
 * permissive` still takes plaintext from outside the mesh, but the node agent
 * takes it first (sk_lookup in the pod's netns, port 15006) and applies
 * AuthorizationPolicy to it as an unauthenticated caller: a denied request on
 * an HTTP port is answered 403, a denied connection to a TCP port is reset.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { LocalMesh } from '../../lab/mesh.js';
import { call, eventually, metric, startShop } from '../helpers/mesh.js';

const OVERLAY = fileURLToPath(new URL('./manifests-permissive/', import.meta.url));
const WEB = 'http://10.244.2.40:8080/';
const LOCKED = 'http://10.244.2.41:8080/';
const LOCKED_TCP = '10.244.2.42';
const FRONTEND_ID = 'spiffe://cluster.local/ns/shop/sa/frontend';

/** One TCP connect with a deadline: what a client without the mesh would see. */
const PROBE = (ip: string, port: number, ms: number) =>
  `const s=require('node:net').connect(${port},'${ip}');const t=setTimeout(()=>{console.log('timeout');process.exit(0)},${ms});s.on('connect',()=>{console.log('connected');clearTimeout(t);s.destroy();process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)})`;

/**
 * A raw TCP exchange: connect, write payload, read until the peer closes. Says
 * whether the handshake completed, what came back, and how it ended.
 */
const RAW = (host: string, port: number, payload: string) =>
  `const s=require('node:net').connect(${port},${JSON.stringify(host)});const o={connected:false,data:''};s.on('connect',()=>{o.connected=true;s.write(${JSON.stringify(payload)})});s.on('data',c=>o.data+=c);s.on('error',e=>o.error=e.code);s.on('close',()=>{process.stdout.write(JSON.stringify(o));process.exit(0)});setTimeout(()=>{o.error='timeout';s.destroy()},5000).unref()`;

type RawResult = { connected: boolean; data: string; error?: string };

type Status = {
  bpf: Record<string, number>;
  plaintextInbound: string[];
  pods: { pod: string; mtls: string }[];
};

describe('permissive mode: plaintext into the mesh goes through the agent (2 nodes, real BPF)', () => {
  let mesh: LocalMesh;
  const status = async (node: string) =>
    JSON.parse((await mesh.agentGet(node, '/stats/config')).body) as Status;

  before(async () => {
    mesh = await startShop([OVERLAY]);
  });
  after(async () => {
    await mesh?.stop();
  });

  it('delivers plaintext from an unmeshed pod on another node, through the agent, without an identity', async () => {
    const s = await eventually(
      'node2 takes both permissive pods',
      () => status('node2'),
      (st) => st.plaintextInbound.length === 3,
    );
    assert.deepEqual([...s.plaintextInbound].sort(), ['open/locked-1', 'open/locked-tcp-1', 'open/web-1']);
    assert.equal(s.pods.find((p) => p.pod === 'open/web-1')?.mtls, 'permissive');
    const res = await call(mesh, 'legacy/client', WEB);
    assert.equal(res.status, 200, res.error ?? res.body);
    const body = JSON.parse(res.body) as { service: string; caller: string | null };
    assert.equal(body.service, 'web');
    // Plaintext carries no identity, and none can be forged with a header.
    assert.equal(body.caller, null);
    const spoofed = await call(mesh, 'legacy/client', WEB, {
      headers: { 'x-forwarded-client-cert': `By=x;URI=${FRONTEND_ID}` },
    });
    assert.equal((JSON.parse(spoofed.body) as { caller: string | null }).caller, null);
    const after = await status('node2');
    assert.ok((after.bpf.inboundCaptured ?? 0) >= 2, `captured: ${JSON.stringify(after.bpf)}`);
  });

  it('applies AuthorizationPolicy to plaintext: denied (403) and counted, while the mesh caller passes', async () => {
    const denialsBefore = metric(
      (await mesh.agentGet('node2', '/metrics')).body,
      'sockmesh_authz_denials_total',
    );
    const res = await call(mesh, 'legacy/client', LOCKED);
    assert.equal(res.status, 403, res.error ?? res.body);
    assert.match(res.body, /RBAC: access denied/);
    const denialsAfter = metric(
      (await mesh.agentGet('node2', '/metrics')).body,
      'sockmesh_authz_denials_total',
    );
    assert.ok(denialsAfter > denialsBefore, 'the denial is counted');
    // The frontend goes through the mesh (mTLS tunnel) and is allowed by name.
    const meshed = await call(mesh, 'shop/frontend-1', 'http://locked.open.svc.cluster.local:8080/');
    assert.equal(meshed.status, 200, meshed.error ?? meshed.body);
    assert.equal((JSON.parse(meshed.body) as { caller: string }).caller, FRONTEND_ID);
  });

  it('applies AuthorizationPolicy to plaintext TCP: reset and counted, while the mesh caller passes', async () => {
    const get = 'GET / HTTP/1.0\r\n\r\n';
    const raw = async (from: string, host: string) =>
      JSON.parse(
        (await mesh.exec(from, [process.execPath, '-e', RAW(host, 8080, get)], 20_000)).stdout,
      ) as RawResult;
    const denials = async () =>
      metric((await mesh.agentGet('node2', '/metrics')).body, 'sockmesh_authz_denials_total', {
        source_principal: '-',
        destination_workload: 'locked-tcp-1',
      });
    const denialsBefore = await denials();
    // The agent's listener takes the handshake (sk_lookup), denies on accept and resets: the request it was
    // sent is never answered, and the pod never sees the connection. A reset, not a refusal (ECONNREFUSED),
    // is what says the handshake completed; whether node reported 'connect' before the RST came is a race.
    const denied = await raw('legacy/client', LOCKED_TCP);
    assert.deepEqual({ data: denied.data, error: denied.error }, { data: '', error: 'ECONNRESET' });
    assert.equal(await denials(), denialsBefore + 1, 'one denial counted for the one connection');
    // The frontend goes through the mesh (mTLS tunnel, as TCP) and is allowed by name.
    const meshed = await raw('shop/frontend-1', 'locked-tcp.open.svc.cluster.local');
    assert.equal(meshed.error, undefined, JSON.stringify(meshed));
    assert.match(meshed.data, /^HTTP\/1\.1 200 /, JSON.stringify(meshed));
    const body = JSON.parse(meshed.data.slice(meshed.data.indexOf('\r\n\r\n') + 4)) as {
      pod: string;
      caller: string | null;
    };
    assert.equal(body.pod, 'locked-tcp-1');
    // Carried as bytes: the mesh did not parse it as HTTP, so it injected no identity header.
    assert.equal(body.caller, null);
    assert.equal(await denials(), denialsBefore + 1, 'the allowed caller added no denial');
  });

  it('switches the namespace to strict and back, live', async () => {
    const cluster = join(mesh.paths.manifests, '60-permissive.yaml');
    const text = readFileSync(cluster, 'utf8');
    const probe = async () =>
      (
        await mesh.exec('legacy/client', [process.execPath, '-e', PROBE('10.244.2.40', 8080, 1500)])
      ).stdout.trim();
    mesh.writeManifest(
      '60-permissive.yaml',
      text.replace('sockmesh.io/mtls: permissive', 'sockmesh.io/mtls: strict'),
    );
    try {
      // Strict: the kernel drops plaintext that did not come through the proxy.
      await eventually('web-1 strict', probe, (r) => r === 'timeout', 15_000);
      assert.deepEqual((await status('node2')).plaintextInbound, []);
    } finally {
      mesh.writeManifest('60-permissive.yaml', text);
    }
    await eventually('web-1 permissive again', probe, (r) => r === 'connected', 15_000);
    const res = await call(mesh, 'legacy/client', WEB);
    assert.equal(res.status, 200, res.error ?? res.body);
  });
});
