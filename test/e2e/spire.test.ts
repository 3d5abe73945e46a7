/**
 * SPIRE itself as the mesh's identity provider (issue 20): spire-server and one spire-agent per lab
 * node, built from the Go module proxy (scripts/spire/build.sh). Each node's sockmesh agent is
 * registered in SPIRE (unix:uid:0 under that node's join-token alias) for the SPIFFE IDs of the pods
 * scheduled there, with short-lived SVIDs, and runs with --workload-api on its node's SPIRE agent
 * socket; the lab CA is never read.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentStatus, type LocalMesh, loadModel } from '../../lab/mesh.js';
import { identitySni } from '../../mesh-agent/tunnel/peer.js';
import { FIXTURES } from '../helpers/lab.js';
import { call, SHOP, startShop } from '../helpers/mesh.js';
import { Spire } from '../helpers/spire.js';

const TD = 'cluster.local';
const REVIEWS_URL = 'http://reviews.shop.svc.cluster.local:9080/';
const FRONTEND_ID = `spiffe://${TD}/ns/shop/sa/frontend`;
const REVIEWS_ID = `spiffe://${TD}/ns/shop/sa/reviews`;
/** SPIRE rotates at about half life (with jitter): a new SVID every ~10 s per identity. */
const SVID_TTL_S = 20;
const LOAD_MS = 45_000;

type Status = AgentStatus & {
  identitySupply: { kind: string; connected: boolean; missing: { spiffeId: string; reason: string }[] };
};
/** [epochMs, mode, status, version | error, caller] */
type Rec = [number, string, number, string, string | null];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SPIRE (server + an agent per node) serves the mesh through the Workload API', {
  timeout: 600_000,
}, () => {
  let spire: Spire;
  let mesh: LocalMesh;

  before(async () => {
    const model = await loadModel(SHOP, TD);
    const nodes = [...model.nodes.keys()].sort();
    spire = await Spire.start({ trustDomain: TD, nodes });
    try {
      for (const node of nodes) {
        const ids = new Set(
          [...model.workloads.values()]
            .filter((w) => w.node === node)
            .map((w) => `spiffe://${TD}/ns/${w.namespace}/sa/${w.serviceAccount}`),
        );
        for (const id of ids) {
          await spire.createEntry({
            parentId: spire.nodeId(node),
            spiffeId: id,
            selectors: ['unix:uid:0'],
            x509SvidTtlS: SVID_TTL_S,
          });
        }
      }
      mesh = await startShop([], {
        agentWorkers: 1,
        agentIdentityArgs: (node) => ['--workload-api', spire.agentSocket(node)],
      });
    } catch (err) {
      await spire.stop();
      throw err;
    }
  });
  after(async () => {
    await mesh?.stop();
    await spire?.stop();
  });

  async function status(node: string): Promise<Status> {
    const s = await mesh.agentStatus(node);
    if ('error' in s) throw new Error(s.error);
    return s as Status;
  }

  /** The certificate node2's tunnel presents for reviews, seen from node1's netns on the underlay. */
  async function presentedByNode2(): Promise<X509Certificate> {
    const script = `const s=require('node:tls').connect({host:'10.10.0.2',port:15008,servername:${JSON.stringify(identitySni(REVIEWS_ID))},rejectUnauthorized:false,ALPNProtocols:['h2']},()=>{process.stdout.write(s.getPeerCertificate().raw.toString('base64'));s.destroy()});s.on('error',e=>{console.error(String(e));process.exit(1)})`;
    const res = await mesh.bed.exec(mesh.bed.node('node1'), [process.execPath, '-e', script], {
      timeoutMs: 10_000,
    });
    assert.equal(res.code, 0, res.stderr);
    return new X509Certificate(Buffer.from(res.stdout.trim(), 'base64'));
  }

  it('mTLS across nodes with SVIDs SPIRE issued: the destination sees the registered SPIFFE ID', async () => {
    const res = await call(mesh, 'shop/frontend-1', REVIEWS_URL, { headers: { 'x-canary': 'true' } });
    assert.equal(res.status, 200, res.error ?? res.body);
    const body = JSON.parse(res.body) as { node: string; caller: string };
    assert.equal(body.node, 'node2');
    assert.equal(body.caller, FRONTEND_ID);
    for (const node of ['node1', 'node2']) {
      const s = await status(node);
      assert.equal(s.identitySupply.kind, 'workload-api');
      assert.deepEqual(s.identitySupply.missing, [], `${node}: every local identity has an SVID`);
    }
    // SVIDs rotate every few seconds here: the serial is read before and after the handshake,
    // and the presented one must be one of them.
    const reported = async () =>
      (await status('node2')).identities.find((i) => i.spiffeId === REVIEWS_ID)?.serial;
    const before = await reported();
    const leaf = await presentedByNode2();
    const after = await reported();
    assert.equal(leaf.subjectAltName, `URI:${REVIEWS_ID}`);
    const spireCa = new X509Certificate(await spire.bundlePem());
    const labCa = new X509Certificate(readFileSync(join(mesh.paths.ca, 'ca.crt')));
    assert.ok(leaf.verify(spireCa.publicKey), 'signed by the SPIRE server CA');
    assert.ok(!leaf.verify(labCa.publicKey), 'not by the lab CA');
    const lifetimeS = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    assert.ok(lifetimeS <= SVID_TTL_S + 30, `the entry's short TTL (${lifetimeS} s)`);
    assert.ok(
      [before, after].includes(leaf.serialNumber.toLowerCase()),
      `the agent reports the SVID it presents (${leaf.serialNumber.toLowerCase()}; reported ${before} then ${after})`,
    );
  });

  it("follows SPIRE's rotations on both nodes with no failed request on open keep-alive connections", async () => {
    const serials = { node1: new Set<string>(), node2: new Set<string>() };
    let polling = true;
    const watch = (async () => {
      while (polling) {
        for (const [node, id] of [
          ['node1', FRONTEND_ID],
          ['node2', REVIEWS_ID],
        ] as const) {
          try {
            const serial = (await status(node)).identities.find((i) => i.spiffeId === id)?.serial;
            if (serial) serials[node].add(serial);
          } catch {
            // an agent busy for a moment: the next poll counts
          }
        }
        await sleep(500);
      }
    })();
    let records: Rec[];
    try {
      const res = await mesh.exec(
        'shop/frontend-1',
        [
          process.execPath,
          join(FIXTURES, 'timeline.mjs'),
          REVIEWS_URL,
          String(LOAD_MS),
          '2',
          'keepalive,fresh',
          '9091',
          JSON.stringify({ 'x-canary': 'true' }),
        ],
        LOAD_MS + 60_000,
      );
      assert.equal(res.code, 0, res.stderr);
      records = (JSON.parse(res.stdout) as { records: Rec[] }).records;
    } finally {
      polling = false;
      await watch;
    }
    const failed = records.filter((r) => r[2] !== 200);
    assert.deepEqual(failed.slice(0, 10), [], `${failed.length} of ${records.length} requests failed`);
    assert.ok(
      records.filter((r) => r[1] === 'keepalive').length > 100,
      'keep-alive connections carried load',
    );
    assert.ok(
      records.every((r) => r[3] === 'v2' && r[4] === FRONTEND_ID),
      'every answer came from node2 with the caller identity',
    );
    // ~45 s of 20 s SVIDs rotated at about half life: 4 or 5 serials; 3 means two rotations under load.
    assert.ok(serials.node1.size >= 3, `frontend's SVID rotated on node1: ${[...serials.node1]}`);
    assert.ok(serials.node2.size >= 3, `reviews' SVID rotated on node2: ${[...serials.node2]}`);
  });
});

