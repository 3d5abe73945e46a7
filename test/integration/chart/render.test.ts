/**
 * charts/sockmesh as helm renders it (no cluster): lint, what the default and non-default values
 * produce, the agent's rendered command line parsed by the agent's own option parser, and
 * values.schema.json refusing bad values. test/integration/chart/apiserver.test.ts sends the same
 * renders to a real kube-apiserver.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse } from 'yaml';
import { agentOptions } from '../../../cli/commands/agent.js';
import { kubeBinaries } from '../../../lab/kube/binaries.js';
import { at, CHART, find, Helm, type KubeObject, NON_DEFAULT, ROOT } from './helm.js';

type Container = {
  name: string;
  args: string[];
  env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  volumeMounts: { name: string; mountPath: string }[];
  readinessProbe?: unknown;
  livenessProbe?: unknown;
  ports?: unknown[];
  securityContext?: Record<string, unknown>;
};
type Volume = {
  name: string;
  hostPath?: { path: string };
  secret?: { secretName: string };
  emptyDir?: unknown;
};

function podSpec(
  o: KubeObject,
): { containers: Container[]; initContainers?: Container[]; volumes: Volume[] } & Record<string, unknown> {
  return at(o, 'spec', 'template', 'spec') as ReturnType<typeof podSpec>;
}
function container(o: KubeObject, name: string): Container {
  const c = podSpec(o).containers.find((x) => x.name === name);
  assert.ok(c, `${o.kind}/${o.metadata.name} has no container ${name}`);
  return c;
}
function mountOf(o: KubeObject, c: Container, path: string): Volume {
  const m = c.volumeMounts.find((x) => x.mountPath === path);
  assert.ok(m, `${c.name} mounts nothing at ${path}`);
  const v = podSpec(o).volumes.find((x) => x.name === m.name);
  assert.ok(v, `volume ${m.name} is not declared`);
  return v;
}
function flag(args: string[], name: string): string | undefined {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a?.slice(name.length + 3);
}

/** The RBAC table of docs/kubernetes.md as `group/resource:verb` strings: the chart must grant exactly that. */
function documentedRbac(): string[] {
  const md = readFileSync(join(ROOT, 'docs', 'kubernetes.md'), 'utf8');
  const table = md.slice(md.indexOf('**RBAC** the control plane needs'));
  const out: string[] = [];
  for (const line of table.split('\n').slice(1)) {
    if (!line.startsWith('|')) {
      if (out.length) break;
      continue;
    }
    const cells = line.split('|').slice(1, -1);
    if (cells.length !== 3 || !cells[0]!.includes('`')) continue;
    const ticks = (cell: string) => [...cell.matchAll(/`([^`]*)`/g)].map((m) => m[1]!);
    const group = ticks(cells[0]!)[0] === '""' ? '' : ticks(cells[0]!)[0]!;
    for (const r of ticks(cells[1]!)) for (const v of ticks(cells[2]!)) out.push(`${group}/${r}:${v}`);
  }
  return out.sort();
}

function renderedRbac(role: KubeObject): string[] {
  const out: string[] = [];
  for (const rule of role.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[])
    for (const g of rule.apiGroups)
      for (const r of rule.resources) for (const v of rule.verbs) out.push(`${g}/${r}:${v}`);
  return out.sort();
}

const helm = new Helm(kubeBinaries().helm);
const scratch = mkdtempSync(join(tmpdir(), 'sockmesh-chart-render-'));
after(() => {
  helm.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

describe('charts/sockmesh: helm lint', () => {
  for (const [what, args] of [
    ['default values', []],
    ['default values, --strict', ['--strict']],
    ['non-default values, --strict', ['--strict', ...NON_DEFAULT.flatMap((s) => ['--set', s])]],
  ] as const) {
    it(`passes with ${what}`, async () => {
      const r = await helm.run(['lint', CHART, ...args]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      assert.doesNotMatch(r.stdout, /\[(WARNING|ERROR)\]/);
    });
  }
});

describe('charts/sockmesh: default render', () => {
  let objs: KubeObject[] = [];

  it('renders the three parts: CRDs, control plane, node agent', async () => {
    objs = await helm.template('sockmesh', 'sockmesh-system');
    assert.deepEqual(objs.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
      'ClusterRole/sockmesh-control-plane',
      'ClusterRoleBinding/sockmesh-control-plane',
      'CustomResourceDefinition/authorizationpolicies.sockmesh.io',
      'CustomResourceDefinition/canaryguards.sockmesh.io',
      'CustomResourceDefinition/trafficpolicies.sockmesh.io',
      'DaemonSet/sockmesh-agent',
      'Deployment/sockmesh-control-plane',
      'PodDisruptionBudget/sockmesh-control-plane',
      'Role/sockmesh-control-plane',
      'RoleBinding/sockmesh-control-plane',
      'Secret/sockmesh-xds-client',
      'Secret/sockmesh-xds-server',
      'Service/sockmesh-control-plane',
      'ServiceAccount/sockmesh-agent',
      'ServiceAccount/sockmesh-control-plane',
    ]);
    for (const o of objs.filter(
      (x) => x.kind !== 'CustomResourceDefinition' && !x.kind.startsWith('Cluster'),
    ))
      assert.equal(o.metadata.namespace, 'sockmesh-system', `${o.kind}/${o.metadata.name}`);
  });

  it('templates the CRDs from files/crds unchanged, kept on uninstall', () => {
    const dir = join(CHART, 'files', 'crds');
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    assert.equal(files.length, 3);
    for (const f of files) {
      const want = parse(readFileSync(join(dir, f), 'utf8')) as KubeObject;
      const got = find(objs, 'CustomResourceDefinition', want.metadata.name);
      assert.equal(got.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
      const { annotations: _, ...gotMeta } = got.metadata;
      assert.deepEqual({ ...got, metadata: gotMeta }, want, f);
    }
  });

  it('grants the control plane exactly the RBAC docs/kubernetes.md lists', () => {
    const doc = documentedRbac();
    assert.ok(doc.length >= 14, `parsed ${doc.length} rules from docs/kubernetes.md`);
    assert.deepEqual(renderedRbac(find(objs, 'ClusterRole')), doc);
    const binding = find(objs, 'ClusterRoleBinding');
    assert.deepEqual(binding.subjects, [
      { kind: 'ServiceAccount', name: 'sockmesh-control-plane', namespace: 'sockmesh-system' },
    ]);
    // Leader election: its one Lease in the release namespace, nothing cluster-wide.
    assert.deepEqual(find(objs, 'Role').rules, [
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        resourceNames: ['sockmesh-control-plane'],
        verbs: ['get', 'update'],
      },
    ]);
    assert.deepEqual(find(objs, 'RoleBinding').subjects, binding.subjects);
  });

  it('elects a leader on the Lease the Role grants, the pod name as identity; replicas prefer other nodes', () => {
    const d = find(objs, 'Deployment');
    const c = container(d, 'control-plane');
    assert.equal(flag(c.args, 'leader-lease'), 'sockmesh-system/sockmesh-control-plane');
    assert.equal(flag(c.args, 'leader-lease-duration'), '15s');
    assert.equal(flag(c.args, 'leader-id'), '$(POD_NAME)');
    assert.equal(flag(c.args, 'leader-address'), '$(POD_IP):15010');
    assert.deepEqual(
      at(
        c.env?.find((e) => e.name === 'POD_IP'),
        'valueFrom',
      ),
      { fieldRef: { fieldPath: 'status.podIP' } },
    );
    assert.deepEqual(
      at(
        c.env?.find((e) => e.name === 'POD_NAME'),
        'valueFrom',
      ),
      { fieldRef: { fieldPath: 'metadata.name' } },
    );
    const term = at(
      podSpec(d),
      'affinity',
      'podAntiAffinity',
      'preferredDuringSchedulingIgnoredDuringExecution',
    ) as { podAffinityTerm: { topologyKey: string } }[];
    assert.equal(term[0]?.podAffinityTerm.topologyKey, 'kubernetes.io/hostname');
  });

  it('2 replicas, a PodDisruptionBudget keeps one; a lone replica has none (it would block drains)', async () => {
    assert.equal(at(find(objs, 'Deployment'), 'spec', 'replicas'), 2);
    const one = await helm.template('sockmesh', 'sockmesh-system', ['controlPlane.replicas=1']);
    assert.equal(
      one.some((o) => o.kind === 'PodDisruptionBudget'),
      false,
    );
    const pdb = find(objs, 'PodDisruptionBudget');
    assert.equal(at(pdb, 'spec', 'minAvailable'), 1);
    assert.deepEqual(at(pdb, 'spec', 'selector', 'matchLabels'), {
      'app.kubernetes.io/name': 'sockmesh-control-plane',
      'app.kubernetes.io/instance': 'sockmesh',
    });
  });

  it('runs the control plane in-cluster with mTLS xDS and no admin endpoint', () => {
    const d = find(objs, 'Deployment');
    const c = container(d, 'control-plane');
    assert.equal(c.args[0], 'control-plane');
    assert.equal(flag(c.args, 'listen'), '0.0.0.0:15010');
    for (const f of ['tls-cert', 'tls-key', 'tls-ca'])
      assert.match(flag(c.args, f) ?? '', /^\/etc\/sockmesh\/xds\//);
    // The service account, not a kubeconfig or a directory; no plaintext or admin listener.
    for (const f of ['kubeconfig', 'manifests', 'admin', 'insecure-listen', 'unix'])
      assert.equal(
        c.args.some((a) => a.startsWith(`--${f}`)),
        false,
        `--${f} must not be rendered`,
      );
    assert.equal(mountOf(d, c, '/etc/sockmesh/xds').secret?.secretName, 'sockmesh-xds-server');
    assert.ok(c.readinessProbe && c.livenessProbe);
    assert.equal(at(podSpec(d), 'serviceAccountName'), 'sockmesh-control-plane');
    const svc = find(objs, 'Service');
    assert.deepEqual(
      (at(svc, 'spec', 'ports') as { port: number }[]).map((p) => p.port),
      [15010],
    );
  });

  it('generates xDS certificates whose server name is the address agents dial', async () => {
    const { X509Certificate } = await import('node:crypto');
    const server = find(objs, 'Secret', 'xds-server').data as Record<string, string>;
    const client = find(objs, 'Secret', 'xds-client').data as Record<string, string>;
    const cert = new X509Certificate(Buffer.from(server['tls.crt']!, 'base64'));
    const ca = new X509Certificate(Buffer.from(server['ca.crt']!, 'base64'));
    assert.equal(
      cert.checkHost('sockmesh-control-plane.sockmesh-system.svc'),
      'sockmesh-control-plane.sockmesh-system.svc',
    );
    assert.ok(cert.verify(ca.publicKey));
    assert.ok(new X509Certificate(Buffer.from(client['tls.crt']!, 'base64')).verify(ca.publicKey));
    assert.equal(client['ca.crt'], server['ca.crt']);
    const agentArgs = container(find(objs, 'DaemonSet'), 'agent').args;
    assert.equal(flag(agentArgs, 'control-plane'), 'sockmesh-control-plane.sockmesh-system.svc:15010');
  });

  it('runs one agent per node that a rollout can hand over from', () => {
    const ds = find(objs, 'DaemonSet');
    const spec = podSpec(ds);
    assert.deepEqual(at(ds, 'spec', 'updateStrategy'), {
      type: 'RollingUpdate',
      rollingUpdate: { maxUnavailable: 0, maxSurge: 1 },
    });
    assert.equal(spec.hostNetwork, true);
    assert.equal(spec.hostPID, true);
    assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet');
    assert.equal(spec.priorityClassName, 'system-node-critical');
    assert.equal(spec.automountServiceAccountToken, false);
    const c = container(ds, 'agent');
    // hostNetwork turns container ports into host ports: the surge pod could never be scheduled.
    assert.equal(c.ports, undefined);
    const drain = Number(flag(c.args, 'drain-timeout'));
    assert.equal(drain, 30);
    assert.ok((spec.terminationGracePeriodSeconds as number) > drain);
    // Readiness is this process's, through the file the agent keeps, in a per-pod emptyDir.
    const readyFile = flag(c.args, 'ready-file')!;
    assert.deepEqual(at(c.readinessProbe, 'exec', 'command'), ['test', '-e', readyFile]);
    assert.ok(mountOf(ds, c, dirname(readyFile)).emptyDir);
    assert.equal(at(c.livenessProbe, 'httpGet', 'port'), 15020);
    // Host state the agent shares with the node and with its successor.
    assert.equal(mountOf(ds, c, '/sys/fs/bpf').hostPath?.path, '/sys/fs/bpf');
    assert.equal(mountOf(ds, c, '/sys/fs/cgroup').hostPath?.path, '/sys/fs/cgroup');
    assert.equal(mountOf(ds, c, '/run/sockmesh').hostPath?.path, '/run/sockmesh');
    assert.match(flag(c.args, 'handoff-socket')!, /^\/run\/sockmesh\//);
    assert.equal(flag(c.args, 'cgroup'), '/sys/fs/cgroup');
    assert.match(flag(c.args, 'bpffs')!, /^\/sys\/fs\/bpf\//);
    // CA mode: the Secret copied into a writable in-memory directory by the init container.
    assert.equal(flag(c.args, 'ca-dir'), '/var/lib/sockmesh/ca');
    assert.ok(mountOf(ds, c, '/var/lib/sockmesh/ca').emptyDir);
    const init = spec.initContainers?.find((x) => x.name === 'ca-dir');
    assert.ok(init);
    assert.equal(mountOf(ds, init, '/etc/sockmesh/ca-secret').secret?.secretName, 'sockmesh-ca');
    assert.equal(flag(c.args, 'workers'), '1');
    assert.equal(c.args.includes('--accelerate'), false);
    assert.deepEqual(at(c.securityContext, 'capabilities', 'add'), ['SYS_ADMIN', 'SYS_PTRACE']);
    assert.deepEqual(at(c.securityContext, 'capabilities', 'drop'), ['ALL']);
  });

  it("renders an agent command line the agent's own parser accepts, with the rendered client certificate", () => {
    const ds = find(objs, 'DaemonSet');
    const c = container(ds, 'agent');
    // What the kubelet does: $(VAR) from the downward API, Secret volumes as files.
    const env: Record<string, string> = { NODE_NAME: 'node-a', HOST_IP: '10.0.0.5' };
    for (const e of c.env ?? []) if (e.valueFrom) assert.ok(e.name in env, `unexpected env ${e.name}`);
    const mountRoot = join(scratch, 'default');
    const secretMount = c.volumeMounts.find((m) => m.mountPath === '/etc/sockmesh/xds')!;
    const secret = find(objs, 'Secret', 'xds-client').data as Record<string, string>;
    mkdirSync(join(mountRoot, secretMount.mountPath), { recursive: true });
    for (const [k, v] of Object.entries(secret))
      writeFileSync(join(mountRoot, secretMount.mountPath, k), Buffer.from(v, 'base64'));
    const argv = c.args
      .slice(1)
      .map((a) => a.replace(/\$\((\w+)\)/g, (_, k: string) => env[k] ?? `$(${k})`))
      .map((a) => a.replace('=/etc/sockmesh/xds/', `=${join(mountRoot, '/etc/sockmesh/xds')}/`));
    assert.equal(c.args[0], 'agent');
    const { agent, readyFile } = agentOptions(argv);
    assert.equal(agent.nodeName, 'node-a');
    assert.equal(agent.proxyIp, '10.0.0.5');
    assert.equal(agent.tunnelIp, '10.0.0.5');
    assert.equal(agent.handoff?.socketPath, '/run/sockmesh/agent-node-a.sock');
    assert.equal(agent.handoff?.drainTimeoutMs, 30_000);
    assert.equal(agent.caDir, '/var/lib/sockmesh/ca');
    assert.equal(agent.workers, 1);
    assert.equal(readyFile, '/var/run/sockmesh-pod/ready');
    assert.equal(agent.controlPlaneTls?.cert.toString('base64'), secret['tls.crt']);
    assert.equal(agent.controlPlaneTls?.ca.toString('base64'), secret['ca.crt']);
  });
});

describe('charts/sockmesh: non-default values', () => {
  it('SPIRE socket instead of the CA, acceleration, 2 workers, no CRDs, another namespace', async () => {
    const objs = await helm.template('mesh', 'mesh-infra', NON_DEFAULT);
    assert.equal(
      objs.some((o) => o.kind === 'CustomResourceDefinition'),
      false,
    );
    for (const o of objs.filter((x) => x.metadata.namespace !== undefined))
      assert.equal(o.metadata.namespace, 'mesh-infra');
    assert.deepEqual(find(objs, 'ClusterRoleBinding').subjects, [
      { kind: 'ServiceAccount', name: 'mesh-sockmesh-control-plane', namespace: 'mesh-infra' },
    ]);
    const ds = find(objs, 'DaemonSet');
    const c = container(ds, 'agent');
    const { agent } = agentOptions(
      c.args
        .slice(1)
        .map((a) => a.replace('$(NODE_NAME)', 'n1').replace('$(HOST_IP)', '10.1.0.9'))
        .filter((a) => !a.startsWith('--control-plane-tls') && !a.startsWith('--kubelet-cgroup-root')),
    );
    assert.equal(agent.workloadApi, 'unix:///run/spire/sockets/agent.sock');
    assert.equal(agent.caDir, undefined);
    assert.equal(agent.accelerate, true);
    assert.equal(agent.workers, 2);
    assert.equal(agent.cgroupDriver, 'systemd');
    assert.equal(agent.handoff?.drainTimeoutMs, 90_000);
    assert.equal(flag(c.args, 'kubelet-cgroup-root'), '/custom');
    assert.equal(flag(c.args, 'control-plane'), 'mesh-sockmesh-control-plane.mesh-infra.svc:15010');
    assert.equal(mountOf(ds, c, '/run/spire/sockets').hostPath?.path, '/run/spire/sockets');
    assert.equal(podSpec(ds).initContainers, undefined);
    assert.equal(podSpec(ds).terminationGracePeriodSeconds, 105);
    assert.equal(
      c.env?.find((e) => e.name === 'SOCKMESH_LOG_LEVEL') &&
        at(
          c.env.find((e) => e.name === 'SOCKMESH_LOG_LEVEL'),
          'value',
        ),
      'debug',
    );
    const cp = container(find(objs, 'Deployment'), 'control-plane');
    assert.equal(flag(cp.args, 'trust-domain'), 'prod.example.org');
  });

  it("spire-delegated: the agent on SPIRE's admin socket (Delegated Identity API), neither CA nor Workload API", async () => {
    const objs = await helm.template('sockmesh', 'sockmesh-system', [
      'identity.mode=spire-delegated',
      'identity.spire.adminSocketDir=/run/spire/admin',
    ]);
    const ds = find(objs, 'DaemonSet');
    const c = container(ds, 'agent');
    const { agent } = agentOptions(
      c.args
        .slice(1)
        .map((a) => a.replace('$(NODE_NAME)', 'n1').replace('$(HOST_IP)', '10.1.0.9'))
        .filter((a) => !a.startsWith('--control-plane-tls') && !a.startsWith('--kubelet-cgroup-root')),
    );
    assert.equal(agent.spireAdminSocket, '/run/spire/admin/admin.sock');
    assert.equal(agent.workloadApi, undefined);
    assert.equal(agent.caDir, undefined);
    assert.equal(mountOf(ds, c, '/run/spire/admin').hostPath?.path, '/run/spire/admin');
    assert.equal(podSpec(ds).initContainers, undefined);
    assert.ok(
      !c.volumeMounts?.some((m) => m.mountPath === '/run/spire/agent-sockets'),
      'no Workload API mount',
    );
  });

  it('privileged instead of capabilities; user-provided xDS Secrets', async () => {
    const objs = await helm.template('sockmesh', 'sockmesh-system', [
      'agent.privileged=true',
      'controlPlane.xds.tls.generate=false',
      'controlPlane.xds.tls.serverSecret=xds-server',
      'controlPlane.xds.tls.clientSecret=xds-client',
    ]);
    assert.equal(
      objs.some((o) => o.kind === 'Secret'),
      false,
    );
    const ds = find(objs, 'DaemonSet');
    const c = container(ds, 'agent');
    assert.deepEqual(c.securityContext, { privileged: true });
    assert.equal(mountOf(ds, c, '/etc/sockmesh/xds').secret?.secretName, 'xds-client');
    const d = find(objs, 'Deployment');
    assert.equal(
      mountOf(d, container(d, 'control-plane'), '/etc/sockmesh/xds').secret?.secretName,
      'xds-server',
    );
  });

  it('the parts can be installed on their own (CRDs only)', async () => {
    const objs = await helm.template('base', 'sockmesh-system', [
      'controlPlane.enabled=false',
      'agent.enabled=false',
    ]);
    assert.deepEqual([...new Set(objs.map((o) => o.kind))], ['CustomResourceDefinition']);
  });
});

describe('charts/sockmesh: values.schema.json', () => {
  for (const [set, message] of [
    ['agent.workers=0', /at '\/agent\/workers': minimum: got 0, want 1/],
    ['identity.mode=vault', /at '\/identity\/mode': value must be one of 'ca', 'spire'/],
    ['trustDomain=Prod Domain', /at '\/trustDomain': .*pattern/],
    ['controlPlane.replicas=8', /at '\/controlPlane\/replicas': maximum: got 8, want 7/],
    ['controlPlane.leaseDuration=500ms', /at '\/controlPlane\/leaseDuration': .*pattern/],
    ['agent.drainTimeout=30', /at '\/agent': additional properties 'drainTimeout' not allowed/],
    ['logLevel=verbose', /at '\/logLevel': value must be one of 'debug', 'info', 'warn', 'error'/],
    ['agent.capabilities={CAP_BPF}', /at '\/agent\/capabilities\/0'/],
    ['identity.spire.socketDir=run/spire', /at '\/identity\/spire\/socketDir': .*pattern/],
    ['agent.proxyIp=node-a', /at '\/agent\/proxyIp': .*pattern/],
  ] as const) {
    it(`refuses ${set}`, async () => {
      const r = await helm.run(['template', 'sockmesh', CHART, '--set', set]);
      assert.notEqual(r.code, 0, `helm accepted ${set}`);
      assert.match(r.stderr, /values don't meet the specifications of the schema/);
      assert.match(r.stderr, message);
    });
  }

  it('refuses generate=false without the Secrets to use, naming the value', async () => {
    const r = await helm.run(['template', 'sockmesh', CHART, '--set', 'controlPlane.xds.tls.generate=false']);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /controlPlane\.xds\.tls\.serverSecret is required when controlPlane\.xds\.tls\.generate is false/,
    );
  });
});
