/**
 * The node agent's SVID supply on SPIRE's Delegated Identity API, against a real SPIRE server and
 * agent (built from the Go module proxy, scripts/spire/build.sh). This test process plays the node
 * agent: SPIRE registers it once (`unix:uid:<uid>` as spiffe://<td>/sockmesh/agent, listed in the
 * SPIRE agent's authorized_delegates); the workloads are registered by their own selectors
 * (k8s:ns, k8s:sa) only, never for this process.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { WorkloadApiClient } from '../../../certs/index.js';
import { nullLogger } from '../../../lib/log.js';
import { DelegatedIdentitySupply, NodeIdentities } from '../../../mesh-agent/agent/identities.js';
import { eventually } from '../../helpers/mesh.js';
import { Spire } from '../../helpers/spire.js';

const TD = 'delegated.test';
const DELEGATE = `spiffe://${TD}/sockmesh/agent`;
const FRONTEND = `spiffe://${TD}/ns/shop/sa/frontend`;
const REVIEWS = `spiffe://${TD}/ns/shop/sa/reviews`;
/** No SPIRE entry has its selectors. */
const RATINGS = `spiffe://${TD}/ns/shop/sa/ratings`;
const SVID_TTL_S = 20;

describe("SPIRE's Delegated Identity API as the agent's SVID supply (--spire-admin-socket)", {
  timeout: 300_000,
}, () => {
  let spire: Spire;
  let supply: DelegatedIdentitySupply;
  let identities: NodeIdentities;
  const entries = new Map<string, string>();

  before(async () => {
    spire = await Spire.start({ trustDomain: TD, nodes: ['node1'], authorizedDelegates: [DELEGATE] });
    const parentId = spire.nodeId('node1');
    await spire.createEntry({ parentId, spiffeId: DELEGATE, selectors: [`unix:uid:${process.getuid!()}`] });
    for (const [id, sa] of [
      [FRONTEND, 'frontend'],
      [REVIEWS, 'reviews'],
    ] as const) {
      entries.set(
        id,
        await spire.createEntry({
          parentId,
          spiffeId: id,
          selectors: ['k8s:ns:shop', `k8s:sa:${sa}`],
          x509SvidTtlS: SVID_TTL_S,
        }),
      );
    }
    supply = new DelegatedIdentitySupply(spire.adminSocket('node1'), nullLogger, {
      backoff: { initialMs: 100, maxMs: 1000 },
    });
    identities = new NodeIdentities(supply, nullLogger);
    await identities.reconcile([FRONTEND, REVIEWS, RATINGS]);
  });
  after(async () => {
    identities?.stop();
    await spire?.stop();
  });

  const serial = (id: string) => identities.svidFor(id)?.serial;

  it('gets the SVIDs of two workloads by their selectors, signed by SPIRE, with the bundle', async () => {
    // The SPIRE agent syncs entries every second: they may land after the first (empty) answer.
    await eventually(
      'both workloads have SVIDs',
      async () => [serial(FRONTEND), serial(REVIEWS)],
      (s) => s.every((x) => x !== undefined),
      20_000,
    );
    const spireCa = new X509Certificate(await spire.bundlePem());
    for (const id of [FRONTEND, REVIEWS]) {
      const svid = identities.svidFor(id)!;
      const leaf = new X509Certificate(svid.chain[0]!);
      assert.equal(leaf.subjectAltName, `URI:${id}`);
      assert.ok(leaf.verify(spireCa.publicKey), `${id} is signed by the SPIRE server CA`);
      assert.ok(leaf.checkPrivateKey(svid.privateKey), 'with its own key');
      assert.equal(svid.bundle.certs[0]?.toString('base64'), spireCa.raw.toString('base64'));
    }
    assert.equal(identities.bundle()?.trustDomain, TD);
    const st = identities.status() as { kind: string; connected: boolean };
    assert.equal(st.kind, 'spire-delegated');
    assert.equal(st.connected, true);
  });

  it('needs no entry per workload for the agent: its own Workload API grants it only its delegate ID', async () => {
    const client = new WorkloadApiClient({ address: `unix://${spire.agentSocket('node1')}` });
    try {
      const ctx = await client.fetchX509Context();
      assert.deepEqual(
        ctx.svids.map((s) => s.spiffeId.uri),
        [DELEGATE],
      );
    } finally {
      client.close();
    }
  });

  it('fails closed for a selector set no entry matches, and says which selectors', () => {
    assert.equal(identities.svidFor(RATINGS), undefined);
    const missing = identities.missing();
    assert.deepEqual(
      missing.map((m) => m.spiffeId),
      [RATINGS],
    );
    assert.match(missing[0]!.reason, /no SPIRE entry for selectors k8s:ns:shop,k8s:sa:ratings/);
  });

  it("follows SPIRE's rotation of a short-lived SVID", async () => {
    const before = serial(FRONTEND);
    const rotated: string[] = [];
    identities.onRotate((id) => {
      if (id === FRONTEND) rotated.push(serial(FRONTEND) ?? 'none');
    });
    const after = await eventually(
      'a new frontend SVID',
      async () => serial(FRONTEND),
      (s) => s !== undefined && s !== before,
      SVID_TTL_S * 1000,
    );
    assert.ok(rotated.includes(after!), 'subscribers heard the new SVID');
    assert.ok(!rotated.includes('none'), 'never without an SVID in between');
  });

  it('keeps the last SVIDs while the SPIRE agent is down, and takes new ones after its restart', async () => {
    const held = serial(REVIEWS);
    await spire.killAgent('node1');
    await eventually(
      'the supply noticed the outage',
      async () => identities.status() as { connected: boolean },
      (s) => !s.connected,
    );
    assert.equal(serial(REVIEWS), held, 'the last SVID is still served');
    assert.deepEqual(
      identities.missing().map((m) => m.spiffeId),
      [RATINGS],
    );
    await spire.startAgent('node1');
    await eventually(
      'reconnected, both SVIDs served',
      async () => ({
        st: identities.status() as { connected: boolean },
        f: serial(FRONTEND),
        r: serial(REVIEWS),
      }),
      (v) => v.st.connected && v.f !== undefined && v.r !== undefined,
      30_000,
    );
  });

  it('drops an SVID SPIRE stops issuing (its entry deleted) and reports it', async () => {
    await spire.deleteEntry(entries.get(REVIEWS)!);
    const missing = await eventually(
      'reviews reported missing',
      async () => identities.missing(),
      (m) => m.some((x) => x.spiffeId === REVIEWS),
      20_000,
    );
    assert.equal(identities.svidFor(REVIEWS), undefined);
    assert.match(missing.find((m) => m.spiffeId === REVIEWS)!.reason, /k8s:sa:reviews/);
    assert.notEqual(serial(FRONTEND), undefined, 'the other workload keeps its SVID');
  });
});
