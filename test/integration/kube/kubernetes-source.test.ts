// The control plane on a real kube-apiserver (lab/kube/cluster.ts: kine, kube-apiserver and
// kube-controller-manager built from the Go module proxy): objects applied with the real kubectl
// reach the xDS snapshot, EndpointSlices written by the real endpointslice controller decide the
// endpoints, bad objects are refused or marked not accepted without touching the rest, and the
// source survives an API server restart, a silent (stalled) connection and an expired watch.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import { isSockmeshError } from '../../../lib/errors.js';
import { nullLogger } from '../../../lib/log.js';
import { KubeClient } from '../../../xds/sources/kube/client.js';
import { loadKubeconfig } from '../../../xds/sources/kube/config.js';
import { KubernetesSource } from '../../../xds/sources/kubernetes.js';
import {
  endpointsOf,
  type KubeControlPlane,
  kubectl,
  resourceHashes,
  routeMatches,
  routeWeights,
  StallProxy,
  startKubeControlPlane,
  uniq,
  waitFor,
} from './source-helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CRDS = path.join(ROOT, 'charts/sockmesh/files/crds');
const NS = uniq('shop');
const fqdn = (svc: string) => `${svc}.${NS}.svc.cluster.local`;
const cluster = (svc: string, port = 9080) => `outbound|${port}||${fqdn(svc)}`;
const ROUTE = `${fqdn('reviews')}:9080`;

let kube: KubeCluster | undefined;
let main: KubeControlPlane | undefined;
const closers: (() => Promise<unknown>)[] = [];

before(async () => {
  kube = await startKubeCluster({ name: uniq('ks'), gatewayCrds: true });
});

after(async () => {
  for (const c of closers.reverse()) await c().catch(() => {});
  await main?.cp.close().catch(() => {});
  await kube?.stop();
});

const k = () => {
  assert.ok(kube, 'cluster started');
  return kube;
};

const service = (name: string, selector: Record<string, string>) => `
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${NS} }
spec:
  selector: ${JSON.stringify(selector)}
  ports: [{ name: http, port: 9080, targetPort: 9080, appProtocol: http }]
`;
const pod = (name: string, version: string) => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${NS}, labels: { app: reviews, version: ${version} } }
spec:
  nodeName: node1
  serviceAccountName: reviews
  containers: [{ name: app, image: example.invalid/reviews, ports: [{ containerPort: 9080 }] }]
`;
const route = (v1: number, v2: number, backend2 = 'reviews-v2') => `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules:
    - backendRefs:
        - { name: reviews-v1, port: 9080, weight: ${v1} }
        - { name: ${backend2}, port: 9080, weight: ${v2} }
