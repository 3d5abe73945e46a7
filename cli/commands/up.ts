import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AgentStatus, LocalMesh } from '../../lab/mesh.js';
import { TestBed } from '../../lab/testbed.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { table } from '../table.js';

const REPO = fileURLToPath(
  new URL(import.meta.url.endsWith('.ts') ? '../../' : '../../../', import.meta.url),
);
export const DEFAULT_EXAMPLE = join(REPO, 'examples', 'shop');

/** Runs a tiny fetch loop inside a pod, so the kernel captures it like any app; returns counts by version. */
async function sample(
  mesh: LocalMesh,
  from: string,
  url: string,
  n: number,
  headers: Record<string, string> = {},
) {
  const script = `(async()=>{const out={};for(let i=0;i<${n};i++){try{const r=await fetch(${JSON.stringify(url)},{headers:${JSON.stringify(headers)}});const t=await r.text();let k=String(r.status);if(r.status===200){const j=JSON.parse(t);k=j.version+' '+j.node+' '+(j.caller??'-')}out[k]=(out[k]??0)+1}catch(e){const k='error '+(e.cause?.code??e.message);out[k]=(out[k]??0)+1}}process.stdout.write(JSON.stringify(out))})()`;
  const res = await mesh.exec(from, [process.execPath, '-e', script], 60_000);
  if (res.code !== 0)
    throw new SockmeshError('SOCKMESH_E_LAB', `demo traffic from ${from} failed: ${res.stderr.trim()}`);
  return JSON.parse(res.stdout) as Record<string, number>;
}

export async function describeMesh(
  mesh: LocalMesh,
  statuses: Map<string, AgentStatus | { error: string }>,
): Promise<string> {
  const { bed, model } = mesh;
  const out: string[] = [];
  out.push(
    table(
      ['NODE', 'UNDERLAY', 'POD CIDR', 'AGENT', 'XDS', 'METRICS (inside the node netns)'],
      bed.nodes.map((n) => {
        const s = statuses.get(n.name);
        const ok = s && !('error' in s);
        return [
          n.name,
          n.underlayIp,
          n.podCidr,
          ok ? 'ready' : `down (${s && 'error' in s ? s.error : '?'})`,
          ok ? `${s.xds.connected ? 'connected' : 'DISCONNECTED'} v${s.xds.versions.CDS ?? '-'}` : '-',
          `http://${n.underlayIp}:15020/metrics`,
        ];
      }),
    ),
  );
  const identityOf = new Map<string, string>();
  for (const s of statuses.values())
    if (!('error' in s)) for (const p of s.pods) identityOf.set(p.pod, p.spiffeId);
  out.push(
    table(
      ['POD', 'IP', 'NODE', 'MESHED', 'IDENTITY'],
      bed.pods.map((p) => {
        const key = `${p.namespace}/${p.name}`;
        const ns = model.namespaces.get(p.namespace);
        const meshed = ns?.meshed !== true ? 'no' : ns.mtlsMode === 'permissive' ? 'permissive' : 'yes';
        return [key, p.ip, p.node, meshed, identityOf.get(key) ?? '-'];
      }),
    ),
  );
  out.push(
    table(
      ['SERVICE', 'VIP', 'PORTS'],
      [...model.services.values()].map((s) => [
        `${s.name}.${s.namespace}`,
        s.clusterIP ?? '-',
        s.ports.map((p) => `${p.port}/${p.protocol}`).join(','),
      ]),
    ),
  );
  return out.join('\n');
}

async function statusesOf(mesh: LocalMesh): Promise<Map<string, AgentStatus | { error: string }>> {
  const entries = await Promise.all(
    mesh.bed.nodes.map(async (n) => [n.name, await mesh.agentStatus(n.name)] as const),
  );
  return new Map(entries);
}

async function demo(mesh: LocalMesh, out: NodeJS.WritableStream): Promise<void> {
  const reviews = 'http://reviews.shop.svc.cluster.local:9080/';
  out.write(
    '\nCanary: 200 requests from shop/frontend-1 to reviews.shop:9080 (HTTPRoute shop/reviews splits 90/10)\n',
  );
  const split = await sample(mesh, 'shop/frontend-1', reviews, 200);
  const byVersion = new Map<string, number>();
  for (const [k, n] of Object.entries(split))
    byVersion.set(k.split(' ')[0]!, (byVersion.get(k.split(' ')[0]!) ?? 0) + n);
  for (const [v, n] of [...byVersion].sort())
    out.write(`  ${v.padEnd(4)} ${String(n).padStart(4)}  (${((100 * n) / 200).toFixed(1)}%)\n`);
  out.write(
    '\nmTLS: frontend (node1) -> reviews v2 (node2) through the HTTP/2 CONNECT tunnel on port 15008\n',
  );
  const canary = await sample(mesh, 'shop/frontend-1', reviews, 1, { 'x-canary': 'true' });
  for (const k of Object.keys(canary)) {
    const [version, node, caller] = k.split(' ');
    out.write(
      `  answered by reviews ${version} on ${node}; the caller it saw, from the client certificate: ${caller}\n`,
    );
  }
  out.write(
    '\nAuthorization: only the frontend may call reviews (AuthorizationPolicy shop/reviews-callers)\n',
  );
  const denied = await sample(mesh, 'shop/ratings-1', reviews, 1);
  out.write(`  shop/ratings-1 -> reviews: ${Object.keys(denied).join(', ')}\n`);
}

