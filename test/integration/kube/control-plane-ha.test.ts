// Control plane replicas on a real kube-apiserver (`sockmesh control-plane --leader-lease` processes):
// the holder of a coordination.k8s.io/v1 Lease writes every status and decides the canaries, the
// other serves xDS with the weights the leader recorded; killed (SIGKILL, no release) the leader is
// replaced once its lease runs out; stopped (SIGTERM) it releases the Lease and its successor takes
// it without waiting out the lease.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  applySockmeshCrds,
  type ControlPlaneProcess,
  failingCanaryReports,
  guardShopPerFile,
  kubectl,
  reviewsGuardYaml,
  serviceYaml,
  spawnControlPlane,
  waitFor,
  watchWeights,
} from './source-helpers.js';

const LEASE = 'sockmesh-control-plane';
const LEASE_SECONDS = 4;
const shop = guardShopPerFile();
const { ns: NS, cluster, route: ROUTE, processes, clients } = shop;
const k = shop.kube;
const service = (name: string, ip: string) => serviceYaml(NS, name, ip);
/** The guarded route (parent reviews), or another one on the Service `other` (status traffic only). */
const route = (name: string) => `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name}, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: ${name === 'reviews' ? 'reviews' : 'other'}, port: 9080 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /${name} } }]
      backendRefs:
        - { name: reviews-v1, port: 9080, weight: 90 }
        - { name: reviews-v2, port: 9080, weight: 10 }
`;

async function replica(id: string): Promise<ControlPlaneProcess> {
  const p = await spawnControlPlane(k().kubeconfig, [
    '--leader-lease',
    `${NS}/${LEASE}`,
    '--leader-lease-duration',
    `${LEASE_SECONDS}s`,
    '--leader-id',
    id,
  ]);
  processes.push(p);
  return p;
}

/** The replica's own counters from its admin /metrics. */
async function counters(
  p: ControlPlaneProcess,
): Promise<{ leader: number; writes: number; decisions: number }> {
  const text = await (await fetch(`http://${p.admin}/metrics`)).text();
  const sum = (re: RegExp) => [...text.matchAll(re)].reduce((s, m) => s + Number(m[1]), 0);
  return {
    leader: Number(/^sockmesh_controlplane_leader (\d+)$/m.exec(text)?.[1] ?? Number.NaN),
    writes: sum(/^sockmesh_controlplane_status_writes_total\{[^}]*\} (\d+)$/gm),
    decisions: sum(/^sockmesh_canary_decisions_total\{[^}]*\} (\d+)$/gm),
  };
}

interface Lease {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  leaseTransitions?: number;
  acquireTime?: string;
  renewTime?: string;
}
async function lease(): Promise<Lease> {
  const o = JSON.parse(await kubectl(k(), ['get', 'lease', LEASE, '-n', NS, '-o', 'json'])) as {
    spec: Lease;
  };
  return o.spec;
}

async function accepted(name: string): Promise<boolean> {
  const o = JSON.parse(await kubectl(k(), ['get', 'httproute', name, '-n', NS, '-o', 'json'])) as {
    status?: { parents?: Array<{ conditions?: Array<{ type: string; status: string }> }> };
  };
  return (o.status?.parents?.[0]?.conditions ?? []).some((c) => c.type === 'Accepted' && c.status === 'True');
}

/** An agent on one replica: the canary weight of every push it got. */
const agent = (p: ControlPlaneProcess, node: string) =>
  watchWeights(p, node, ROUTE, cluster('reviews-v2'), clients);

