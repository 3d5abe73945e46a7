// A canary guard's state survives a control plane restart (a real kube-apiserver, control planes
// as `sockmesh control-plane` processes): the guard rolls a failing canary back, the process is
// killed by its pid (SIGKILL: nothing written on the way out), and the next one resumes the guard
// from the CanaryGuard status, so the agents' very first push already has the canary at 0. A new
// release (the route's written weights change) starts the guard again, exactly as in memory.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import { nullLogger } from '../../../lib/log.js';
import { AdsClient } from '../../../xds/client/ads-client.js';
import { LrsClient } from '../../../xds/client/lrs-client.js';
import type { ProtoObject } from '../../../xds/protos.js';
import { type ControlPlaneProcess, kubectl, spawnControlPlane, uniq, waitFor } from './source-helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CRDS = path.join(ROOT, 'charts/sockmesh/files/crds');
const NS = uniq('shop');
const fqdn = (svc: string) => `${svc}.${NS}.svc.cluster.local`;
const cluster = (svc: string) => `outbound|9080||${fqdn(svc)}`;
const ROUTE = `${fqdn('reviews')}:9080`;

let kube: KubeCluster | undefined;
const processes: ControlPlaneProcess[] = [];
const clients: Array<{ close(): void }> = [];

before(async () => {
  kube = await startKubeCluster({ name: uniq('kc'), gatewayCrds: true });
});
after(async () => {
  for (const c of clients) c.close();
  for (const p of processes) await p.stop('SIGKILL');
  await kube?.stop();
});

const k = () => {
  assert.ok(kube, 'cluster started');
  return kube;
};
const service = (name: string, ip: string) => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${NS} }
spec:
  clusterIP: ${ip}
  selector: { app: ${name} }
  ports: [{ name: http, port: 9080, targetPort: 9080, appProtocol: http }]
`;
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

/** The canary's weight in a RouteConfiguration as an agent decoded it. */
function canaryWeight(rc: ProtoObject | undefined): number | undefined {
  const vhs = (rc?.virtual_hosts as ProtoObject[] | undefined) ?? [];
  for (const vh of vhs)
    for (const r of (vh.routes as ProtoObject[] | undefined) ?? []) {
      const wc = (r.route as ProtoObject | undefined)?.weighted_clusters as ProtoObject | undefined;
      const c = ((wc?.clusters as ProtoObject[] | undefined) ?? []).find(
        (x) => x.name === cluster('reviews-v2'),
      );
      if (c) {
        const w = c.weight as number | { value?: number } | undefined;
        return typeof w === 'number' ? w : (w?.value ?? 0);
      }
    }
  return undefined;
}

/** An agent's ADS stream: every RouteConfiguration push for the route, the canary weight of each. */
function watchPushes(cp: ControlPlaneProcess): number[] {
  const pushes: number[] = [];
  const ads = new AdsClient({ target: cp.xds, node: { id: 'node1' }, logger: nullLogger });
  ads.on('update', (config, changed) => {
    if (!changed.endsWith('RouteConfiguration')) return;
    const w = canaryWeight(config.routes.get(ROUTE));
    if (w !== undefined) pushes.push(w);
  });
  ads.start();
  clients.push(ads);
  return pushes;
}

test('a rolled-back canary stays at 0 across a control plane restart, from the first push on', async () => {
  await kubectl(k(), ['apply', '-f', CRDS]);
  await kubectl(k(), ['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: v1
kind: Namespace
metadata: { name: ${NS}, labels: { sockmesh.io/mesh: enabled } }
${service('reviews', '10.96.20.1')}${service('reviews-v1', '10.96.20.2')}${service('reviews-v2', '10.96.20.3')}${route(90, 10)}---
apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: reviews, namespace: ${NS} }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: reviews }
  canaryRef: { name: reviews-v2 }
  baselineRef: { name: reviews-v1 }
  bounds: { minSuccessRate: 99 }
  interval: 1s
  minRequests: 10
`,
  );

  const first = await spawnControlPlane(k().kubeconfig);
  processes.push(first);
  const before = watchPushes(first);
  await waitFor('the written weight pushed', () => before.includes(10) || undefined);
  // One agent whose callers see the canary fail 4 times in 5.
  let n = 0;
  const lrs = new LrsClient({
    target: first.xds,
    node: { id: 'node1', locality: { zone: 'node1' } },
    logger: nullLogger,
    collect: async () => {
      n += 1;
      return [
        { cluster: cluster('reviews-v1'), successes: 90 * n, errors: 0, fast: new Map([[25, 90 * n]]) },
        { cluster: cluster('reviews-v2'), successes: 2 * n, errors: 8 * n, fast: new Map([[25, 10 * n]]) },
      ];
    },
  });
  lrs.start();
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