`;

async function patchPodStatus(name: string, ip: string, ready: boolean): Promise<void> {
  const status = {
    phase: 'Running',
    podIP: ip,
    podIPs: [{ ip }],
    conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
  };
  await kubectl(k(), [
    'patch',
    'pod',
    name,
    '-n',
    NS,
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status }),
  ]);
}

const weightsOf = (cp: KubeControlPlane['cp']) => {
  const w = routeWeights(cp, ROUTE);
  return w ? [w[cluster('reviews-v1')], w[cluster('reviews-v2')]] : undefined;
};

test('without the sockmesh CRDs the source refuses to start and names them; an unreachable server is named too', async () => {
  const connection = loadKubeconfig(k().kubeconfig);
  const source = new KubernetesSource({ connection, logger: nullLogger });
  await assert.rejects(source.sync(), (err: unknown) => {
    assert.ok(isSockmeshError(err, 'SOCKMESH_E_CONFIG'));
    assert.match(err.message, /CRD not installed .*trafficpolicies\.sockmesh\.io/);
    assert.match(err.message, /authorizationpolicies\.sockmesh\.io/);
    assert.match(err.hint ?? '', /kubectl apply -f charts\/sockmesh\/files\/crds\//);
    return true;
  });
  await source.close();

  const dead = new KubernetesSource({
    connection: { ...connection, server: 'https://127.0.0.1:1' },
    logger: nullLogger,
  });
  await assert.rejects(
    dead.sync(),
    /cannot reach the Kubernetes API server at https:\/\/127\.0\.0\.1:1 .*ECONNREFUSED/,
  );
  await dead.close();

  // The command says the same and exits 1.
  const refused = await runCli(['control-plane', '--kubeconfig', k().kubeconfig, '--listen', '127.0.0.1:0']);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /SOCKMESH_E_CONFIG: CRD not installed .*trafficpolicies\.sockmesh\.io/);

  await kubectl(k(), ['apply', '-f', CRDS]);
  await kubectl(k(), ['wait', '--for=condition=Established', '--timeout=60s', '-f', CRDS]);

  // With the CRDs it serves, and stops cleanly on SIGTERM.
  const served = await runCli(
    ['control-plane', '--kubeconfig', k().kubeconfig, '--listen', '127.0.0.1:0'],
    /control plane serving https:\/\/127\.0\.0\.1:\d+ \(kubeconfig .*\) \(version 1\)/,
  );
  assert.equal(served.code, 0, served.stderr);
});

/** Runs the CLI; with `until`, sends SIGTERM once stdout matches it. */
function runCli(
  args: string[],
  until?: RegExp,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'cli/main.ts'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      if (until?.test(stdout)) child.kill('SIGTERM');
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('kubectl-applied namespace, services, pods and HTTPRoute reach the snapshot; a weight change within 2 s', async (t) => {
  main = await startKubeControlPlane(k());
  const { cp } = main;
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: v1
kind: Namespace
metadata: { name: ${NS}, labels: { sockmesh.io/mesh: enabled } }
---
apiVersion: v1
kind: Node
metadata: { name: node1 }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: reviews, namespace: ${NS} }
`,
  );
  await kubectl(k(), [
    'patch',
    'node',
    'node1',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({ status: { addresses: [{ type: 'InternalIP', address: '10.99.0.1' }] } }),
  ]);
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    [
      service('reviews', { app: 'reviews' }),
      service('reviews-v1', { app: 'reviews', version: 'v1' }),
      service('reviews-v2', { app: 'reviews', version: 'v2' }),
      pod('reviews-v1-a', 'v1'),
      pod('reviews-v2-a', 'v2'),
      route(90, 10),
    ].join('---\n'),
  );
  await waitFor('the 90/10 split in RDS', () => {
    const w = weightsOf(cp);
    return w?.[0] === 90 && w[1] === 10;
  });
  assert.equal(cp.snapshot?.model.nodes.get('node1')?.address, '10.99.0.1');
  assert.equal(cp.snapshot?.model.namespaces.get(NS)?.meshed, true);

  // kubectl apply of a new weight -> the snapshot: measured from before kubectl starts.
  const started = performance.now();
  await kubectl(k(), ['apply', '-f', '-'], route(50, 50));
  const kubectlDone = performance.now();
  await waitFor(
    'the 50/50 split',
    () => {
      const w = weightsOf(cp);
      return w?.[0] === 50 && w[1] === 50;
    },
    5000,
    5,
  );
  // kubectl answers after the API server stored the change, so `kubectl done -> snapshot` bounds the
  // source's part from above; the whole includes kubectl's own start-up and discovery.
  const total = performance.now() - started;
  const afterWrite = performance.now() - kubectlDone;
  t.diagnostic(
    `kubectl apply -> snapshot: ${total.toFixed(0)} ms in all (kubectl itself ${(kubectlDone - started).toFixed(0)} ms; kubectl done -> snapshot ${afterWrite.toFixed(0)} ms)`,
  );
  assert.ok(afterWrite < 2000, `the change took ${afterWrite} ms to reach the snapshot`);

  // The same change as one API request (what kubectl does once it has started): write -> snapshot.
  const api = new KubeClient(loadKubeconfig(k().kubeconfig));
  try {
    const t0 = performance.now();
    await api.json('PATCH', `/apis/gateway.networking.k8s.io/v1/namespaces/${NS}/httproutes/reviews`, {
      contentType: 'application/json-patch+json',
      body: [
        { op: 'replace', path: '/spec/rules/0/backendRefs/0/weight', value: 60 },
        { op: 'replace', path: '/spec/rules/0/backendRefs/1/weight', value: 40 },
      ],
    });
    await waitFor('the 60/40 split', () => weightsOf(cp)?.[0] === 60, 2000, 1);
    t.diagnostic(`API PATCH -> snapshot: ${(performance.now() - t0).toFixed(1)} ms`);
  } finally {
    await api.close();
  }
  await kubectl(k(), ['apply', '-f', '-'], route(50, 50));
  await waitFor('back to 50/50', () => weightsOf(cp)?.[0] === 50);
});

