// The lab kubelet against a real kube-apiserver: nodes registered, pods realized as netns + cgroup
// in the kubelet's systemd layout (QoS from resources), status reported, the endpointslice controller
// reacting to it, and a delete tearing the pod down; the agent's cgroup lookup finds the pod by UID.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findCgroup2Mount } from '../../../lab/host.js';
import { kubeBinaries } from '../../../lab/kube/binaries.js';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import { LabKubelet } from '../../../lab/kube/kubelet.js';
import { TestBed } from '../../../lab/testbed.js';
import { PodCgroupLayout } from '../../../mesh-agent/agent/pod-cgroups.js';
import { KubeClient } from '../../../xds/sources/kube/client.js';
import { loadKubeconfig } from '../../../xds/sources/kube/config.js';
import { leftovers } from '../../helpers/lab.js';

const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const POD = (name: string, node: string, resources: string, extra = '') => `
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: kl, labels: {app: ${name}}}
spec:
  nodeName: ${node}
  containers:
    - name: app
      image: sockmesh.io/lab/example-app:local
      ports: [{containerPort: 8080}]
      ${resources}
${extra}`;

describe('lab kubelet', { skip: notRoot ? 'needs root (netns, cgroups)' : false }, () => {
  let cluster: KubeCluster | undefined;
  let bed: TestBed | undefined;
  let kubelet: LabKubelet | undefined;
  let client: KubeClient | undefined;

  before(async () => {
    kubeBinaries();
    bed = await TestBed.create({ nodes: 2 });
    cluster = await startKubeCluster({ name: 'kl', dir: join(bed.runDir, 'kube') });
    client = new KubeClient(loadKubeconfig(cluster.kubeconfig));
    kubelet = new LabKubelet({ bed, client, logsDir: bed.runDir });
    await kubelet.start();
  });

  after(async () => {
    await kubelet?.stop();
    await client?.close();
    await cluster?.stop();
    if (bed) {
      await bed.destroy();
      assert.deepEqual(leftovers(bed), []);
    }
  });

  async function kubectl(args: string[], input?: string): Promise<string> {
    const res = await cluster!.kubectl(args, input === undefined ? {} : { input });
    assert.equal(res.code, 0, `kubectl ${args.join(' ')}: ${res.stderr}`);
    return res.stdout;
  }

  it('registers every lab node as a Ready core v1 Node with its underlay address', async () => {
    const nodes = JSON.parse(await kubectl(['get', 'nodes', '-o', 'json'])) as {
      items: {
        metadata: { name: string };
        status: {
          addresses: { type: string; address: string }[];
          conditions: { type: string; status: string }[];
        };
      }[];
    };
    const byName = new Map(nodes.items.map((n) => [n.metadata.name, n]));
    for (const n of bed!.nodes) {
      const k = byName.get(n.name);
      assert.ok(k, `Node ${n.name}`);
      assert.deepEqual(
        k.status.addresses.find((a) => a.type === 'InternalIP'),
        { type: 'InternalIP', address: n.underlayIp },
      );
      assert.equal(k.status.conditions.find((c) => c.type === 'Ready')?.status, 'True');
    }
  });

  it('realizes pods of every QoS class in the kubelet systemd layout, reports Ready, and deletes them', async () => {
    await kubectl(['create', 'namespace', 'kl']);
    await kubectl(['create', 'serviceaccount', 'default', '-n', 'kl']).catch(() => '');
    await kubectl(
      ['apply', '-f', '-'],
      [
        POD('guaranteed', 'node1', 'resources: {limits: {cpu: 100m, memory: 64Mi}}'),
        POD('burstable', 'node1', 'resources: {requests: {cpu: 50m}}'),
        POD('besteffort', 'node2', ''),
        `apiVersion: v1
kind: Service
metadata: {name: besteffort, namespace: kl}
spec: {selector: {app: besteffort}, ports: [{port: 80, targetPort: 8080}]}
`,
      ].join('---\n'),
    );
    const expected = { guaranteed: 'Guaranteed', burstable: 'Burstable', besteffort: 'BestEffort' } as const;
    const mount = findCgroup2Mount();
    for (const [name, qos] of Object.entries(expected)) {
      const pod = await until(`pod ${name} Ready`, async () => {
        const p = JSON.parse(await kubectl(['get', 'pod', name, '-n', 'kl', '-o', 'json'])) as {
          metadata: { uid: string };
          spec: { nodeName: string };
          status: {
            qosClass: string;
            podIP?: string;
            phase?: string;
            conditions?: { type: string; status: string }[];
          };
        };
        return p.status.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? p : undefined;
      });
      assert.equal(pod.status.qosClass, qos, 'the API server computes the same QoS class');
      assert.equal(pod.status.phase, 'Running');
      bed!.reload();
      const lab = bed!.pod('kl', name);
      assert.equal(pod.status.podIP, lab.ip);
      const node = bed!.node(pod.spec.nodeName);
      const uid_ = pod.metadata.uid.replace(/-/g, '_');
      const q = qos.toLowerCase();
      const want =
        qos === 'Guaranteed'
          ? join(node.cgroupPath, 'kubepods.slice', `kubepods-pod${uid_}.slice`)
          : join(node.cgroupPath, 'kubepods.slice', `kubepods-${q}.slice`, `kubepods-${q}-pod${uid_}.slice`);
      assert.equal(lab.cgroupPath, want);
      // The workload runs in a container scope below the pod cgroup, as under a real runtime.
      const scope = lab.containerCgroups?.app;
      assert.ok(scope?.startsWith(`${want}/`) && scope.endsWith('.scope'), scope);
      assert.ok(scope !== undefined);
      const procs = readFileSync(join(scope, 'cgroup.procs'), 'utf8').trim();
      assert.notEqual(procs, '', 'the container process is in its scope');
      assert.ok(
        readFileSync(`/proc/${procs.split('\n')[0]}/cgroup`, 'utf8').includes(
          `0::${scope.slice(mount.length)}`,
        ),
      );
      // The agent's lookup: by UID alone, driver auto-detected, QoS not told.
      const found = new PodCgroupLayout({ kubeletRoot: node.cgroupPath }).resolve({
        namespace: 'kl',
        name,
        uid: pod.metadata.uid,
      });
      assert.deepEqual(found, { found: true, dir: want, layout: 'systemd' });
    }
    // The endpointslice controller saw the Ready pod behind the Service.
    await until('an EndpointSlice with the pod', async () => {
      const out = await kubectl([
        'get',
        'endpointslices',
        '-n',
        'kl',
        '-l',
        'kubernetes.io/service-name=besteffort',
        '-o',
        'json',
      ]);
      const ips = (JSON.parse(out) as { items: { endpoints?: { addresses: string[] }[] }[] }).items.flatMap(
        (s) => s.endpoints?.flatMap((e) => e.addresses) ?? [],
      );
      return ips.includes(bed!.pod('kl', 'besteffort').ip) ? true : undefined;
    });

    const gone = bed!.pod('kl', 'burstable');
    await kubectl(['delete', 'pod', 'burstable', '-n', 'kl', '--wait=true', '--timeout=30s']);
    await until('the burstable pod removed from its node', () => {
      bed!.reload();
      return bed!.pods.some((p) => p.name === 'burstable') ? undefined : true;
    });
    assert.equal(existsSync(gone.cgroupPath), false);
    assert.equal(existsSync(`/run/netns/${gone.netns}`), false);
    const left = await kubectl(['get', 'pods', '-n', 'kl', '-o', 'name']);
    assert.deepEqual(left.trim().split('\n').sort(), ['pod/besteffort', 'pod/guaranteed']);
  });
});
