/**
 * Permissive mode end to end: a meshed namespace labelled `sockmesh.io/mtls:
 * permissive` still takes plaintext from outside the mesh, but the node agent
 * takes it first (sk_lookup in the pod's netns, port 15006) and applies
 * AuthorizationPolicy to it as an unauthenticated caller. What L4 policy
 * denies is refused in the kernel before the proxy sees it (sk_lookup for
 * plaintext, connect4 for a meshed caller dialing the pod), counted per policy;
 * the kernel's verdict for a pair is on the agent's admin port.
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
    // A caller outside the mesh has no agent to count it: the destination's agent does (reporter=destination).
    const counted = metric((await mesh.agentGet('node2', '/metrics')).body, 'sockmesh_requests_total', {
      reporter: 'destination',
      source_principal: 'unknown',
      destination_workload: 'web-1',
      destination_namespace: 'open',
      response_code: '200',
    });
    assert.ok(counted >= 2, `requests counted by the destination: ${counted}`);
  });

  /** Kernel denials by policy on a node (sockmesh_kernel_policy_connections_total). */
  const kernelDenied = async (node: string, policy: string) =>
    metric((await mesh.agentGet(node, '/metrics')).body, 'sockmesh_kernel_policy_connections_total', {
      policy,
      verdict: 'denied',
    });
  const proxyDenials = async (node: string) =>
    metric((await mesh.agentGet(node, '/metrics')).body, 'sockmesh_authz_denials_total');
  const raw = async (from: string, host: string) =>
    JSON.parse(
      (await mesh.exec(from, [process.execPath, '-e', RAW(host, 8080, 'GET / HTTP/1.0\r\n\r\n')], 20_000))
        .stdout,
    ) as RawResult;

  it('refuses plaintext the policy denies in the kernel (sk_lookup), before the proxy, counted per policy', async () => {
    // The ALLOW policy names the frontend only: an unauthenticated caller matches no rule.
    await eventually(
      'node2 loaded the kernel policy',
      async () => (await status('node2')) as Status & { kernelPolicy: { rules: number } | null },
      (st) => (st.kernelPolicy?.rules ?? 0) > 0,
    );
    const k0 = await kernelDenied('node2', 'default-deny');
    const d0 = await proxyDenials('node2');
    const res = await call(mesh, 'legacy/client', LOCKED);
    assert.deepEqual({ status: res.status, error: res.error }, { status: 0, error: 'ECONNREFUSED' });
    const tcp = await raw('legacy/client', LOCKED_TCP);
    assert.deepEqual(tcp, { connected: false, data: '', error: 'ECONNREFUSED' });
    assert.equal(await kernelDenied('node2', 'default-deny'), k0 + 2, 'both refusals counted in the kernel');
    assert.equal(await proxyDenials('node2'), d0, 'the proxy never saw them');
    // The frontend goes through the mesh (mTLS tunnel) and is allowed by name.
    const meshed = await call(mesh, 'shop/frontend-1', 'http://locked.open.svc.cluster.local:8080/');
    assert.equal(meshed.status, 200, meshed.error ?? meshed.body);
    assert.equal((JSON.parse(meshed.body) as { caller: string }).caller, FRONTEND_ID);
  });

  it('refuses a meshed caller the policy denies at connect() with EPERM on its own node; the verdict is on the admin port', async () => {
    const k0 = await kernelDenied('node2', 'default-deny');
    const d0 = await proxyDenials('node2');
    // ratings-1 (node2) dials the locked pod directly: its connect() fails, no packet leaves it.
    const denied = await raw('shop/ratings-1', LOCKED_TCP);
    assert.deepEqual(denied, { connected: false, data: '', error: 'EPERM' });
    assert.equal(await kernelDenied('node2', 'default-deny'), k0 + 1);
    assert.equal(await proxyDenials('node2'), d0, 'the proxy never saw it');
    const verdict = async (node: string, source: string) =>
      JSON.parse(
        (await mesh.agentGet(node, `/kernel/policy?source=${source}&destination=${LOCKED_TCP}&port=8080`))
          .body,
      ) as { hook: string; source: { spiffeId: string }; kernel: { verdict: string; policy?: string } };
    const v = await verdict('node2', 'shop/ratings-1');
    assert.equal(v.hook, 'connect4');
    assert.equal(v.source.spiffeId, 'spiffe://cluster.local/ns/shop/sa/ratings');
    assert.deepEqual([v.kernel.verdict, v.kernel.policy], ['deny', 'default-deny']);
    // The frontend (node1) is allowed by the policy: its kernel lets it through to the mesh, mTLS all the way.
    const f = await verdict('node1', 'shop/frontend-1');
    assert.deepEqual([f.kernel.verdict, f.kernel.policy], ['allow', 'open/locked-callers']);
    const meshed = await raw('shop/frontend-1', LOCKED_TCP);
    assert.equal(meshed.error, undefined, JSON.stringify(meshed));
    assert.match(meshed.data, /^HTTP\/1\.1 200 /, JSON.stringify(meshed));
    const bad = await mesh.agentGet('node2', '/kernel/policy?source=shop/ratings-1&destination=nope&port=1');
    assert.equal(bad.status, 400);
    assert.match(bad.body, /SOCKMESH_E_USAGE/);
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