test('EndpointSlices decide endpoints: Ready pods with an IP are endpoints, NotReady ones not, terminating as kube-proxy', async () => {
  const { cp } = main!;
  // No IP yet: not an endpoint, and not an error.
  await waitFor(
    'an empty assignment for reviews-v1',
    () => endpointsOf(cp, cluster('reviews-v1'))?.length === 0,
  );
  await patchPodStatus('reviews-v1-a', '10.1.1.10', true);
  await patchPodStatus('reviews-v2-a', '10.1.1.20', true);
  await waitFor('reviews-v1-a as the endpoint', () =>
    endpointsOf(cp, cluster('reviews-v1'))?.join() === '10.1.1.10:9080' ? true : undefined,
  );
  await waitFor(
    'reviews-v2-a as the endpoint',
    () => endpointsOf(cp, cluster('reviews-v2'))?.join() === '10.1.1.20:9080',
  );
  assert.deepEqual(endpointsOf(cp, cluster('reviews')), ['10.1.1.10:9080', '10.1.1.20:9080']);

  // A second v1 pod with an IP but NotReady: the slice lists it (ready: false); not an endpoint.
  await kubectl(k(), ['apply', '-f', '-'], pod('reviews-v1-b', 'v1'));
  await patchPodStatus('reviews-v1-b', '10.1.1.11', false);
  await waitFor('the slice to list reviews-v1-b', async () => {
    const out = await kubectl(k(), [
      'get',
      'endpointslices',
      '-n',
      NS,
      '-l',
      'kubernetes.io/service-name=reviews-v1',
      '-o',
      'json',
    ]);
    return out.includes('10.1.1.11');
  });
  assert.deepEqual(endpointsOf(cp, cluster('reviews-v1')), ['10.1.1.10:9080']);

  // reviews-v1-a terminates (bound to a node without a kubelet, it stays terminating): ready is
  // false, serving true; with no other ready endpoint kube-proxy keeps sending to it.
  await kubectl(k(), ['delete', 'pod', 'reviews-v1-a', '-n', NS, '--wait=false']);
  const slice = await waitFor('reviews-v1-a terminating in the slice', async () => {
    const out = JSON.parse(
      await kubectl(k(), [
        'get',
        'endpointslices',
        '-n',
        NS,
        '-l',
        'kubernetes.io/service-name=reviews-v1',
        '-o',
        'json',
      ]),
    ) as { items: { endpoints?: { addresses: string[]; conditions: Record<string, boolean> }[] }[] };
    const e = slice0(out).find((x) => x.addresses[0] === '10.1.1.10');
    return e?.conditions.terminating === true ? e : undefined;
  });
  assert.deepEqual(slice.conditions, { ready: false, serving: true, terminating: true });
  await waitFor(
    'the terminating, still serving endpoint kept',
    () => endpointsOf(cp, cluster('reviews-v1'))?.join() === '10.1.1.10:9080',
  );
  // Once another endpoint is ready, the terminating one gets nothing new.
  await patchPodStatus('reviews-v1-b', '10.1.1.11', true);
  await waitFor(
    'reviews-v1-b only',
    () => endpointsOf(cp, cluster('reviews-v1'))?.join() === '10.1.1.11:9080',
  );
  await kubectl(k(), ['delete', 'pod', 'reviews-v1-a', '-n', NS, '--grace-period=0', '--force']);
});

function slice0(list: {
  items: { endpoints?: { addresses: string[]; conditions: Record<string, boolean> }[] }[];
}) {
  return list.items.flatMap((s) => s.endpoints ?? []);
}