export const upCommand: Command = {
  usage: `Usage: sockmesh up [--manifests <dir>] [--run <id>] [--no-demo] [--workload-api]

Builds a local cluster out of network namespaces from a directory of
manifests (default: examples/shop): a netns per node (bridge, pod CIDR
10.244.<i>.0/24, underlay 10.10.0.<i>), a netns + cgroup per pod, then starts
the control plane, one agent per node (BPF capture, proxy, mTLS tunnel) and the
example workload in every pod. Then it shows the canary split, mTLS identity
and an authorization denial with real traffic (skip with --no-demo).

It keeps running after the command exits; 'sockmesh down' removes everything.
Running it again while a mesh is up only prints the mesh.

  --manifests <dir>   manifests to build from (Node, Namespace, Service, Pod, HTTPRoute, ...)
  --run <id>          run id (1-8 lowercase letters/digits) instead of a random one
  --no-demo           do not send the demo traffic
  --kube              on Kubernetes: a real kube-apiserver, kube-controller-manager
                      and kine on 127.0.0.1 (built by scripts/k8s/build.sh), a lab
                      kubelet that realizes the Pods bound to the lab's nodes, the
                      control plane reading the API, and the manifests applied with
                      kubectl; prints the KUBECONFIG ('sockmesh kubectl ...' uses it)
  --workload-api      agents take their SVIDs from a SPIFFE Workload API (one
                      'sockmesh identity serve' per node, standing in for a SPIRE
                      agent) instead of reading the CA themselves

Exit codes: 0 ready, 1 failure (everything built so far is removed), 3 precondition (root, kernel, tools).`,
  async run({ argv, stdout }) {
    const { values } = parseCommandArgs(
      argv,
      {
        manifests: { type: 'string' },
        run: { type: 'string' },
        'no-demo': { type: 'boolean' },
        'workload-api': { type: 'boolean' },
        kube: { type: 'boolean' },
      },
      false,
    );
    const running = TestBed.list().find((b) => b.persistent);
    if (running) {
      const mesh = await LocalMesh.attach(TestBed.attach(running.runId));
      stdout.write(`local mesh ${running.runId} is already running ('sockmesh down' removes it)\n\n`);
      stdout.write(`${await describeMesh(mesh, await statusesOf(mesh))}\n`);
      return EXIT.OK;
    }
    const started = performance.now();
    const mesh = await LocalMesh.start({
      manifestsDir: values.manifests ?? DEFAULT_EXAMPLE,
      ...(values.run ? { runId: values.run } : {}),
      ...(values['workload-api'] ? { workloadApi: true } : {}),
      ...(values.kube ? { kube: true } : {}),
      onProgress: (step) => stdout.write(`  - ${step}\n`),
    });
    mesh.bed.persist();
    stdout.write(
      `\nlocal mesh ${mesh.bed.runId} is up in ${((performance.now() - started) / 1000).toFixed(1)}s (logs: ${mesh.paths.logs})\n\n`,
    );
    const kube = mesh.kube;
    if (kube) stdout.write(`Kubernetes API ${kube.server}\nexport KUBECONFIG=${kube.kubeconfig}\n\n`);
    stdout.write(`${await describeMesh(mesh, await statusesOf(mesh))}\n`);
    if (!values['no-demo'] && mesh.model.services.has('shop/reviews')) await demo(mesh, stdout);
    stdout.write(`
Next:${kube ? '\n  sockmesh kubectl get pods,httproutes,authorizationpolicies -A' : ''}
  sockmesh exec shop/frontend-1 -- curl -s http://reviews.shop:9080/
  sockmesh canary shop/reviews           live split, success rate and latency per backend
  sockmesh status                        nodes, agents, pods, identities, BPF counters
  sockmesh down                          remove everything
`);
    return EXIT.OK;
  },
};

export { statusesOf };