test('one leader writes status and decides; the follower serves its decision; SIGKILL and SIGTERM hand over', async (t) => {
  await applySockmeshCrds(k());
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: v1
kind: Namespace
metadata: { name: ${NS}, labels: { sockmesh.io/mesh: enabled } }
${service('reviews', '10.96.30.1')}${service('reviews-v1', '10.96.30.2')}${service('reviews-v2', '10.96.30.3')}${service('other', '10.96.30.4')}${route('reviews')}${reviewsGuardYaml(NS)}`,
  );

  const a = await replica('cp-a');
  assert.equal((await counters(a)).leader, 1, 'a lone replica leads from its start');
  const b = await replica('cp-b');
  assert.equal((await counters(b)).leader, 0);
  const first = await lease();
  assert.equal(first.holderIdentity, 'cp-a');
  assert.equal(first.leaseDurationSeconds, LEASE_SECONDS);
  assert.equal(first.leaseTransitions, 0);

  // Status: the leader writes it, the follower (same objects, same verdicts) does not.
  await waitFor('the route accepted', () => accepted('reviews'), 20_000, 100);
  await kubectl(k(), ['apply', '-f', '-'], route('second'));
  await waitFor('a new route accepted', () => accepted('second'), 20_000, 100);
  assert.ok((await counters(a)).writes > 0);
  assert.equal((await counters(b)).writes, 0, 'the follower wrote status');

  // The canary fails on the leader's agent: the leader decides, the follower pushes its decision.
  const onA = agent(a, 'node1');
  const onB = agent(b, 'node2');
  await waitFor('both push the written 10 %', () => (onA.at(-1) === 10 && onB.at(-1) === 10) || undefined);
  const lrs = failingCanaryReports(a.xds, 'node1', cluster('reviews-v1'), cluster('reviews-v2'));
  clients.push(lrs);
  await waitFor('the follower pushes the rollback', () => onB.at(-1) === 0 || undefined, 30_000, 50);
  assert.equal(onA.at(-1), 0);
  assert.equal((await counters(b)).decisions, 0, 'the follower decided');
  assert.equal((await counters(b)).writes, 0, 'the follower wrote status');
  lrs.close();

  // SIGKILL: no release; the follower takes over once the lease ran out, then writes and decides.
  const beforeKill = await lease();
  let at = Date.now();
  await a.stop('SIGKILL');
  await waitFor('cp-b leading', async () => (await counters(b)).leader === 1 || undefined, 30_000, 100);
  t.diagnostic(`SIGKILL -> cp-b leading after ${Date.now() - at} ms (lease ${LEASE_SECONDS} s)`);
  const afterKill = await lease();
  assert.equal(afterKill.holderIdentity, 'cp-b');
  assert.equal(afterKill.leaseTransitions, 1);
  assert.ok(
    Date.parse(afterKill.acquireTime!) >= Date.parse(beforeKill.renewTime!) + LEASE_SECONDS * 1000 - 1,
  );
  await kubectl(k(), ['apply', '-f', '-'], route('third'));
  await waitFor('the new leader writes status', () => accepted('third'), 20_000, 100);
  assert.ok((await counters(b)).writes > 0);
  assert.equal(onB.at(-1), 0, 'the rollback holds under the new leader');

  // SIGTERM: the leader releases the Lease; the next replica does not wait out the lease.
  const c = await replica('cp-c');
  assert.equal((await counters(c)).leader, 0);
  const beforeTerm = await lease();
  at = Date.now();
  assert.equal(await b.stop('SIGTERM'), 0);
  await waitFor('cp-c leading', async () => (await counters(c)).leader === 1 || undefined, 30_000, 100);
  t.diagnostic(`SIGTERM -> cp-c leading after ${Date.now() - at} ms (lease ${LEASE_SECONDS} s)`);
  const afterTerm = await lease();
  assert.equal(afterTerm.holderIdentity, 'cp-c');
  assert.equal(afterTerm.leaseTransitions, 2);
  // Without the release cp-c could not take it before the last renewal it saw + the duration.
  assert.ok(
    Date.parse(afterTerm.acquireTime!) < Date.parse(beforeTerm.renewTime!) + LEASE_SECONDS * 1000,
    `acquired ${afterTerm.acquireTime}, last renewal by cp-b ${beforeTerm.renewTime}`,
  );
  assert.equal(await c.stop('SIGTERM'), 0);
});

test("a follower forwards its agents' load reports to the leader, whose guard rolls the canary back", async () => {
  // A new release of the guard (the first test rolled the old one back): it starts again from 10 %.
  await kubectl(k(), [
    'patch',
    'canaryguard',
    'reviews',
    '-n',
    NS,
    '--type=merge',
    '-p',
    // A window of 3 reports: a forwarded report carries 0, 1 or 2 of the agent's, as they fall.
    JSON.stringify({ spec: { window: '3s' } }),
  ]);
  const leader = await replica('cp-d');
  assert.equal((await counters(leader)).leader, 1);
  const follower = await replica('cp-e');
  assert.equal((await counters(follower)).leader, 0);
  // The leader says where it is on the Lease: the address it serves xDS (and LRS) on.
  await waitFor(
    'the leader address on the Lease',
    async () => {
      const o = JSON.parse(await kubectl(k(), ['get', 'lease', LEASE, '-n', NS, '-o', 'json'])) as {
        metadata: { annotations?: Record<string, string> };
      };
      return o.metadata.annotations?.['sockmesh.io/leader-address'] === leader.xds || undefined;
    },
    20_000,
    100,
  );
  const onLeader = agent(leader, 'node1');
  const onFollower = agent(follower, 'node2');
  await waitFor(
    'both push the written 10 %',
    () => (onLeader.at(-1) === 10 && onFollower.at(-1) === 10) || undefined,
  );
  // The only agent whose callers see the canary fail reports to the follower.
  const lrs = failingCanaryReports(follower.xds, 'node2', cluster('reviews-v1'), cluster('reviews-v2'));
  clients.push(lrs);
  await waitFor('the leader rolls back', () => onLeader.at(-1) === 0 || undefined, 30_000, 50);
  await waitFor('the follower pushes it', () => onFollower.at(-1) === 0 || undefined, 20_000, 50);
  const decided = JSON.parse(await kubectl(k(), ['get', 'cguard', 'reviews', '-n', NS, '-o', 'json'])) as {
    status: { phase: string; lastTransition?: { reason: string } };
  };
  assert.equal(decided.status.phase, 'RolledBack');
  assert.equal(decided.status.lastTransition?.reason, 'SuccessRateBelowBound');
  assert.equal((await counters(follower)).decisions, 0, 'the follower decided');
  lrs.close();
  assert.equal(await follower.stop('SIGTERM'), 0);
  assert.equal(await leader.stop('SIGTERM'), 0);
});
