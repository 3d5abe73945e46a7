import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { LocalMesh } from '../../lab/mesh.js';
import { FIXTURES } from '../helpers/lab.js';
import { call, eventually, load, metric, startShop } from '../helpers/mesh.js';

const OVERLAY = fileURLToPath(new URL('./manifests/', import.meta.url));
const REVIEWS = 'http://reviews.shop.svc.cluster.local:9080/';
const RATINGS = 'http://ratings.shop.svc.cluster.local:9080/';
const FRONTEND_ID = 'spiffe://cluster.local/ns/shop/sa/frontend';

function routes(v1: number, v2: number): string {
  return readFileSync(
    join(fileURLToPath(new URL('../../examples/shop/', import.meta.url)), '30-routes.yaml'),
    'utf8',
  )
    .replace('weight: 90', `weight: ${v1}`)
    .replace('weight: 10', `weight: ${v2}`);
}

interface Answer {
  status: number;
  body: string;
  flags: string | null;
  reason: string | null;
  error?: string;
}

/** One request from inside a pod, with the headers that tell who answered a denial. */
async function ask(mesh: LocalMesh, from: string, url: string): Promise<Answer> {
  const script = `fetch(${JSON.stringify(url)}).then(async r=>process.stdout.write(JSON.stringify({status:r.status,flags:r.headers.get('x-sockmesh-flags'),reason:r.headers.get('x-sockmesh-reason'),body:await r.text()}))).catch(e=>process.stdout.write(JSON.stringify({status:0,body:'',flags:null,reason:null,error:String(e.cause?.code??e.cause??e)})))`;
  return JSON.parse((await mesh.exec(from, [process.execPath, '-e', script], 20_000)).stdout) as Answer;
}

/** A TCP exchange with reviews-tcp from a pod: the first bytes that came back and how the socket ended. */
async function rawTcp(mesh: LocalMesh, from: string): Promise<{ data: string; error: string | null }> {
  const script =
    "const s=require('net').connect(9090,'reviews-tcp.shop.svc.cluster.local',()=>s.write('GET / HTTP/1.0\\r\\nhost: x\\r\\n\\r\\n'));let d='',e=null;s.on('data',c=>d+=c);s.on('error',x=>e=x.code);s.on('close',()=>process.stdout.write(JSON.stringify({data:d.slice(0,15),error:e})))";
  return JSON.parse((await mesh.exec(from, [process.execPath, '-e', script])).stdout) as {
    data: string;
    error: string | null;
  };
}

/** The RBAC body of a denial, naming the policy that decided. */
const RBAC_DENIED = /^RBAC: access denied \(.+\)\n$/;