test('schema-invalid objects are refused by the API server itself, and nothing served changes', async () => {
  const { cp } = main!;
  const served = resourceHashes(cp);
  const negative = await k().kubectl(['apply', '-f', '-'], {
    input: `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules: [{ backendRefs: [{ name: reviews-v1, port: 9080, weight: -5 }] }]
`,
  });
  assert.notEqual(negative.code, 0);
  assert.match(negative.stderr, /backendRefs\[0\]\.weight.*greater than or equal to 0/);
  const bad = await k().kubectl(['apply', '-f', '-'], {
    input: `apiVersion: sockmesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: bad-lb, namespace: ${NS} }
spec:
  targetRef: { kind: Service, name: reviews }
  loadBalancer: { type: RANDOM }
`,
  });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /spec\.loadBalancer\.type: Unsupported value: "RANDOM"/);
  const typo = await k().kubectl(['apply', '-f', '-'], {
    input: `apiVersion: sockmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: typo, namespace: ${NS} }
spec: { actoin: DENY }
`,
  });
  assert.notEqual(typo.code, 0);
  assert.match(typo.stderr, /unknown field "spec\.actoin"/);
  const both = await k().kubectl(['apply', '-f', '-'], {
    input: `apiVersion: sockmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: both, namespace: ${NS} }
spec: { selector: { matchLabels: { app: x } }, targetRef: { kind: Service, name: reviews } }
`,
  });
  assert.match(both.stderr, /set either selector or targetRef, not both/);
  const stored = await kubectl(k(), ['get', 'trafficpolicies,authorizationpolicies', '-n', NS, '-o', 'name']);
  assert.doesNotMatch(stored, /bad-lb|typo|both/, 'none of them was stored');
  // A refused object never reaches a watch: every served resource is as it was (a stray event
  // would have had time to land). The version is not compared: the previous test's pods may still
  // be finishing their deletion, which moves it without changing what is served.
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(resourceHashes(cp), served);
  assert.deepEqual(weightsOf(cp), [50, 50]);
});

test('schema-valid but wrong: BackendNotFound in status, the last good version stays, nothing else changes', async () => {
  const { cp } = main!;
  const before = resourceHashes(cp);
  const version = cp.snapshot?.version;

  // A new route to a missing Service: not accepted, and the snapshot does not move.
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: to-nowhere, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules: [{ backendRefs: [{ name: reviews-v3, port: 9080 }] }]
`,
  );
  const status = await waitFor('the to-nowhere status', async () => {
    const out = JSON.parse(
      await kubectl(k(), ['get', 'httproute', 'to-nowhere', '-n', NS, '-o', 'json']),
    ) as RouteJson;
    return out.status?.parents?.[0];
  });
  assert.deepEqual(status.parentRef, { group: '', kind: 'Service', name: 'reviews', port: 9080 });
  assert.equal(status.controllerName, 'sockmesh.io/controlplane');
  const byType = Object.fromEntries(status.conditions.map((c) => [c.type, c]));
  assert.equal(byType.Accepted?.status, 'False');
  assert.equal(byType.Accepted?.reason, 'BackendNotFound');
  assert.equal(byType.ResolvedRefs?.status, 'False');
  assert.equal(byType.ResolvedRefs?.reason, 'BackendNotFound');
  assert.equal(byType.Accepted?.observedGeneration, 1);
  assert.match(
    byType.ResolvedRefs?.message ?? '',
    /spec\.rules\[0\]\.backendRefs\[0\]\.name: Service .*\/reviews-v3 does not exist/,
  );
  const yaml = await kubectl(k(), ['get', 'httproute', 'to-nowhere', '-n', NS, '-o', 'yaml']);
  assert.match(yaml, /reason: BackendNotFound/);
  assert.deepEqual(resourceHashes(cp), before);
  assert.equal(cp.snapshot?.version, version);

  // The served route goes wrong: its last accepted version (50/50) stays in force.
  await kubectl(k(), ['apply', '-f', '-'], route(10, 90, 'reviews-v9'));
  await waitFor('reviews Accepted=False (generation 3)', async () => {
    const out = JSON.parse(
      await kubectl(k(), ['get', 'httproute', 'reviews', '-n', NS, '-o', 'json']),
    ) as RouteJson;
    const c = out.status?.parents?.[0]?.conditions.find((x) => x.type === 'Accepted');
    return c?.status === 'False' && c.observedGeneration === out.metadata.generation ? c : undefined;
  }).then((c) => assert.match(c.message, /the last accepted version stays in force/));
  assert.deepEqual(weightsOf(cp), [50, 50]);
  assert.deepEqual(resourceHashes(cp), before);

  // Fixed: accepted again, and served.
  await kubectl(k(), ['apply', '-f', '-'], route(50, 50));
  await waitFor('reviews Accepted=True', async () => {
    const out = JSON.parse(
      await kubectl(k(), ['get', 'httproute', 'reviews', '-n', NS, '-o', 'json']),
    ) as RouteJson;
    const c = out.status?.parents?.[0]?.conditions.find((x) => x.type === 'Accepted');
    return c?.status === 'True' && c.observedGeneration === out.metadata.generation;
  });
});

interface RouteJson {
  metadata: { generation: number };
  status?: {
    parents?: {
      parentRef: unknown;
      controllerName: string;
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

test('a GRPCRoute: its split reaches RDS as :path matches, its status says Accepted, a bad version keeps the last good', async () => {
  const { cp } = main!;
  const grpcService = (name: string) => `
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${NS} }
spec:
  selector: { app: ${name} }
  ports: [{ name: grpc, port: 9091, targetPort: 9091, appProtocol: grpc }]
`;
  const grpcRoute = (v1: number, v2: number, backend2 = 'greeter-v2') => `
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greeter, namespace: ${NS} }
spec:
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9091 }]
  rules:
    - matches: [{ method: { service: helloworld.Greeter, method: SayHello } }]
      backendRefs:
        - { name: greeter-v1, port: 9091, weight: ${v1} }
        - { name: ${backend2}, port: 9091, weight: ${v2} }
