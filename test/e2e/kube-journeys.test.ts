// The README's three journeys, driven by kubectl against a real kube-apiserver: the local mesh in
// --kube mode (lab kubelet, the control plane on the KubernetesSource, one agent per node). One lab
// for the whole file; it is always torn down, also when a test fails.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { kubeBinaries } from '../../lab/kube/binaries.js';
import { restartLabApiServer } from '../../lab/kube/mesh.js';
import { LocalMesh } from '../../lab/mesh.js';
import { FIXTURES, leftovers } from '../helpers/lab.js';
import { call, eventually, SHOP } from '../helpers/mesh.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const JOURNEYS = join(REPO, 'examples', 'journeys');
const REVIEWS = 'http://reviews.shop.svc.cluster.local:9080/';
const RATINGS = 'http://ratings.shop.svc.cluster.local:9080/';
const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;

type Answer = [at: number, mode: 'keepalive' | 'fresh', status: number, version: string];

function share(answers: Answer[], from: number, to: number): { n: number; v2: number; modes: Set<string> } {
  const inWindow = answers.filter(([t]) => t >= from && t < to);
  return {
    n: inWindow.length,
    v2: inWindow.filter((a) => a[3] === 'v2').length / Math.max(inWindow.length, 1),
    modes: new Set(inWindow.map((a) => a[1])),
  };
}

interface RouteStatus {
  metadata: { generation: number };
  status?: {
    parents?: {
      conditions: {
        type: string;
        status: string;
        reason: string;
        message: string;
        observedGeneration: number;
      }[];
    }[];
  };
}

const MISSING_BACKEND_ROUTE = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs:
        - { name: reviews-v1, port: 9080, weight: 50 }
        - { name: reviews-v3, port: 9080, weight: 50 }
