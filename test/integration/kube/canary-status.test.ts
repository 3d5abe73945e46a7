// A CanaryGuard on a real kube-apiserver: the CRD takes it, the control plane reads it through the
// Kubernetes source, an agent's LRS stream (the real LrsClient) reports a failing canary, and the
// decision lands in the object's status (phase, weight, a RolledBack condition) next to the
// Accepted/ResolvedRefs conditions, shown by `kubectl get cguard`.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import type { LrsClient } from '../../../xds/client/lrs-client.js';
import {
  failingCanaryReports,
  type KubeControlPlane,
  kubectl,
  reviewsGuardYaml,
  serviceYaml,
  startKubeControlPlane,
  uniq,
  waitFor,
} from './source-helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CRDS = path.join(ROOT, 'charts/sockmesh/files/crds');
const NS = uniq('shop');

let kube: KubeCluster | undefined;
let main: KubeControlPlane | undefined;
let lrs: LrsClient | undefined;

before(async () => {
  kube = await startKubeCluster({ name: uniq('kc'), gatewayCrds: true });
});
after(async () => {
  lrs?.close();
  await main?.cp.close().catch(() => {});
  await kube?.stop();
});

const k = () => {
  assert.ok(kube, 'cluster started');
  return kube;
};
const service = (name: string, ip: string) => serviceYaml(NS, name, ip);

test('a rolled-back CanaryGuard shows RolledBack, weight 0 and the reason in its status and kubectl get', async () => {
  await kubectl(k(), ['apply', '-f', CRDS]);
  await kubectl(k(), [
    'wait',
    '--for',
    'condition=established',
    '--timeout=60s',
    'crd/canaryguards.sockmesh.io',
  ]);
  // The schema is structural and enforced: a field the model does not know is refused by the API server.
  const bad = await k().kubectl(['apply', '-f', '-'], {
    input: `apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: bad, namespace: default }
spec:
  targetRef: { name: r }
  canaryRef: { name: a }
  baselineRef: { name: b }
  bounds: { minSuccessRate: 120 }
`,
  });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /minSuccessRate/);

  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: v1
kind: Namespace
metadata: { name: ${NS}, labels: { sockmesh.io/mesh: enabled } }
${service('reviews', '10.96.10.1')}${service('reviews-v1', '10.96.10.2')}${service('reviews-v2', '10.96.10.3')}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs:
        - { name: reviews-v1, port: 9080, weight: 90 }
        - { name: reviews-v2, port: 9080, weight: 10 }
${reviewsGuardYaml(NS)}`,
  );
  main = await startKubeControlPlane(k());
  const { cp } = main;
  await waitFor('the guard in force', () => cp.canary.status().find((g) => g.name === `${NS}/reviews`));

  // One agent whose callers see the canary fail 4 times in 5.
  const cluster = (svc: string) => `outbound|9080||${svc}.${NS}.svc.cluster.local`;
  lrs = failingCanaryReports(cp.addresses()[0]!, 'node1', cluster('reviews-v1'), cluster('reviews-v2'));

  const status = await waitFor(
    'the rollback in the object status',
    async () => {
      const o = JSON.parse(await kubectl(k(), ['get', 'cguard', 'reviews', '-n', NS, '-o', 'json'])) as {
        status?: {
          phase?: string;
          weight?: number;
          conditions?: Array<{ type: string; status: string; reason: string; message: string }>;
        };
      };
      return o.status?.phase === 'RolledBack' ? o.status : undefined;
    },
    30_000,
    200,
  );
  assert.equal(status.weight, 0);
  const byType = Object.fromEntries((status.conditions ?? []).map((c) => [c.type, c]));
  assert.equal(byType.RolledBack?.status, 'True');
  assert.equal(byType.RolledBack?.reason, 'SuccessRateBelowBound');
  assert.match(byType.RolledBack?.message ?? '', /canary success rate 20 % < 99 %: weight 10 -> 0/);
  // The two writers' conditions live side by side (server-side apply, one field manager each).
  await waitFor('Accepted next to RolledBack', async () => {
    const o = JSON.parse(await kubectl(k(), ['get', 'cguard', 'reviews', '-n', NS, '-o', 'json'])) as {
      status?: { conditions?: Array<{ type: string; status: string }> };
    };
    const types = (o.status?.conditions ?? []).map((c) => `${c.type}=${c.status}`).sort();
    return types.join(',') === 'Accepted=True,ResolvedRefs=True,RolledBack=True' || undefined;
  });
  const table = await kubectl(k(), ['get', 'cguard', '-n', NS]);
  assert.match(
    table.split('\n')[0] ?? '',
    /NAME\s+ROUTE\s+CANARY\s+ACCEPTED\s+PHASE\s+WEIGHT\s+REASON\s+AGE/,
  );
  assert.match(table, /reviews\s+reviews\s+reviews-v2\s+True\s+RolledBack\s+0\s+SuccessRateBelowBound/);
  process.stdout.write(`${table.replace(/^/gm, '# ')}\n`);
});