`;
  const rc = `${fqdn('greeter')}:9091`;
  const split = () => {
    const w = routeWeights(cp, rc);
    return w ? [w[cluster('greeter-v1', 9091)], w[cluster('greeter-v2', 9091)]] : undefined;
  };
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    [grpcService('greeter'), grpcService('greeter-v1'), grpcService('greeter-v2'), grpcRoute(90, 10)].join(
      '---\n',
    ),
  );
  await waitFor('the GRPCRoute 90/10 split in RDS', () => split()?.[0] === 90 && split()?.[1] === 10);
  assert.deepEqual(routeMatches(cp, rc), [
    { name: `${NS}/greeter/rule-0/match-0`, path: '/helloworld.Greeter/SayHello' },
  ]);

  const conditionsOf = async () => {
    const out = JSON.parse(
      await kubectl(k(), ['get', 'grpcroute', 'greeter', '-n', NS, '-o', 'json']),
    ) as RouteJson;
    const p = out.status?.parents?.[0];
    return p && { parent: p, generation: out.metadata.generation };
  };
  const accepted = await waitFor('the GRPCRoute Accepted=True', async () => {
    const s = await conditionsOf();
    const c = s?.parent.conditions.find((x) => x.type === 'Accepted');
    return c?.status === 'True' && c.observedGeneration === s?.generation ? s : undefined;
  });
  assert.deepEqual(accepted.parent.parentRef, { group: '', kind: 'Service', name: 'greeter', port: 9091 });
  assert.equal(accepted.parent.controllerName, 'sockmesh.io/controlplane');
  const byType = Object.fromEntries(accepted.parent.conditions.map((c) => [c.type, c]));
  assert.equal(byType.Accepted?.reason, 'Accepted');
  assert.equal(byType.ResolvedRefs?.status, 'True');
  assert.equal(byType.ResolvedRefs?.reason, 'ResolvedRefs');

  // A backend that does not exist: not accepted, named; the 90/10 version stays in force.
  const before = resourceHashes(cp);
  await kubectl(k(), ['apply', '-f', '-'], grpcRoute(0, 100, 'greeter-v9'));
  const refused = await waitFor('the GRPCRoute Accepted=False (BackendNotFound)', async () => {
    const s = await conditionsOf();
    const c = s?.parent.conditions.find((x) => x.type === 'Accepted');
    return c?.status === 'False' && c.observedGeneration === s?.generation ? s : undefined;
  });
  const bad = Object.fromEntries(refused.parent.conditions.map((c) => [c.type, c]));
  assert.equal(bad.Accepted?.reason, 'BackendNotFound');
  assert.equal(bad.ResolvedRefs?.reason, 'BackendNotFound');
  assert.match(
    bad.ResolvedRefs?.message ?? '',
    /spec\.rules\[0\]\.backendRefs\[1\]\.name: Service .*\/greeter-v9 does not exist/,
  );
  assert.match(bad.Accepted?.message ?? '', /the last accepted version stays in force/);
  assert.deepEqual(split(), [90, 10]);
  assert.deepEqual(resourceHashes(cp), before);

  // Fixed, 0/100 live; and a CanaryGuard may name the GRPCRoute.
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `${grpcRoute(0, 100)}---
apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: greeter, namespace: ${NS} }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: GRPCRoute, name: greeter }
  canaryRef: { name: greeter-v2 }
  baselineRef: { name: greeter-v1 }
  bounds: { minSuccessRate: 99 }