describe('mesh agent end to end (2 nodes, real BPF, mTLS, xDS)', () => {
  let mesh: LocalMesh;
  /** A counter summed over the given agents' /metrics (each merged over its workers). */
  const counter = async (name: string, nodes = ['node1', 'node2']) =>
    (
      await Promise.all(nodes.map(async (n) => metric((await mesh.agentGet(n, '/metrics')).body, name)))
    ).reduce((a, b) => a + b, 0);
  /**
   * How much a counter grew since `baseline`, once it has grown by `expected` (a worker's counts
   * reach the agent's scrape a moment later); more than expected is returned as is, to be reported.
   */
  const grewBy = async (name: string, baseline: number, expected: number, nodes?: string[]) =>
    (await eventually(
      `${name} grew by ${expected} from ${baseline} (the value shown is the total)`,
      () => counter(name, nodes),
      (v) => v - baseline >= expected,
      5000,
    )) - baseline;

  before(async () => {
    // Each agent exports spans to an OTLP collector on its own node (started in the tracing test).
    // Two proxy workers per agent, whatever the machine: the breaker split, metric merging and crash
    // recovery across workers are part of what is tested here.
    mesh = await startShop([OVERLAY], { otlp: (n) => `http://${n.underlayIp}:4318`, agentWorkers: 2 });
  });
  after(async () => {
    await mesh?.stop();
  });

  it('catches a call by service name in the kernel, routes it and delivers the caller identity', async () => {
    const before = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as {
      bpf: Record<string, number>;
    };
    const res = await call(mesh, 'shop/frontend-1', REVIEWS);
    assert.equal(res.status, 200, res.error ?? res.body);
    const body = JSON.parse(res.body) as { service: string; caller: string };
    assert.equal(body.service, 'reviews');
    assert.equal(body.caller, FRONTEND_ID);
    const afterStats = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as {
      bpf: Record<string, number>;
    };
    const redirected = Object.keys(afterStats.bpf).find((k) => /redirect/i.test(k) && /connect/i.test(k))!;
    assert.ok(redirected, `no connect-redirect counter in ${JSON.stringify(afterStats.bpf)}`);
    assert.ok(afterStats.bpf[redirected]! > before.bpf[redirected]!, 'the kernel redirected the connect');
  });

  it('carries cross-node traffic inside mTLS: the underlay shows no plaintext', async () => {
    const marker = `plaintext-marker-${Math.random().toString(36).slice(2)}`;
    const fabric = mesh.bed.fabricNetns;
    const pcap = join(mesh.paths.runDir, 'underlay.pcap');
    const dump = mesh.bed.spawn(mesh.bed.host, [
      'ip',
      'netns',
      'exec',
      fabric,
      'tcpdump',
      // Immediate mode: otherwise packets still in the capture ring when we stop are never written.
      '--immediate-mode',
      // Debian's tcpdump drops to its own user, which cannot write into the run directory.
      '-Z',
      'root',
      '-i',
      'any',
      '-U',
      '-s',
      '0',
      '-w',
      pcap,
      'tcp',
    ]);
    await new Promise((r) => setTimeout(r, 700));
    try {
      // x-canary pins the request to reviews v2 on node2: frontend is on node1.
      const res = await call(mesh, 'shop/frontend-1', `${REVIEWS}${marker}`, {
        headers: { 'x-canary': 'true' },
      });
      assert.equal(res.status, 200, res.error);
      assert.equal((JSON.parse(res.body) as { node: string }).node, 'node2');
      // Positive control: an unmeshed pod's plaintext request to node2 does show up on the same capture.
      const plain = await call(mesh, 'legacy/client', `http://10.10.0.2:15020/control-${marker}`);
      assert.equal(plain.status, 404, plain.error);
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      dump.kill('SIGINT');
      await once(dump, 'exit');
    }
    const wire = readFileSync(pcap);
    assert.ok(wire.length > 2000, 'the capture saw the tunnel traffic');
    assert.ok(!wire.includes(`/${marker}`), 'the mesh request crossed the underlay in plaintext');
    assert.ok(
      wire.includes(`/control-${marker}`),
      'positive control: plaintext on the underlay is visible to the capture',
    );
  });

  it("continues the caller's W3C trace with a span per proxied request, exported over OTLP", async () => {
    const spans = join(mesh.paths.runDir, 'otlp.txt');
    const collector = mesh.bed.spawn(mesh.bed.node('node1'), [
      process.execPath,
      join(FIXTURES, 'otlp-collector.mjs'),
      '10.10.0.1',
      '4318',
      spans,
    ]);
    try {
      await once(collector.stdout!, 'data');
      const traceId = randomBytes(16).toString('hex');
      const parent = randomBytes(8).toString('hex');
      const res = await call(mesh, 'shop/frontend-1', REVIEWS, {
        headers: { traceparent: `00-${traceId}-${parent}-01` },
      });
      assert.equal(res.status, 200);
      const exported = await eventually(
        'the span reached the collector',
        async () => (existsSync(spans) ? readFileSync(spans, 'utf8') : ''),
        (t) => t.includes(traceId),
        15_000,
      );
      const line = exported.split('\n').find((l) => l.includes(traceId))!;
      assert.match(line, /^\/v1\/traces /);
      assert.ok(line.includes(parent), 'the proxy span is a child of the caller span');
    } finally {
      collector.kill();
    }
  });

  it('routes h2c (HTTP/2 prior knowledge, as gRPC speaks it) per request, locally and across nodes, with identity and authz', async () => {
    type Answer = { status: number; body: string; error?: string };
    const h2c = async (from: string, url: string, n: number) =>
      JSON.parse(
        (await mesh.exec(from, [process.execPath, join(FIXTURES, 'h2c-client.mjs'), url, String(n)])).stdout,
      ) as Answer[];
    const local = await h2c('shop/frontend-1', 'http://reviews.shop.svc.cluster.local:9091/h2', 20);
    assert.deepEqual([...new Set(local.map((a) => a.status))], [200], JSON.stringify(local[0]));
    const first = JSON.parse(local[0]!.body) as { protocol: string; caller: string; node: string };
    assert.equal(first.protocol, 'h2c');
    assert.equal(first.caller, FRONTEND_ID);
    const remote = await h2c('shop/frontend-1', 'http://10.96.0.24:9091/h2', 5);
    assert.deepEqual([...new Set(remote.map((a) => a.status))], [200], JSON.stringify(remote[0]));
    const viaTunnel = JSON.parse(remote[0]!.body) as { node: string; caller: string };
    assert.equal(viaTunnel.node, 'node2');
    assert.equal(viaTunnel.caller, FRONTEND_ID);
    const denied = await h2c('shop/ratings-1', 'http://reviews.shop.svc.cluster.local:9091/h2', 2);
    assert.deepEqual(
      denied.map((a) => a.status),
      [403, 403],
    );
    for (const d of denied) assert.match(d.body, RBAC_DENIED);
  });

  it('splits 90/10 per request over 2000 requests; the header match always hits the canary', async () => {
    const split = await load(mesh, 'shop/frontend-1', REVIEWS, 2000, 20);
    assert.equal(split.byStatus['200'], 2000, JSON.stringify(split));
    const v2 = (split.byVersion.v2 ?? 0) / 2000;
    // Binomial sd at p=0.1, n=2000 is 0.0067: +-0.03 is over 4 sd.
    assert.ok(Math.abs(v2 - 0.1) < 0.03, `v2 share ${v2}`);
    assert.deepEqual(split.byCaller, { [FRONTEND_ID]: 2000 });
    const canary = await load(mesh, 'shop/frontend-1', REVIEWS, 200, 10, { 'x-canary': 'true' });
    assert.deepEqual(canary.byVersion, { v2: 200 });
  });

  it('follows weight changes within 2 s on open keep-alive connections and fresh ones, losing no request', async () => {
    // [epochMs, mode, status, version|error, worker]: the pod shares the host clock, so the answers'
    // times compare with the times the manifests were written.
    type Answer = [number, 'keepalive' | 'fresh', number, string, number];
    const traffic = mesh.bed.spawn(mesh.pod('shop/frontend-1'), [
      process.execPath,
      join(FIXTURES, 'split-connections.mjs'),
      REVIEWS,
      '17000',
      '3',
    ]);
    let stdout = '';
    let stderr = '';
    traffic.stdout!.on('data', (b: Buffer) => {
      stdout += b;
    });
    traffic.stderr!.on('data', (b: Buffer) => {
      stderr += b;
    });
    const exited = once(traffic, 'exit');
    let t50 = 0;
    let t100 = 0;
    try {
      // The phases start once every worker has been answered, however long node takes to start in the pod.
      await eventually(
        'the load has started',
        async () => stdout,
        (o) => o.startsWith('ready\n'),
        30_000,
      );
      // 5 s of 90/10, 7.5 s of 50/50, 4.5 s of 0/100: at ~15 answers a second per connection (a busy
      // 2-core machine), each window gets the answers it needs.
      await new Promise((r) => setTimeout(r, 5000));
      t50 = Date.now();
      mesh.writeManifest('30-routes.yaml', routes(50, 50));
      await new Promise((r) => setTimeout(r, 7500));
      t100 = Date.now();
      mesh.writeManifest('30-routes.yaml', routes(0, 100));
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0, stderr);
    } finally {
      traffic.kill();
      mesh.writeManifest('30-routes.yaml', routes(90, 10));
    }
    const { answers, connects } = JSON.parse(stdout.slice('ready\n'.length)) as {
      answers: Answer[];
      connects: number[];
    };
    const failed = answers.filter((a) => a[2] !== 200);
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${answers.length} requests failed`);
    // Each keep-alive worker kept one connection for the whole run: the split below moved on it.
    assert.deepEqual(connects, [1, 1, 1], 'keep-alive connections opened per worker');

    const end = answers.at(-1)![0] + 1;
    const share = (from: number, to: number, pick: (a: Answer) => boolean) => {
      const xs = answers.filter((a) => a[0] >= from && a[0] < to && pick(a));
      return { n: xs.length, v2: xs.filter((a) => a[3] === 'v2').length / xs.length };
    };
    // A window's v2 share must be within 4.5 binomial sd of its weight (a false alarm about once in
    // 150 000), which over the >= 50 answers required still tells 90/10, 50/50 and 0/100 apart.
    const near = (weight: number) => (v2: number, n: number) =>
      Math.abs(v2 - weight) <= 4.5 * Math.sqrt((weight * (1 - weight)) / n);
    const windows = [
      { name: '90/10 before the first change', from: 0, to: t50, ok: near(0.1), least: 50 },
      { name: '50/50 from 2 s after its write', from: t50 + 2000, to: t100, ok: near(0.5), least: 50 },
      // Exact: every answer is v2, so fewer answers still say it all.
      { name: '0/100 from 2 s after its write', from: t100 + 2000, to: end, ok: near(1), least: 20 },
    ];
    const groups: Array<[string, (a: Answer) => boolean]> = [
      ['fresh connections', (a) => a[1] === 'fresh'],
      ...[0, 1, 2].map((w): [string, (a: Answer) => boolean] => [
        `keep-alive connection ${w}`,
        (a) => a[1] === 'keepalive' && a[4] === w,
      ]),
    ];
    const seen = windows.flatMap((w) =>
      groups.map(([group, pick]) => {
        const s = share(w.from, w.to, pick);
        return {
          ...s,
          ok: s.n >= 50 && w.ok(s.v2, s.n),
          text: `${w.name}, ${group}: v2 ${s.v2.toFixed(3)} of ${s.n}`,
        };
      }),
    );
    const report = seen.map((s) => `${s.ok ? 'ok ' : 'BAD'} ${s.text}`).join('\n');
    assert.ok(
      seen.every((s) => s.ok),
      `the split did not follow on every connection (with enough answers per window):\n${report}`,
    );
    const lastV1 = answers.filter((a) => a[3] === 'v1').at(-1)![0];
    process.stderr.write(
      `# ${answers.length} answers, 0 failed; last v1 ${lastV1 - t100} ms after 0/100 was written\n# ${report.replaceAll('\n', '\n# ')}\n`,
    );
    const settled = await eventually(
      'back to 90/10',
      () => load(mesh, 'shop/frontend-1', REVIEWS, 200, 10),
      (s) => (s.byVersion.v2 ?? 0) < 60,
    );
    assert.equal(settled.byStatus['200'], 200);
  });

  it('fails fast with 503 UO beyond maxRequests and counts the overflow', async () => {
    const overflowsBefore = await counter('sockmesh_breaker_overflows_total', ['node1']);
    const burst = await load(mesh, 'shop/frontend-1', `${RATINGS}?delay=1500`, 20, 20);
    // maxRequests is agent-wide: its shares across the proxy workers add up to 3, so never more than 3 pass.
    const ok = burst.byStatus['200'] ?? 0;
    assert.ok(ok >= 1 && ok <= 3, JSON.stringify(burst));
    assert.equal(burst.byStatus['503'], 20 - ok);
    assert.equal(burst.byFlags.UO, 20 - ok);
    assert.ok(burst.p50 < 1000, `overflows answered in ${burst.p50} ms, not after the backend delay`);
    assert.equal(
      await grewBy('sockmesh_breaker_overflows_total', overflowsBefore, 20 - ok, ['node1']),
      20 - ok,
      'one overflow counted per 503 UO, merged over the workers',
    );
  });

  it('ejects a failing endpoint after consecutive 5xx and restores it later', async () => {
    // ratings-2 (node1) is local to the frontend and preferred; make it fail.
    const node1 = mesh.bed.node('node1');
    const toggle = async (on: boolean) => {
      const r = await mesh.bed.exec(node1, [
        process.execPath,
        '-e',
        `fetch('http://10.244.1.12:9080/control/fail?on=${on}',{method:'PUT'}).then(r=>r.text()).then(t=>process.stdout.write(t))`,
      ]);
      assert.equal(r.stdout.trim(), `failing=${on}`);
    };
    const ejectionsBefore = await counter('sockmesh_outlier_ejections_total', ['node1']);
    await toggle(true);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await call(mesh, 'shop/frontend-1', RATINGS)).status);
      assert.deepEqual(statuses, [503, 503, 503], `first calls hit the failing local endpoint: ${statuses}`);
      // The next ones in one process, well inside the 5 s ejection even when starting a process takes seconds.
      const after = await load(mesh, 'shop/frontend-1', RATINGS, 4, 1);
      assert.deepEqual(after.byStatus, { 200: 4 }, `then it is ejected: ${JSON.stringify(after)}`);
      assert.deepEqual(after.byVersion, { v1: 4 }, 'served by ratings-1 on node2');
      // Each proxy worker ejects on its own: at least one ejection, at most one per worker.
      const ejected = await grewBy('sockmesh_outlier_ejections_total', ejectionsBefore, 1, ['node1']);
      assert.ok(ejected >= 1 && ejected <= 2, `ejections counted: ${ejected}`);
    } finally {
      await toggle(false);
    }
    await eventually(
      'ratings-2 restored after the ejection time',
      async () =>
        (JSON.parse((await call(mesh, 'shop/frontend-1', RATINGS)).body) as { version: string }).version,
      (v) => v === 'v2',
      15_000,
    );
  });

  it('denies a principal the AuthorizationPolicy does not allow: 403 with the RBAC body over HTTP, no byte over TCP', async () => {
    const denialsBefore = await counter('sockmesh_authz_denials_total');
    // ratings-1 runs on node2: reviews-v1 (10.96.0.21) is on node1, reviews-v2 (10.96.0.22) on node2.
    // Same node, the caller's agent decides and flags its answer UAEX.
    const local = await ask(mesh, 'shop/ratings-1', 'http://10.96.0.22:9080/');
    assert.equal(local.status, 403, local.error ?? local.body);
    assert.match(local.body, RBAC_DENIED);
    assert.equal(local.flags, 'UAEX', `same-node denial: ${JSON.stringify(local)}`);
    // Across nodes, the destination's agent decides; the caller's agent relays its answer.
    const remote = await ask(mesh, 'shop/ratings-1', 'http://10.96.0.21:9080/');
    assert.equal(remote.status, 403, remote.error ?? remote.body);
    assert.match(remote.body, RBAC_DENIED);
    assert.ok(
      remote.flags === 'UAEX' || remote.reason === 'denied by authorization policy',
      `cross-node denial: ${JSON.stringify(remote)}`,
    );
    const allowed = await call(mesh, 'shop/frontend-1', REVIEWS);
    assert.equal(allowed.status, 200);
    // Not a byte of the pod's answer, and a reset: a refusal, not an empty answer.
    const tcpDenied = await rawTcp(mesh, 'shop/ratings-1');
    assert.deepEqual(tcpDenied, { data: '', error: 'ECONNRESET' }, 'ratings is refused over TCP');
    assert.deepEqual(await rawTcp(mesh, 'shop/frontend-1'), { data: 'HTTP/1.1 200 OK', error: null });
    assert.equal(
      await grewBy('sockmesh_authz_denials_total', denialsBefore, 3),
      3,
      'one denial counted for each HTTP request, one for the TCP stream',
    );
  });

  it('resets every denied TCP stream, whichever node decides', async () => {
    // reviews-tcp has a pod on each node: from node2, some streams are denied by node2's agent, some by node1's.
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push(await rawTcp(mesh, 'shop/ratings-1'));
    assert.deepEqual(answers, Array(10).fill({ data: '', error: 'ECONNRESET' }));
  });

  it('keeps serving the last config while the control plane is down, then resyncs', async () => {
    mesh.stopControlPlane();
    await new Promise((r) => setTimeout(r, 300));
    const during = await load(mesh, 'shop/frontend-1', REVIEWS, 200, 10);
    assert.equal(during.byStatus['200'], 200);
    mesh.writeManifest('30-routes.yaml', routes(0, 100));
    await mesh.startControlPlane();
    await eventually(
      'agents resynced to 0/100',
      () => load(mesh, 'shop/frontend-1', REVIEWS, 50, 10),
      (s) => s.byVersion.v2 === 50,
      10_000,
    );
    mesh.writeManifest('30-routes.yaml', routes(90, 10));
  });

  it('takes a namespace out of the mesh and back in, live', async () => {
    const cluster = readFileSync(join(mesh.paths.manifests, '00-cluster.yaml'), 'utf8');
    mesh.writeManifest(
      '00-cluster.yaml',
      cluster.replace('sockmesh.io/mesh: enabled', 'sockmesh.io/mesh: disabled'),
    );
    try {
      // Out of the mesh, nothing catches the connect to the VIP: it has no route anywhere.
      await eventually(
        'frontend no longer captured',
        () => call(mesh, 'shop/frontend-1', REVIEWS),
        (r) => r.status === 0,
      );
    } finally {
      mesh.writeManifest('00-cluster.yaml', cluster);
    }
    await eventually(
      'frontend captured again',
      () => call(mesh, 'shop/frontend-1', REVIEWS),
      (r) => r.status === 200,
    );
  });

  it('runs proxy workers sharing the listeners and survives a worker crash', async () => {
    type Status = { workers: { pids: number[]; restarts: number } };
    const before = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as Status;
    assert.ok(before.workers.pids.length >= 2, `workers: ${JSON.stringify(before.workers)}`);
    const countBefore = metric((await mesh.agentGet('node1', '/metrics')).body, 'sockmesh_requests_total');
    process.kill(before.workers.pids[0]!, 'SIGKILL');
    const after = await eventually(
      'a replacement worker',
      async () => JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as Status,
      (s) =>
        s.workers.restarts === before.workers.restarts + 1 &&
        s.workers.pids.length === before.workers.pids.length,
      15_000,
    );
    assert.ok(!after.workers.pids.includes(before.workers.pids[0]!));
    const traffic = await load(mesh, 'shop/frontend-1', REVIEWS, 200, 10);
    assert.equal(traffic.byStatus['200'], 200, JSON.stringify(traffic));
    const countAfter = metric((await mesh.agentGet('node1', '/metrics')).body, 'sockmesh_requests_total');
    assert.ok(
      countAfter >= countBefore + 200,
      `request counters must not go backwards: ${countBefore} -> ${countAfter}`,
    );
  });

  it('does not capture an unmeshed pod, which cannot reach a strict meshed pod in plaintext', async () => {
    type Stats = { bpf: Record<string, number> };
    const refusedBefore = (JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as Stats).bpf
      .plaintextRefused;
    assert.equal(typeof refusedBefore, 'number', 'the agent reports plaintextRefused');
    const res = await call(mesh, 'legacy/client', REVIEWS);
    assert.equal(res.status, 0, 'a VIP is only reachable through the mesh');
    // Straight to reviews-v1's pod IP, bypassing the mesh: the pod's strict mode drops it.
    const direct = await mesh.exec('legacy/client', [
      'curl',
      '-s',
      '-m',
      '2',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      'http://10.244.1.11:9080/',
    ]);
    assert.equal(direct.stdout, '000', 'plaintext reached a strict meshed pod');
    const stats = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as Stats;
    // curl's SYN is dropped, and retransmitted within its 2 s: each attempt is a refusal.
    assert.ok(
      stats.bpf.plaintextRefused! - refusedBefore! >= 1,
      `refusals counted: ${refusedBefore} -> ${stats.bpf.plaintextRefused}`,
    );
  });
});