describe("SPIRE's Delegated Identity API serves the mesh (--spire-admin-socket)", {
  timeout: 300_000,
}, () => {
  const DELEGATE = `spiffe://${TD}/sockmesh/agent`;
  let spire: Spire;
  let mesh: LocalMesh;

  before(async () => {
    const model = await loadModel(SHOP, TD);
    const nodes = [...model.nodes.keys()].sort();
    spire = await Spire.start({ trustDomain: TD, nodes, authorizedDelegates: [DELEGATE] });
    try {
      for (const node of nodes) {
        // The sockmesh agent once per node; the pods by their own selectors, never for the agent.
        await spire.createEntry({
          parentId: spire.nodeId(node),
          spiffeId: DELEGATE,
          selectors: ['unix:uid:0'],
        });
        const accounts = new Set(
          [...model.workloads.values()]
            .filter((w) => w.node === node)
            .map((w) => `${w.namespace}/${w.serviceAccount}`),
        );
        for (const account of accounts) {
          const [ns, sa] = account.split('/') as [string, string];
          await spire.createEntry({
            parentId: spire.nodeId(node),
            spiffeId: `spiffe://${TD}/ns/${ns}/sa/${sa}`,
            selectors: [`k8s:ns:${ns}`, `k8s:sa:${sa}`],
          });
        }
      }
      mesh = await startShop([], {
        agentWorkers: 1,
        agentIdentityArgs: (node) => ['--spire-admin-socket', spire.adminSocket(node)],
      });
    } catch (err) {
      await spire.stop();
      throw err;
    }
  });
  after(async () => {
    await mesh?.stop();
    await spire?.stop();
  });

  it('mTLS across nodes with delegated SVIDs: the destination sees the pod identity', async () => {
    const res = await call(mesh, 'shop/frontend-1', REVIEWS_URL, { headers: { 'x-canary': 'true' } });
    assert.equal(res.status, 200, res.error ?? res.body);
    const body = JSON.parse(res.body) as { node: string; caller: string };
    assert.equal(body.node, 'node2');
    assert.equal(body.caller, FRONTEND_ID);
    for (const node of ['node1', 'node2']) {
      const s = (await mesh.agentStatus(node)) as Status;
      assert.equal(s.identitySupply.kind, 'spire-delegated');
      assert.deepEqual(s.identitySupply.missing, [], `${node}: every local identity has an SVID`);
      assert.ok(s.identities.length > 0);
    }
  });
});