`,
  );
  await waitFor('the GRPCRoute 0/100 split in RDS', () => split()?.[0] === 0 && split()?.[1] === 100);
  await waitFor('the guard on the GRPCRoute in the model', () =>
    cp.snapshot?.model.canaryGuards?.some((g) => g.name === 'greeter' && g.routeKind === 'GRPCRoute'),
  );
  await waitFor('the guard on the GRPCRoute Accepted', async () =>
    /greeter\s+greeter\s+greeter-v2\s+True\s/.test(
      await kubectl(k(), ['get', 'cguard', 'greeter', '-n', NS]),
    ),
  );
  await kubectl(k(), ['delete', 'canaryguard', 'greeter', '-n', NS]);
});

test('sockmesh kinds carry Accepted/ResolvedRefs, shown by kubectl get printer columns', async () => {
  await kubectl(
    k(),
    ['apply', '-f', '-'],
    `apiVersion: sockmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: readers, namespace: ${NS} }
spec:
  targetRef: { kind: Service, name: reviews }
  rules: [{ from: [{ namespaces: [${NS}] }], to: [{ methods: [GET] }] }]
---
apiVersion: sockmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: { name: lost, namespace: ${NS} }
spec:
  action: DENY
  targetRef: { kind: Service, name: ratings }
---
apiVersion: sockmesh.io/v1alpha1
kind: TrafficPolicy
metadata: { name: reviews, namespace: ${NS} }
spec:
  targetRef: { kind: Service, name: reviews }
  retries: { attempts: 2 }