`;

function processesOf(pids: number[]): number[] {
  return pids.filter(
    (p) => existsSync(`/proc/${p}`) && !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8')),
  );
}

describe('README journeys on Kubernetes, driven by kubectl', {
  skip: notRoot ? 'needs root (netns, cgroups, BPF)' : false,
}, () => {
  let mesh: LocalMesh | undefined;
  let clusterPids: number[] = [];
  let clusterRecord: string | undefined;

  before(async () => {
    kubeBinaries(); // not built: a failure naming the build command, never a skip
    const started = performance.now();
    mesh = await LocalMesh.start({ manifestsDir: SHOP, kube: true });
    clusterPids = [mesh.kube!.pid, ...mesh.kube!.clusterPids];
    clusterRecord = mesh.kube!.clusterRunId;
    process.stderr.write(`# kube lab up in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  });

  after(async () => {
    if (!mesh) return;
    const bed = mesh.bed;
    await mesh.stop();
    assert.deepEqual(leftovers(bed), [], 'nothing of the lab is left');
    assert.deepEqual(
      processesOf(clusterPids),
      [],
      'the API server, kine, controller-manager and daemon are gone',
    );
    if (clusterRecord) {
      assert.equal(
        existsSync(`/run/sockmesh/lab-${clusterRecord}.json`),
        false,
        "the cluster's own record is removed",
      );
    }
  });

  function kubectl(...args: string[]): string {
    const res = mesh!.kubectl(args);
    assert.equal(res.code, 0, `kubectl ${args.join(' ')}: ${res.stderr}`);
    return res.stdout;
  }

  async function servedVersion(): Promise<string> {
    const admin = mesh!.admin();
    try {
      return ((await admin.status()) as { version: string }).version;
    } finally {
      await admin.close();
    }
  }

  /** Back to the shop's 90/10 reviews route, accepted and answering v1 again (whatever a test before left). */
  async function reviews90(): Promise<void> {
    kubectl('apply', '-f', join(SHOP, '30-routes.yaml'));
    await reviewsAccepted('True');
    await eventually(
      'reviews answers v1 again (90/10)',
      () => Promise.all(Array.from({ length: 10 }, () => call(mesh!, 'shop/frontend-1', REVIEWS))),
      (rs) =>
        rs.some((r) => r.status === 200 && (JSON.parse(r.body) as { version: string }).version === 'v1'),
      30_000,
    );
  }

  /** The reviews route's Accepted condition, once it reports the route's current generation. */
  async function reviewsAccepted(want: 'True' | 'False') {
    return eventually(
      `reviews Accepted=${want} for its current generation`,
      async () => {
        const r = JSON.parse(
          kubectl('get', 'httproute', 'reviews', '-n', 'shop', '-o', 'json'),
        ) as RouteStatus;
        const c = r.status?.parents?.[0]?.conditions.find((x) => x.type === 'Accepted');
        return c && c.observedGeneration === r.metadata.generation ? c : undefined;
      },
      (c) => c?.status === want,
      15_000,
    );
  }

  it('serves the shop from the API: pods Running and Ready on the lab nodes, endpoints from EndpointSlices', async () => {
    const pods = JSON.parse(kubectl('get', 'pods', '-A', '-o', 'json')) as {
      items: {
        metadata: { namespace: string; name: string };
        spec: { nodeName: string };
        status: { podIP: string; phase: string };
      }[];
    };
    const got = pods.items.map(
      (p) =>
        `${p.metadata.namespace}/${p.metadata.name} ${p.spec.nodeName} ${p.status.podIP} ${p.status.phase}`,
    );
    assert.deepEqual(got.sort(), [
      'legacy/client node1 10.244.1.20 Running',
      'shop/frontend-1 node1 10.244.1.10 Running',
      'shop/ratings-1 node2 10.244.2.11 Running',
      'shop/reviews-v1-1 node1 10.244.1.11 Running',
      'shop/reviews-v2-1 node2 10.244.2.10 Running',
    ]);
    const res = await call(mesh!, 'shop/frontend-1', RATINGS);
    assert.equal(res.status, 200, res.error ?? res.body);
    assert.equal(
      (JSON.parse(res.body) as { caller: string }).caller,
      'spiffe://cluster.local/ns/shop/sa/frontend',
    );
  });

  it('kubectl label ns legacy sockmesh.io/mesh=enabled puts its pod in the mesh, live', async () => {
    const before = await call(mesh!, 'legacy/client', RATINGS);
    assert.equal(before.status, 0, 'a Service VIP is only reachable through the mesh');
    kubectl('label', 'ns', 'legacy', 'sockmesh.io/mesh=enabled');
    const labelled = Date.now();
    const answer = await eventually(
      'legacy/client answered through the mesh',
      () => call(mesh!, 'legacy/client', RATINGS),
      (r) => r.status === 200,
      10_000,
    );
    process.stderr.write(`# label -> first meshed answer: ${Date.now() - labelled} ms\n`);
    assert.equal(
      (JSON.parse(answer.body) as { caller: string }).caller,
      'spiffe://cluster.local/ns/legacy/sa/default',
    );
    const toReviews = await call(mesh!, 'legacy/client', REVIEWS);
    assert.equal(toReviews.status, 403, 'only the frontend may call reviews');
  });

  it('kubectl apply moves the reviews split 90/10 -> 50/50 -> 0/100 within 2 s under load, losing nothing', async () => {
    const run = mesh!.exec(
      'shop/frontend-1',
      [process.execPath, join(FIXTURES, 'split-timeline.mjs'), REVIEWS, '30000', '3'],
      90_000,
    );
    // Room on a busy machine: node in the pod may take seconds to start the load, and each kubectl
    // apply seconds to return; every window below must still hold answers of both kinds.
    await new Promise((r) => setTimeout(r, 6000));
    // Windows are timed from kubectl returning: on a busy machine kubectl alone takes seconds.
    kubectl('apply', '-f', join(JOURNEYS, 'reviews-50-50.yaml'));
    const t50 = Date.now();
    await new Promise((r) => setTimeout(r, 6000));
    kubectl('apply', '-f', join(JOURNEYS, 'reviews-0-100.yaml'));
    const t100 = Date.now();
    const out = await run;
    assert.equal(out.code, 0, out.stderr);
    const answers = JSON.parse(out.stdout) as Answer[];
    const failed = answers.filter((a) => a[2] !== 200);
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${answers.length} requests failed`);
    const start = answers[0]![0];
    const end = answers.at(-1)![0];

    const s90 = share(answers, start + 500, t50);
    const s50 = share(answers, t50 + 2000, t100);
    const s100 = share(answers, t100 + 2000, end + 1);
    for (const s of [s90, s50, s100]) assert.deepEqual([...s.modes].sort(), ['fresh', 'keepalive']);
    assert.ok(s90.v2 > 0.02 && s90.v2 < 0.25, `90/10: v2 share ${s90.v2} of ${s90.n}`);
    assert.ok(
      s50.v2 > 0.35 && s50.v2 < 0.65,
      `50/50 from 2 s after the apply: v2 share ${s50.v2} of ${s50.n}`,
    );
    assert.equal(s100.v2, 1, `0/100 from 2 s after the apply: v2 share ${s100.v2} of ${s100.n}`);
    const lastV1 = answers.filter((a) => a[3] === 'v1').at(-1)![0];
    process.stderr.write(
      `# ${answers.length} requests, 0 failed; last v1 answer ${lastV1 - t100} ms after kubectl apply of 0/100 returned\n`,
    );
    assert.ok(lastV1 - t100 < 2000);
    kubectl('apply', '-f', join(SHOP, '30-routes.yaml'));
  });

  it('an AuthorizationPolicy object denies the frontend -> ratings with 403, and only that', async () => {
    kubectl('apply', '-f', join(JOURNEYS, 'deny-frontend-to-ratings.yaml'));
    const denied = await eventually(
      'frontend -> ratings denied',
      () => call(mesh!, 'shop/frontend-1', RATINGS),
      (r) => r.status === 403,
      10_000,
    );
    assert.equal(denied.body.trim(), 'RBAC: access denied (shop/ratings-deny-frontend/rule-0)');
    const allowed = await call(mesh!, 'shop/frontend-1', REVIEWS);
    assert.equal(allowed.status, 200, 'the frontend still reaches reviews');
  });

  it('kubectl get httproutes,authorizationpolicies shows the conditions', async () => {
    const table = await eventually(
      'AuthorizationPolicies Accepted',
      async () => kubectl('get', 'httproutes,authorizationpolicies', '-n', 'shop'),
      (t) =>
        /ratings-deny-frontend\s+DENY\s+\S*\s*True\s+Accepted/.test(t) && /reviews-callers.*True/.test(t),
      10_000,
    );
    assert.match(table, /httproute\.gateway\.networking\.k8s\.io\/reviews/);
    const parents = JSON.parse(
      kubectl('get', 'httproute', 'reviews', '-n', 'shop', '-o', 'jsonpath={.status.parents}'),
    ) as {
      parentRef: { name: string };
      controllerName: string;
      conditions: { type: string; status: string }[];
    }[];
    assert.equal(parents[0]?.parentRef.name, 'reviews');
    const conds = Object.fromEntries(parents[0]!.conditions.map((c) => [c.type, c.status]));
    assert.deepEqual(
      { Accepted: conds.Accepted, ResolvedRefs: conds.ResolvedRefs },
      { Accepted: 'True', ResolvedRefs: 'True' },
    );
  });

  it('an invalid HTTPRoute changes nothing: a negative weight is refused by the API server; a missing backend is Accepted=False with the reason, the 90/10 split keeps serving', async () => {
    await reviews90();
    const version = await servedVersion();
    const refused = mesh!.kubectl(['apply', '-f', join(JOURNEYS, 'broken-route.yaml')]);
    assert.notEqual(refused.code, 0, 'the API server refuses a negative weight');
    assert.match(refused.stderr, /backendRefs\[0\]\.weight.*greater than or equal to 0/);

    const run = mesh!.exec(
      'shop/frontend-1',
      [process.execPath, join(FIXTURES, 'split-timeline.mjs'), REVIEWS, '8000', '2'],
      60_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    const wrong = mesh!.kubectl(['apply', '-f', '-'], MISSING_BACKEND_ROUTE);
    assert.equal(wrong.code, 0, `a schema-valid route is stored: ${wrong.stderr}`);
    const accepted = await reviewsAccepted('False');
    assert.equal(accepted?.reason, 'BackendNotFound');
    assert.match(accepted?.message ?? '', /reviews-v3 does not exist/);
    // What a user types to see why: the reason is on the route itself.
    const shown = kubectl(
      'get',
      'httproute',
      'reviews',
      '-n',
      'shop',
      '-o',
      'jsonpath={.status.parents[0].conditions[?(@.type=="ResolvedRefs")].reason}',
    );
    assert.equal(shown, 'BackendNotFound');
    const out = await run;
    assert.equal(out.code, 0, out.stderr);
    const answers = JSON.parse(out.stdout) as Answer[];
    const failed = answers.filter((a) => a[2] !== 200);
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${answers.length} requests failed`);
    const s = share(answers, answers[0]![0], answers.at(-1)![0] + 1);
    assert.ok(s.v2 > 0.02 && s.v2 < 0.25, `the 90/10 split stays: v2 share ${s.v2} of ${s.n}`);
    assert.equal(await servedVersion(), version, 'the served config did not change');

    kubectl('apply', '-f', join(SHOP, '30-routes.yaml'));
    await reviewsAccepted('True');
  });

  it('kube-apiserver restarted under load: no request fails, and a route change right after reaches the data plane', async () => {
    await reviews90(); // the change to 0/100 below must be a change
    const run = mesh!.exec(
      'shop/frontend-1',
      [process.execPath, join(FIXTURES, 'split-timeline.mjs'), REVIEWS, '20000', '2'],
      90_000,
    );
    await new Promise((r) => setTimeout(r, 2000));
    const down = Date.now();
    const info = await restartLabApiServer(mesh!.bed);
    const up = Date.now();
    clusterPids = [...new Set([...clusterPids, ...info.clusterPids])];
    kubectl('apply', '-f', join(JOURNEYS, 'reviews-0-100.yaml'));
    const applied = Date.now();
    const out = await run;
    assert.equal(out.code, 0, out.stderr);
    const answers = JSON.parse(out.stdout) as Answer[];
    const failed = answers.filter((a) => a[2] !== 200);
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${answers.length} requests failed`);
    const during = share(answers, down, up);
    assert.deepEqual([...during.modes].sort(), ['fresh', 'keepalive'], 'the load ran through the restart');
    const lastV1 = answers.filter((a) => a[3] === 'v1').at(-1)?.[0];
    process.stderr.write(
      `# API server restart took ${up - down} ms (${during.n} answers meanwhile); ${answers.length} requests, 0 failed; ` +
        `last v1 answer ${lastV1 === undefined ? 'none' : `${lastV1 - applied} ms after kubectl apply of 0/100 returned`} (load ended ${answers.at(-1)![0] - applied} ms after the apply)\n`,
    );
    // On a slow machine the restart can outlast the load: then the change is checked after it.
    const after = await eventually(
      'reviews answers only v2',
      () => Promise.all(Array.from({ length: 10 }, () => call(mesh!, 'shop/frontend-1', REVIEWS))),
      (rs) =>
        rs.every((r) => r.status === 200 && (JSON.parse(r.body) as { version: string }).version === 'v2'),
      30_000,
    );
    assert.equal(after.length, 10);
    kubectl('apply', '-f', join(SHOP, '30-routes.yaml'));
  });
});
