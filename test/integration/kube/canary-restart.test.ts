// A canary guard's state survives a control plane restart (a real kube-apiserver, control planes
// as `sockmesh control-plane` processes): the guard rolls a failing canary back, the process is
// killed by its pid (SIGKILL: nothing written on the way out), and the next one resumes the guard
// from the CanaryGuard status, so the agents' very first push already has the canary at 0. A new
// release (the route's written weights change) starts the guard again, exactly as in memory.
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

const shop = guardShopPerFile();
const { ns: NS, cluster, route: ROUTE, processes, clients } = shop;
const k = shop.kube;
const service = (name: string, ip: string) => serviceYaml(NS, name, ip);
const route = (v1: number, v2: number) => `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs:
        - { name: reviews-v1, port: 9080, weight: ${v1} }
        - { name: reviews-v2, port: 9080, weight: ${v2} }
`;

interface GuardJson {
  name: string;
  phase: string;
  weight: number;
  lastTransition?: { from: number; to: number; reason: string };
}

async function guardOf(cp: ControlPlaneProcess): Promise<GuardJson | undefined> {
  const res = await fetch(`http://${cp.admin}/v1/canary`);
  const body = (await res.json()) as { guards: GuardJson[] };
  return body.guards.find((g) => g.name === `${NS}/reviews`);
}

/** An agent's ADS stream: the canary weight of every RouteConfiguration push for the route. */
const watchPushes = (cp: ControlPlaneProcess) =>
  watchWeights(cp, 'node1', ROUTE, cluster('reviews-v2'), clients);

test('a rolled-back canary stays at 0 across a control plane restart, from the first push on', async () => {
  await applySockmeshCrds(k());
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: v1
kind: Namespace
metadata: { name: ${NS}, labels: { sockmesh.io/mesh: enabled } }
${service('reviews', '10.96.20.1')}${service('reviews-v1', '10.96.20.2')}${service('reviews-v2', '10.96.20.3')}${route(90, 10)}${reviewsGuardYaml(NS)}`,
  );

  const first = await spawnControlPlane(k().kubeconfig);
  processes.push(first);
  const before = watchPushes(first);
  await waitFor('the written weight pushed', () => before.includes(10) || undefined);
  // One agent whose callers see the canary fail 4 times in 5.
  const lrs = failingCanaryReports(first.xds, 'node1', cluster('reviews-v1'), cluster('reviews-v2'));
  clients.push(lrs);
  await waitFor('the rollback pushed', () => before.at(-1) === 0 || undefined, 30_000, 50);
  // The state is in the object: the resumable fields next to phase and weight.
  const status = await waitFor(
    'the rollback recorded in the status',
    async () => {
      const o = JSON.parse(await kubectl(k(), ['get', 'cguard', 'reviews', '-n', NS, '-o', 'json'])) as {
        status?: Record<string, unknown> & { lastTransition?: Record<string, unknown> };
      };
      return o.status?.phase === 'RolledBack' ? o.status : undefined;
    },
    30_000,
    100,
  );
  assert.equal(status.weight, 0);
  assert.equal(status.step, -1);
  assert.match(String(status.fingerprint), /^[0-9a-f]{32}$/);
  assert.deepEqual(
    {
      from: status.lastTransition?.from,
      to: status.lastTransition?.to,
      reason: status.lastTransition?.reason,
    },
    { from: 10, to: 0, reason: 'SuccessRateBelowBound' },
  );
  lrs.close();

  // Killed by its pid: no goodbye, the status is all that is left.
  await first.stop('SIGKILL');
  const second = await spawnControlPlane(k().kubeconfig);
  processes.push(second);
  const after = watchPushes(second);
  await waitFor('the first push of the new control plane', () => after.length > 0 || undefined);
  assert.equal(after[0], 0, `first push after the restart carried canary weight ${after[0]}`);
  const resumed = await guardOf(second);
  assert.equal(resumed?.phase, 'RolledBack');
  assert.equal(resumed?.weight, 0);
  assert.deepEqual(
    { from: resumed?.lastTransition?.from, to: resumed?.lastTransition?.to },
    { from: 10, to: 0 },
  );
  assert.match(second.logs(), /"msg":"canary guard resumed"/);
  assert.doesNotMatch(second.logs(), /"msg":"canary guard started"/);

  // A new release (the route's written weights change) starts the guard again from them.
  await kubectl(k(), ['apply', '-f', '-'], route(80, 20));
  await waitFor('the new release pushed at 20', () => after.at(-1) === 20 || undefined, 20_000, 50);
  assert.deepEqual(
    after.filter((w) => w !== 0 && w !== 20),
    [],
    `pushes: ${after.join(',')}`,
  );
  assert.equal((await guardOf(second))?.phase, 'Progressing');
  assert.equal(await second.stop('SIGTERM'), 0);
});