`,
  );
  const table = await waitFor('both policies to have conditions', async () => {
    const out = await kubectl(k(), ['get', 'authorizationpolicies', '-n', NS]);
    return /readers\s+ALLOW\s+reviews\s+True\s+Accepted/.test(out) &&
      /lost\s+DENY\s+ratings\s+False\s+TargetNotFound/.test(out)
      ? out
      : undefined;
  });
  assert.match(table.split('\n')[0] ?? '', /NAME\s+ACTION\s+TARGET\s+ACCEPTED\s+REASON\s+AGE/);
  const wide = await kubectl(k(), ['get', 'authz', 'lost', '-n', NS, '-o', 'wide']);
  assert.match(wide, /False\s+TargetNotFound\s+False\s+.*Service .*\/ratings does not exist/);
  await waitFor('the TrafficPolicy accepted', async () =>
    /reviews\s+reviews\s+True\s+Accepted/.test(await kubectl(k(), ['get', 'tpol', '-n', NS])),
  );
  const { cp } = main!;
  await waitFor('the policy in the model', () =>
    cp.snapshot?.model.authorizationPolicies.some((p) => p.name === 'readers'),
  );
  assert.ok(!cp.snapshot?.model.authorizationPolicies.some((p) => p.name === 'lost'));
  // Status writes are not repeated: the resourceVersion stays put once written.
  const rv = async () =>
    (
      await kubectl(k(), ['get', 'authz', 'readers', '-n', NS, '-o', 'jsonpath={.metadata.resourceVersion}'])
    ).trim();
  const first = await rv();
  await main!.cp.reload();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await rv(), first);
});

test('API server restart and expired watches (410): nothing lost, changes made meanwhile arrive', async (t) => {
  const { cp, source } = main!;
  // A second control plane reaches the API server through a proxy that can stall its connections.
  const upstream = Number(new URL(k().server).port);
  const proxy = new StallProxy(upstream);
  await proxy.start();
  closers.push(() => proxy.stop());
  const stalled = await startKubeControlPlane(k(), {
    server: `https://127.0.0.1:${proxy.port}`,
    reflector: { idleTimeoutMs: 1500, backoffMaxMs: 1000 },
  });
  closers.push(() => stalled.cp.close());
  await waitFor('the proxied control plane to see the route', () => weightsOf(stalled.cp)?.[0] === 50);

  // 1. The connections go silent for good (nothing closes them): only the watchdog gets the
  //    source off them, and only that lets it catch up once new connections flow again.
  proxy.freeze();
  await waitFor(
    'watchdog restarts',
    () => Object.values(stalled.source.stats()).every((s) => s.idleRestarts > 0),
    15_000,
    100,
  );
  // 2. Changes while it is cut off, then the API server restarts (its watch cache starts over).
  await kubectl(k(), ['apply', '-f', '-'], route(30, 70));
  await kubectl(k(), ['apply', '-f', '-'], service('details', { app: 'details' }));
  const watchesBefore = Object.values(source.stats()).reduce((n, s) => n + s.watches, 0);
  await k().restartApiServer();
  // 3. Changes right after the restart, before the sources have reconnected.
  await kubectl(k(), ['apply', '-f', '-'], route(0, 100));
  await kubectl(k(), ['delete', 'service', 'details', '-n', NS]);
  await kubectl(k(), ['apply', '-f', '-'], service('ratings', { app: 'ratings' }));
  proxy.thaw();

  for (const [name, plane] of [
    ['direct', cp],
    ['proxied', stalled.cp],
  ] as const) {
    await waitFor(
      `${name}: 0/100 and ratings, details gone`,
      () =>
        weightsOf(plane)?.[0] === 0 &&
        weightsOf(plane)?.[1] === 100 &&
        endpointsOf(plane, cluster('ratings')) !== undefined &&
        endpointsOf(plane, cluster('details')) === undefined,
      30_000,
      50,
    );
    // Nothing lost: the endpoints and policies from before are all there.
    assert.deepEqual(endpointsOf(plane, cluster('reviews-v1')), ['10.1.1.11:9080']);
    assert.deepEqual(endpointsOf(plane, cluster('reviews-v2')), ['10.1.1.20:9080']);
    assert.ok(plane.snapshot?.model.authorizationPolicies.some((p) => p.name === 'readers'));
    assert.equal(plane.snapshot?.model.nodes.get('node1')?.address, '10.99.0.1');
  }
  const direct = source.stats();
  const proxied = stalled.source.stats();
  const sum = (s: typeof direct, f: (x: (typeof direct)[string]) => number) =>
    Object.values(s).reduce((n, x) => n + f(x), 0);
  t.diagnostic(
    `direct source: watches ${watchesBefore} -> ${sum(direct, (s) => s.watches)}, 410 relists ${sum(direct, (s) => s.gone)}, errors ${sum(direct, (s) => s.errors)}; ` +
      `proxied: watchdog restarts ${sum(proxied, (s) => s.idleRestarts)}, 410 relists ${sum(proxied, (s) => s.gone)}, lists ${sum(proxied, (s) => s.lists)}`,
  );
  assert.ok(sum(direct, (s) => s.watches) > watchesBefore, 'the direct source re-watched after the restart');
  // The proxied source came back with resourceVersions from before the restart: expired (410), relisted.
  assert.ok(sum(proxied, (s) => s.gone) > 0, 'a watch expired with 410 and was relisted');
});
