/**
 * charts/sockmesh against a real kube-apiserver (lab/kube/cluster.ts: kine + kube-apiserver +
 * kube-controller-manager, no kubelet: objects are checked, pods never run) with the real helm v4:
 * server-side dry runs of every render, a refused object detected, helm install and upgrade (a CRD
 * change reaches the API server), and the control plane run as the chart's ServiceAccount with the
 * chart's xDS certificates, serving an agent's client certificate over mTLS.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkServerIdentity } from 'node:tls';
import { credentials } from '@grpc/grpc-js';
import { kubeBinaries } from '../../../lab/kube/binaries.js';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import { nullLogger } from '../../../lib/log.js';
import { AdsClient } from '../../../xds/client/ads-client.js';
import {
  at,
  CHART,
  find,
  Helm,
  type KubeObject,
  NON_DEFAULT,
  parseObjects,
  ROOT,
  toYamlStream,
} from './helm.js';

const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;
const NS = 'sockmesh-system';

describe('charts/sockmesh against a real kube-apiserver', {
  skip: notRoot ? 'needs root (the test cluster is recorded and guarded in a cgroup)' : false,
}, () => {
  let cluster: KubeCluster | undefined;
  let helm: Helm;
  const scratch = mkdtempSync(join(tmpdir(), 'sockmesh-chart-api-'));
  const children: ReturnType<typeof spawn>[] = [];

  before(async () => {
    // Without the Gateway API CRDs at first: the chart's own check is the first test.
    cluster = await startKubeCluster({ name: `chart-${randomBytes(2).toString('hex')}` });
    helm = new Helm(kubeBinaries().helm, cluster.kubeconfig);
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await cluster?.stop();
    helm?.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  async function kubectl(args: string[], input?: string): Promise<string> {
    const r = await cluster!.kubectl(args, input === undefined ? {} : { input });
    assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  /** Every object through admission and validation, nothing stored. */
  function dryRun(objects: KubeObject[]) {
    return cluster!.kubectl(
      ['apply', '--server-side', '--dry-run=server', '--field-manager=sockmesh-chart-test', '-f', '-'],
      { input: toYamlStream(objects) },
    );
  }

  it('helm install stops before creating anything when the Gateway API CRDs are missing', async () => {
    const r = await helm.run(['install', 'sockmesh', CHART, '-n', NS, '--create-namespace']);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /the Gateway API CRDs are not installed \(no httproutes\.gateway\.networking\.k8s\.io\)/,
    );
    assert.match(r.stderr, /gatewayApi\.checkCrds=false/);
    const crds = await kubectl(['get', 'crd', '-o', 'name']);
    assert.doesNotMatch(crds, /sockmesh\.io/);
    const bins = kubeBinaries();
    await kubectl(['apply', '--server-side', ...bins.gatewayCrds.flatMap((f) => ['-f', f])]);
    await kubectl([
      'wait',
      '--for=condition=Established',
      '--timeout=60s',
      'crd/httproutes.gateway.networking.k8s.io',
    ]);
    await kubectl(['create', 'namespace', 'mesh-infra']);
    await kubectl(['get', 'namespace', NS]).catch(async () => kubectl(['create', 'namespace', NS]));
  });

  for (const [what, release, ns, set] of [
    ['default values', 'sockmesh', NS, []],
    ['SPIRE, accelerate, 2 workers, no CRDs, namespace mesh-infra', 'mesh', 'mesh-infra', NON_DEFAULT],
    [
      'privileged, user-provided xDS Secrets',
      'sockmesh',
      NS,
      [
        'agent.privileged=true',
        'controlPlane.xds.tls.generate=false',
        'controlPlane.xds.tls.serverSecret=xds-server',
        'controlPlane.xds.tls.clientSecret=xds-client',
      ],
    ],
  ] as const) {
    it(`every rendered object passes a server-side dry run: ${what}`, async () => {
      const objects = await helm.template(release, ns, [...set]);
      const r = await dryRun(objects);
      assert.equal(r.code, 0, r.stderr);
      const applied = r.stdout.split('\n').filter((l) => l.endsWith('serverside-applied (server dry run)'));
      assert.equal(applied.length, objects.length, r.stdout);
    });
  }

  it('detects a rendered object the API server refuses (the check can fail)', async () => {
    const objects = await helm.template('sockmesh', NS);
    // A DaemonSet that could never roll: both 0 is refused by validation.
    const ds = structuredClone(find(objects, 'DaemonSet'));
    (at(ds, 'spec', 'updateStrategy', 'rollingUpdate') as Record<string, number>).maxSurge = 0;
    const bad = await dryRun([...objects.filter((o) => o.kind !== 'DaemonSet'), ds]);
    assert.notEqual(bad.code, 0);
    assert.match(
      bad.stderr,
      /DaemonSet "sockmesh-agent" is invalid: spec\.updateStrategy\.rollingUpdate\.maxUnavailable: Required value: cannot be 0 when maxSurge is 0/,
    );

    // Values the schema lets through but the API server does not: a CPU quantity, an annotation key.
    const rendered = async (...args: string[]) => {
      const r = await helm.run(['template', 'sockmesh', CHART, '-n', NS, ...args]);
      assert.equal(r.code, 0, r.stderr);
      return parseObjects(r.stdout);
    };
    const badCpu = await dryRun(await rendered('--set', 'agent.resources.requests.cpu=lots'));
    assert.notEqual(badCpu.code, 0);
    assert.match(badCpu.stderr, /quantities must match the regular expression/);
    const badKey = await dryRun(await rendered('--set-string', 'controlPlane.podAnnotations.a/b/c=1'));
    assert.notEqual(badKey.code, 0);
    assert.match(
      badKey.stderr,
      /Deployment "sockmesh-control-plane" is invalid: spec\.template\.annotations: Invalid value: "a\/b\/c"/,
    );
  });

  let firstCert = '';

  it('helm install: the release, with the CA Secret made as docs/install.md says', async () => {
    // The documented way: sockmesh ca init, then a Secret from the directory.
    const caDir = join(scratch, 'ca');
    await runCli(['ca', 'init', '--trust-domain', 'cluster.local', '--dir', caDir]);
    await kubectl(['-n', NS, 'create', 'secret', 'generic', 'sockmesh-ca', `--from-file=${caDir}/`]);
    const keys = Object.keys(
      JSON.parse(await kubectl(['-n', NS, 'get', 'secret', 'sockmesh-ca', '-o', 'json'])).data as object,
    ).sort();
    assert.deepEqual(keys, ['bundle.crt', 'ca.crt', 'ca.key', 'config.json']);

    const r = await helm.run(['install', 'sockmesh', CHART, '-n', NS, '--create-namespace']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /STATUS: deployed/);
    assert.match(r.stdout, /rollout status daemonset\/sockmesh-agent/);
    const crd = JSON.parse(await kubectl(['get', 'crd', 'trafficpolicies.sockmesh.io', '-o', 'json']));
    assert.equal(crd.metadata.annotations['helm.sh/resource-policy'], 'keep');
    assert.equal(crd.metadata.annotations['meta.helm.sh/release-name'], 'sockmesh');
    const ds = JSON.parse(await kubectl(['-n', NS, 'get', 'daemonset', 'sockmesh-agent', '-o', 'json']));
    assert.equal(ds.spec.updateStrategy.rollingUpdate.maxSurge, 1);
    firstCert = JSON.parse(await kubectl(['-n', NS, 'get', 'secret', 'sockmesh-xds-server', '-o', 'json']))
      .data['tls.crt'];
    assert.ok(firstCert);
  });

  it('helm upgrade carries a CRD change to the API server and keeps the xDS certificates', async () => {
    const chart = join(scratch, 'chart-v2');
    cpSync(CHART, chart, { recursive: true });
    const file = join(chart, 'files', 'crds', 'sockmesh.io_trafficpolicies.yaml');
    const text = readFileSync(file, 'utf8');
    assert.match(text, /shortNames: \[tpol\]/);
    writeFileSync(file, text.replace('shortNames: [tpol]', 'shortNames: [tpol, trafficpol]'));
    const r = await helm.run(['upgrade', 'sockmesh', chart, '-n', NS]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /REVISION: 2/);
    const crd = JSON.parse(await kubectl(['get', 'crd', 'trafficpolicies.sockmesh.io', '-o', 'json']));
    assert.deepEqual(crd.spec.names.shortNames, ['tpol', 'trafficpol']);
    await kubectl([
      'wait',
      '--for=condition=Established',
      '--timeout=60s',
      'crd/trafficpolicies.sockmesh.io',
    ]);
    await kubectl(['get', 'trafficpol', '-A']);
    const cert = JSON.parse(await kubectl(['-n', NS, 'get', 'secret', 'sockmesh-xds-server', '-o', 'json']))
      .data['tls.crt'];
    assert.equal(cert, firstCert, 'the upgrade re-generated the xDS certificates');
  });

  it('the ServiceAccount has exactly the documented rights, no more', async () => {
    const as = `--as=system:serviceaccount:${NS}:sockmesh-control-plane`;
    const can = async (verb: string, resource: string): Promise<boolean> => {
      const [res0, sub] = resource.split('/');
      const args = ['auth', 'can-i', verb, res0!, as, '-A', ...(sub ? [`--subresource=${sub}`] : [])];
      const res = await cluster!.kubectl(args);
      return res.stdout.trim() === 'yes';
    };
    for (const [verb, resource] of [
      ['watch', 'pods'],
      ['list', 'endpointslices.discovery.k8s.io'],
      ['patch', 'httproutes.gateway.networking.k8s.io/status'],
      ['watch', 'grpcroutes.gateway.networking.k8s.io'],
      ['patch', 'grpcroutes.gateway.networking.k8s.io/status'],
      ['patch', 'trafficpolicies.sockmesh.io/status'],
    ])
      assert.equal(await can(verb!, resource!), true, `${verb} ${resource}`);
    for (const [verb, resource] of [
      ['get', 'secrets'],
      ['list', 'secrets'],
      ['patch', 'httproutes.gateway.networking.k8s.io'],
      ['patch', 'grpcroutes.gateway.networking.k8s.io'],
      ['create', 'pods'],
      ['update', 'trafficpolicies.sockmesh.io'],
    ])
      assert.equal(await can(verb!, resource!), false, `${verb} ${resource}`);
    // Leader election: its own Lease in its namespace, no other.
    const lease = async (verb: string, name: string, ns: string) =>
      (
        await cluster!.kubectl(['auth', 'can-i', verb, `leases.coordination.k8s.io${name}`, as, '-n', ns])
      ).stdout.trim() === 'yes';
    assert.equal(await lease('update', '/sockmesh-control-plane', NS), true);
    assert.equal(await lease('create', '', NS), true);
    assert.equal(await lease('update', '/kube-controller-manager', NS), false);
    assert.equal(await lease('update', '/sockmesh-control-plane', 'kube-system'), false);
  });

  it("the control plane, run with the Deployment's arguments as its ServiceAccount, serves an agent over mTLS and writes status", async () => {
    // The service account's token, as the pod would mount it.
    const token = (await kubectl(['-n', NS, 'create', 'token', 'sockmesh-control-plane'])).trim();
    const kubeconfig = join(scratch, 'sa-kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: c, cluster: {server: "${cluster!.server}", certificate-authority-data: ${Buffer.from(cluster!.caPem).toString('base64')}}}]`,
        `users: [{name: sa, user: {token: "${token}"}}]`,
        'contexts: [{name: c, context: {cluster: c, user: sa}}]',
        'current-context: c',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const installed = parseObjects(
      await kubectl(['-n', NS, 'get', 'secret', 'sockmesh-xds-server', 'sockmesh-xds-client', '-o', 'yaml']),
    );
    const items = (installed[0] as unknown as { items: KubeObject[] }).items;
    const files = (name: string): string => {
      const dir = join(scratch, name);
      mkdirSync(dir, { recursive: true });
      const data = items.find((s) => s.metadata.name === name)!.data as Record<string, string>;
      for (const [k, v] of Object.entries(data)) writeFileSync(join(dir, k), Buffer.from(v, 'base64'));
      return dir;
    };
    const serverDir = files('sockmesh-xds-server');
    const clientDir = files('sockmesh-xds-client');

    const deploy = JSON.parse(
      await kubectl(['-n', NS, 'get', 'deployment', 'sockmesh-control-plane', '-o', 'json']),
    );
    const args = (deploy.spec.template.spec.containers[0].args as string[])
      .map((a) => a.replace('=/etc/sockmesh/xds/', `=${serverDir}/`))
      // The pod's 0.0.0.0:15010 becomes a free loopback port here.
      .map((a) => (a.startsWith('--listen=') ? '--listen=127.0.0.1:0' : a))
      // The kubelet expands the downward API's pod name.
      .map((a) =>
        a.replace('$(POD_NAME)', 'sockmesh-control-plane-7d9f-x2').replace('$(POD_IP)', '127.0.0.1'),
      );
    const cp = spawn(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args, '--kubeconfig', kubeconfig],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(cp);
    let stdout = '';
    let stderr = '';
    cp.stdout!.on('data', (d) => {
      stdout += d;
    });
    cp.stderr!.on('data', (d) => {
      stderr += d;
    });
    const address = await waitFor(
      'the control plane to serve',
      () => /on (127\.0\.0\.1:\d+)/.exec(stdout)?.[1],
      () => stderr,
    );

    // A route with a Service parent: its status is the control plane's write as the ServiceAccount.
    await kubectl(['create', 'namespace', 'shop']);
    await kubectl(
      ['apply', '-f', '-'],
      `apiVersion: v1
kind: Service
metadata: { name: reviews, namespace: shop }
spec: { ports: [{ name: http, port: 9080 }], selector: { app: reviews } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: reviews, port: 9080 }]
  rules: [{ backendRefs: [{ name: reviews, port: 9080 }] }]
`,
    );
    const parent = await waitFor(
      'the HTTPRoute status',
      async () =>
        (
          JSON.parse(await kubectl(['-n', 'shop', 'get', 'httproute', 'reviews', '-o', 'json'])) as {
            status?: { parents?: { controllerName: string }[] };
          }
        ).status?.parents?.[0],
      () => stderr,
    );
    assert.equal(parent.controllerName, 'sockmesh.io/controlplane');
    // It wrote that as the holder of the chart's Lease, taken with the Role's rights.
    const lease = JSON.parse(
      await kubectl(['-n', NS, 'get', 'lease', 'sockmesh-control-plane', '-o', 'json']),
    ) as { spec: { holderIdentity?: string } };
    assert.equal(lease.spec.holderIdentity, 'sockmesh-control-plane-7d9f-x2');

    // The agent's side: the client Secret, and the server name checked against the address agents dial.
    const pem = (f: string) => readFileSync(join(clientDir, f));
    const agentTarget = 'sockmesh-control-plane.sockmesh-system.svc';
    const ads = new AdsClient({
      target: address,
      node: { id: 'node-a' },
      credentials: credentials.createSsl(pem('ca.crt'), pem('tls.key'), pem('tls.crt'), {
        checkServerIdentity: (_host, cert) => checkServerIdentity(agentTarget, cert),
      }),
      logger: nullLogger,
    });
    try {
      const updated = once(ads, 'update');
      ads.start();
      await updated;
      assert.equal(ads.isConnected, true);
    } finally {
      ads.close();
    }
    // Without a client certificate the control plane refuses the connection.
    const anonymous = new AdsClient({
      target: address,
      node: { id: 'node-b' },
      credentials: credentials.createSsl(pem('ca.crt'), null, null, {
        checkServerIdentity: (_host, cert) => checkServerIdentity(agentTarget, cert),
      }),
      logger: nullLogger,
      backoff: { initialMs: 50, maxMs: 100 },
    });
    let anonymousUpdates = 0;
    anonymous.on('update', () => anonymousUpdates++);
    anonymous.start();
    await new Promise((r) => setTimeout(r, 1000));
    anonymous.close();
    assert.equal(anonymousUpdates, 0);

    cp.kill('SIGTERM');
    const [code] = (await once(cp, 'exit')) as [number | null];
    assert.equal(code, 0, stderr);
  });

  it('helm uninstall removes the release and keeps the CRDs', async () => {
    const r = await helm.run(['uninstall', 'sockmesh', '-n', NS]);
    assert.equal(r.code, 0, r.stderr);
    await kubectl(['get', 'crd', 'trafficpolicies.sockmesh.io', 'authorizationpolicies.sockmesh.io']);
    const left = await cluster!.kubectl(['-n', NS, 'get', 'daemonset', 'sockmesh-agent']);
    assert.notEqual(left.code, 0);
  });

  async function runCli(args: string[]): Promise<string> {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'cli/main.ts'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => {
      out += d;
    });
    child.stderr!.on('data', (d) => {
      err += d;
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, `sockmesh ${args.join(' ')}: ${err}`);
    return out;
  }
});

async function waitFor<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  context: () => string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; ${context()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
