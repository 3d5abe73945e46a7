/**
 * The local mesh with its identities from a SPIFFE Workload API: one
 * `sockmesh identity serve` per node (a SPIRE-agent stand-in) registers that
 * node's agent for the SPIFFE IDs of its pods; the agents run with
 * --workload-api and never read the CA key.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, LocalMesh } from '../../lab/mesh.js';
import { cliArgv } from '../../lab/mesh.js';
import { identitySni } from '../../mesh-agent/tunnel/peer.js';
import { call, eventually, startShop } from '../helpers/mesh.js';

const REVIEWS_URL = 'http://reviews.shop.svc.cluster.local:9080/';
const FRONTEND_ID = 'spiffe://cluster.local/ns/shop/sa/frontend';
const REVIEWS_ID = 'spiffe://cluster.local/ns/shop/sa/reviews';

/** Prints `closed, <n> bytes` once the proxy closes the connection (or `timeout`). */
const RAW_GET = `const s=require('node:net').connect(9080,'reviews.shop.svc.cluster.local');let n=0;s.on('data',d=>{n+=d.length});s.on('error',()=>{});s.on('close',()=>{console.log('closed, '+n+' bytes');process.exit(0)});s.write('GET / HTTP/1.1\\r\\nhost: reviews\\r\\nx-canary: true\\r\\n\\r\\n');setTimeout(()=>{console.log('timeout, '+n+' bytes');process.exit(0)},5000)`;

type Status = AgentStatus & {
  identitySupply: { kind: string; connected: boolean; missing: { spiffeId: string; reason: string }[] };
};

