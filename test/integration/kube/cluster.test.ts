import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { kubeBinaries } from '../../../lab/kube/binaries.js';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import { pidAlive } from '../../../lab/state.js';

const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;
const NS = 'kt';
const POD_IP = '10.244.1.5';

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('kube test cluster (kine + kube-apiserver + kube-controller-manager)', {
  skip: notRoot
    ? 'needs root (the cluster is recorded and guarded like a test bed: a cgroup per run)'
    : false,
}, () => {
  let cluster: KubeCluster | undefined;

  before(async () => {
    // Missing binaries are a failure with the build command, never a skip.
    kubeBinaries();
    cluster = await startKubeCluster({ name: 'kt', gatewayCrds: true });
  });

  after(async () => {
    await cluster?.stop();
  });

  async function kubectl(args: string[], input?: string): Promise<string> {
    const res = await cluster!.kubectl(args, input === undefined ? {} : { input });
    assert.equal(res.code, 0, `kubectl ${args.join(' ')}: ${res.stderr}`);
    return res.stdout;
  }

  async function getJson<T>(args: string[]): Promise<T> {
    return JSON.parse(await kubectl(['get', ...args, '-o', 'json'])) as T;
  }

  it('serves the Gateway API CRDs and a ClusterIP from the lab service range', async () => {
    const crds = await kubectl(['get', 'crd', '-o', 'name']);
    assert.match(crds, /httproutes\.gateway\.networking\.k8s\.io/);
    assert.match(crds, /tcproutes\.gateway\.networking\.k8s\.io/);
    const svc = await getJson<{ spec: { clusterIP: string } }>(['service', 'kubernetes', '-n', 'default']);
    assert.equal(svc.spec.clusterIP, '10.96.0.1');
  });

  it('writes a ready EndpointSlice for a bound, Running pod', async () => {
    await kubectl(['create', 'namespace', NS]);
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node1' } },
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'reviews', namespace: NS },
            spec: { selector: { app: 'reviews' }, ports: [{ name: 'http', port: 9080 }] },
          },
        ],
      }),
    );
    // The ServiceAccount admission plugin needs the namespace's default account first.
    await until('serviceaccount default', async () => {
      const res = await cluster!.kubectl(['get', 'serviceaccount', 'default', '-n', NS]);
      return res.code === 0 ? true : undefined;
    });
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'reviews-1', namespace: NS, labels: { app: 'reviews' } },
        spec: {
          nodeName: 'node1',
          containers: [{ name: 'app', image: 'reviews:1', ports: [{ containerPort: 9080 }] }],
        },
      }),
    );
    const now = new Date().toISOString();
    await kubectl([
      'patch',
      'pod',
      'reviews-1',
      '-n',
      NS,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({
        status: {
          phase: 'Running',
          podIP: POD_IP,
          podIPs: [{ ip: POD_IP }],
          hostIP: '10.10.0.1',
          conditions: [
            { type: 'Ready', status: 'True', lastTransitionTime: now },
            { type: 'ContainersReady', status: 'True', lastTransitionTime: now },
          ],
        },
      }),
    ]);
    const svc = await getJson<{ spec: { clusterIP: string } }>(['service', 'reviews', '-n', NS]);
    assert.match(svc.spec.clusterIP, /^10\.96\./);

    interface Slices {
      items: Array<{
        endpoints?: Array<{ addresses: string[]; conditions: { ready?: boolean }; nodeName?: string }>;
      }>;
    }
    const ep = await until('a ready endpoint in the EndpointSlice of reviews', async () => {
      const slices = await getJson<Slices>([
        'endpointslices',
        '-n',
        NS,
        '-l',
        'kubernetes.io/service-name=reviews',
      ]);
      return slices.items
        .flatMap((s) => s.endpoints ?? [])
        .find((e) => e.addresses.includes(POD_IP) && e.conditions.ready === true);
    });
    assert.equal(ep.nodeName, 'node1');
  });

  it('keeps every object across an API server restart', async () => {
    const before = cluster!.pids();
    await cluster!.restartApiServer();
    assert.equal(cluster!.pids().length, before.length);
    assert.notDeepEqual(cluster!.pids(), before, 'kube-apiserver has a new pid');
    await getJson(['namespace', NS]);
    await getJson(['node', 'node1']);
    await getJson(['service', 'reviews', '-n', NS]);
    const pod = await getJson<{ status: { podIP: string } }>(['pod', 'reviews-1', '-n', NS]);
    assert.equal(pod.status.podIP, POD_IP);
    const slices = await kubectl(['get', 'endpointslices', '-n', NS, '-o', 'jsonpath={..addresses}']);
    assert.match(slices, new RegExp(POD_IP.replaceAll('.', '\\.')));
  });

  it('stop() ends every process and removes its directory', async () => {
    const c = cluster!;
    const pids = c.pids();
    assert.ok(pids.length >= 3, `expected kine, kube-apiserver and kube-controller-manager, got ${pids}`);
    await c.stop();
    cluster = undefined;
    assert.deepEqual(
      pids.filter((p) => pidAlive(p)),
      [],
    );
    assert.deepEqual(c.pids(), []);
    assert.equal(existsSync(c.dir), false);
    if (c.runId) assert.equal(existsSync(`/run/sockmesh/lab-${c.runId}.json`), false);
  });
});
