// Canary guards over a real control plane: agents' LRS streams (the real LrsClient over a unix
// socket and the real gRPC server) ask for the guarded clusters, report deltas of cumulative
// counters, and the control plane rolls the canary back in the snapshot it serves over ADS,
// keeps the rollback across a reload of the same manifests, and starts again when the guard changes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { nullLogger } from '../../../lib/log.js';
import { type ClusterLoad, LrsClient } from '../../../xds/client/lrs-client.js';
import { decodeResource } from '../../../xds/codec.js';
import { ROUTE_TYPE } from '../../../xds/protos.js';
import { eventually } from '../../helpers/mesh.js';
import { startControlPlane } from './helpers.js';

const SHOP = fileURLToPath(new URL('../../../examples/shop/', import.meta.url));
const files: Record<string, string> = Object.fromEntries(
  ['00-cluster.yaml', '10-services.yaml', '20-pods.yaml', '30-routes.yaml'].map((f) => [
    f,
    readFileSync(path.join(SHOP, f), 'utf8'),
  ]),
);
const GUARD = `apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: reviews, namespace: shop }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: reviews }
  canaryRef: { name: reviews-v2 }
  baselineRef: { name: reviews-v1 }
  bounds: { minSuccessRate: 95 }
  interval: 1s
  window: 2s
  minRequests: 10
`;
const V1 = 'outbound|9080||reviews-v1.shop.svc.cluster.local';
const V2 = 'outbound|9080||reviews-v2.shop.svc.cluster.local';

/** An agent's cumulative counters, advanced by the test. */
class Counters {
  private readonly c = new Map<string, { successes: number; errors: number }>();
  add(cluster: string, ok: number, bad: number): void {
    const v = this.c.get(cluster) ?? { successes: 0, errors: 0 };
    this.c.set(cluster, { successes: v.successes + ok, errors: v.errors + bad });
  }
  collect = async (): Promise<ClusterLoad[]> =>
    [...this.c].map(([cluster, v]) => ({
      cluster,
      ...v,
      fast: new Map([[25, v.successes + v.errors]]),
    }));
}

function servedSplit(fx: Awaited<ReturnType<typeof startControlPlane>>): string {
  const snap = fx.cp.snapshot!;
  for (const r of snap.wildcard(ROUTE_TYPE, 'node1').values()) {
    const rc = decodeResource(ROUTE_TYPE, r.bytes) as {
      name: string;
      virtual_hosts: Array<{
        routes: Array<{
          route?: { weighted_clusters?: { clusters: Array<{ name: string; weight: { value: number } }> } };
        }>;
      }>;
    };
    for (const route of rc.virtual_hosts[0]!.routes) {
      const w = route.route?.weighted_clusters?.clusters;
      if (w?.some((c) => c.name === V2))
        return w.map((c) => `${c.name.split('|')[3]!.split('.')[0]}=${c.weight.value}`).join(',');
    }
  }
  return '';
}

test('LRS reports drive a rollback in the served routes; it holds across reloads; a changed guard starts again', async (t) => {
  const fx = await startControlPlane(t, { ...files, '80-guard.yaml': GUARD });
  assert.equal(servedSplit(fx), 'reviews-v1=90,reviews-v2=10');
  const agents = [new Counters(), new Counters()];
  const clients = agents.map(
    (a, i) =>
      new LrsClient({
        target: fx.unix,
        node: { id: `node${i + 1}`, locality: { zone: `node${i + 1}` } },
        collect: a.collect,
        logger: nullLogger,
      }),
  );
  for (const c of clients) {
    c.start();
    t.after(() => c.close());
  }
  // Healthy traffic from both agents: the guard measures the sum and holds.
  const feed = setInterval(() => {
    for (const a of agents) {
      a.add(V1, 45, 0);
      a.add(V2, 5, 0);
    }
  }, 100);
  t.after(() => clearInterval(feed));
  const held = await eventually(
    'a healthy canary measured',
    async () => fx.cp.canary.status()[0]!,
    (g) => g.lastDecision?.action === 'Hold' && g.lastDecision.canary.requests >= 10,
    15_000,
  );
  assert.equal(held.lastDecision!.canary.successRate, 100);
  assert.ok(held.lastDecision!.baseline.requests > held.lastDecision!.canary.requests, 'both agents counted');

  // The canary fails: rolled back, and the served split has it at 0.
  clearInterval(feed);
  const failing = setInterval(() => {
    for (const a of agents) {
      a.add(V1, 45, 0);
      a.add(V2, 1, 4);
    }
  }, 100);
  t.after(() => clearInterval(failing));
  const rolled = await eventually(
    'rolled back',
    async () => fx.cp.canary.status()[0]!,
    (g) => g.phase === 'RolledBack',
    15_000,
  );
  assert.equal(rolled.weight, 0);
  assert.equal(rolled.lastTransition?.reason, 'SuccessRateBelowBound');
  assert.equal(servedSplit(fx), 'reviews-v1=100,reviews-v2=0');
  assert.match(
    fx.cp.canary.metrics(),
    /sockmesh_canary_weight\{guard="shop\/reviews",phase="RolledBack"\} 0/,
  );

  // A reload that changes nothing of the guard or the route keeps the rollback.
  await fx.write('99-other.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata: { name: other }\n');
  await fx.nextReload();
  assert.equal(fx.cp.canary.status()[0]!.phase, 'RolledBack');
  assert.equal(servedSplit(fx), 'reviews-v1=100,reviews-v2=0');

  // A changed guard is a new release: back to the written 10 %.
  await fx.write('80-guard.yaml', GUARD.replace('minSuccessRate: 95', 'minSuccessRate: 90'));
  await fx.nextReload();
  assert.equal(fx.cp.canary.status()[0]!.phase, 'Progressing');
  assert.equal(servedSplit(fx), 'reviews-v1=90,reviews-v2=10');
});