describe('local mesh with SVIDs from a Workload API per node (--workload-api)', () => {
  let mesh: LocalMesh;

  before(async () => {
    // Two proxy workers: SVIDs reach the workers from the agent's primary.
    mesh = await startShop([], { workloadApi: true, agentWorkers: 2 });
  });
  after(async () => {
    await mesh?.stop();
  });

  async function status(node: string): Promise<Status> {
    const s = await mesh.agentStatus(node);
    if ('error' in s) throw new Error(s.error);
    return s as Status;
  }

  function serialOf(s: Status, id: string): string | undefined {
    return s.identities.find((i) => i.spiffeId === id)?.serial;
  }

  /** The serial the node2 tunnel presents for reviews, seen from node1's netns on the underlay. */
  async function presentedByNode2(): Promise<string> {
    const script = `const s=require('node:tls').connect({host:'10.10.0.2',port:15008,servername:${JSON.stringify(identitySni(REVIEWS_ID))},rejectUnauthorized:false,ALPNProtocols:['h2']},()=>{process.stdout.write(s.getPeerCertificate().serialNumber.toLowerCase());s.destroy()});s.on('error',e=>{console.error(String(e));process.exit(1)})`;
    const res = await mesh.bed.exec(mesh.bed.node('node1'), [process.execPath, '-e', script], {
      timeoutMs: 10_000,
    });
    assert.equal(res.code, 0, res.stderr);
    return res.stdout.trim();
  }

  /** What node2's Workload API serves to a process of node2's system cgroup (where its agent runs). */
  async function servedOnNode2(): Promise<string> {
    const res = await mesh.bed.exec(
      mesh.bed.node('node2'),
      [...cliArgv(), 'identity', 'inspect', '--socket', `unix://${mesh.workloadApiSocket('node2')}`],
      { timeoutMs: 20_000 },
    );
    assert.equal(res.code, 0, res.stderr);
    const blocks = res.stdout.split('\n\n');
    const reviews = blocks.find((b) => b.includes(REVIEWS_ID));
    assert.ok(reviews, res.stdout);
    return /serial\s+(\S+)/.exec(reviews)![1]!.toLowerCase();
  }

  it("delivers the caller's SPIFFE ID across nodes, with both ends' SVIDs from the Workload API", async () => {
    const res = await call(mesh, 'shop/frontend-1', REVIEWS_URL, { headers: { 'x-canary': 'true' } });
    assert.equal(res.status, 200, res.error ?? res.body);
    const body = JSON.parse(res.body) as { node: string; caller: string };
    assert.equal(body.node, 'node2');
    assert.equal(body.caller, FRONTEND_ID);
    const node2 = await status('node2');
    assert.equal(node2.identitySupply.kind, 'workload-api');
    assert.deepEqual(node2.identitySupply.missing, []);
    const served = await servedOnNode2();
    assert.equal(serialOf(node2, REVIEWS_ID), served);
    assert.equal(await presentedByNode2(), served, 'the tunnel presents the served SVID');
    // What the Workload API issued is recorded for `sockmesh identity ls`.
    const ls = await mesh.bed.exec(mesh.bed.host, [...cliArgv(), 'identity', 'ls', '--ca', mesh.paths.ca], {
      timeoutMs: 20_000,
    });
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(
      ls.stdout.toLowerCase().includes(served),
      `identity ls lists ${served}: ${ls.stdout.slice(0, 500)}`,
    );
  });

  it('follows a rotation on the Workload API side', async () => {
    const before = serialOf(await status('node2'), REVIEWS_ID);
    await mesh.signalWorkloadApi('node2', 'SIGHUP');
    const after = await eventually(
      'node2 agent holds a rotated SVID',
      async () => serialOf(await status('node2'), REVIEWS_ID),
      (s) => s !== undefined && s !== before,
    );
    assert.equal(await presentedByNode2(), after);
    const res = await call(mesh, 'shop/frontend-1', REVIEWS_URL, { headers: { 'x-canary': 'true' } });
    assert.equal(res.status, 200, res.error ?? res.body);
  });

  it('fails closed for a workload whose identity the Workload API stops granting', async () => {
    const table = mesh.workloadApiRegistrations('node1');
    const original = readFileSync(table, 'utf8');
    try {
      writeFileSync(table, original.replace(`"${FRONTEND_ID}",`, ''));
      await mesh.signalWorkloadApi('node1', 'SIGHUP');
      const s = await eventually(
        'node1 reports frontend missing',
        () => status('node1'),
        (st) => st.identitySupply.missing.some((m) => m.spiffeId === FRONTEND_ID),
      );
      assert.equal(serialOf(s, FRONTEND_ID), undefined);
      // A raw HTTP request: the proxy must close the connection without relaying a byte of it.
      const raw = await mesh.exec('shop/frontend-1', [process.execPath, '-e', RAW_GET]);
      assert.equal(raw.stdout.trim(), 'closed, 0 bytes', 'not sent under another identity');
    } finally {
      writeFileSync(table, original);
      await mesh.signalWorkloadApi('node1', 'SIGHUP');
    }
    await eventually(
      'frontend granted again',
      () => call(mesh, 'shop/frontend-1', REVIEWS_URL, { headers: { 'x-canary': 'true' } }),
      (r) => r.status === 200,
    );
  });

  it('keeps serving the last SVIDs while the Workload API is down, and takes new ones after its restart', async () => {
    const held = serialOf(await status('node2'), REVIEWS_ID);
    await mesh.signalWorkloadApi('node2', 'SIGKILL');
    await eventually(
      'node2 agent noticed the outage',
      () => status('node2'),
      (s) => !s.identitySupply.connected,
    );
    const res = await call(mesh, 'shop/frontend-1', REVIEWS_URL, { headers: { 'x-canary': 'true' } });
    assert.equal(res.status, 200, res.error ?? res.body);
    assert.equal(serialOf(await status('node2'), REVIEWS_ID), held);
    await mesh.startWorkloadApi('node2');
    const fresh = await eventually(
      'node2 agent took the restarted server’s SVID',
      async () => serialOf(await status('node2'), REVIEWS_ID),
      (s) => s !== undefined && s !== held,
      15_000,
    );
    assert.equal(await presentedByNode2(), fresh);
  });
});
