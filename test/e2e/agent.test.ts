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

describe('mesh agent end to end (2 nodes, real BPF, mTLS, xDS)', () => {
  let mesh: LocalMesh;

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

  it('follows weight changes under continuous load without losing a request', async () => {
    const running = load(mesh, 'shop/frontend-1', REVIEWS, 3000, 10);
    await new Promise((r) => setTimeout(r, 400));
    mesh.writeManifest('30-routes.yaml', routes(50, 50));
    await new Promise((r) => setTimeout(r, 800));
    mesh.writeManifest('30-routes.yaml', routes(0, 100));
    const during = await running;
    assert.deepEqual(during.errors, {});
    assert.equal(during.byStatus['200'], 3000, JSON.stringify(during));
    const settled = await eventually(
      'all traffic on v2',
      () => load(mesh, 'shop/frontend-1', REVIEWS, 100, 10),
      (s) => s.byVersion.v2 === 100,
    );
    assert.equal(settled.byStatus['200'], 100);
    mesh.writeManifest('30-routes.yaml', routes(90, 10));
  });

  it('fails fast with 503 UO beyond maxRequests and counts the overflow', async () => {
    const burst = await load(mesh, 'shop/frontend-1', `${RATINGS}?delay=1500`, 20, 20);
    // maxRequests is agent-wide: its shares across the proxy workers add up to 3, so never more than 3 pass.
    const ok = burst.byStatus['200'] ?? 0;
    assert.ok(ok >= 1 && ok <= 3, JSON.stringify(burst));
    assert.equal(burst.byStatus['503'], 20 - ok);
    assert.equal(burst.byFlags.UO, 20 - ok);
    assert.ok(burst.p50 < 1000, `overflows answered in ${burst.p50} ms, not after the backend delay`);
    const scrape = (await mesh.agentGet('node1', '/metrics')).body;
    assert.ok(
      metric(scrape, 'sockmesh_breaker_overflows_total') >= 17,
      'overflow metric, merged over the workers',
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
    await toggle(true);
    try {
      const statuses: number[] = [];
      const versions: string[] = [];
      for (let i = 0; i < 7; i++) {
        const r = await call(mesh, 'shop/frontend-1', RATINGS);
        statuses.push(r.status);
        versions.push(r.status === 200 ? (JSON.parse(r.body) as { version: string }).version : '-');
      }
      assert.deepEqual(
        statuses.slice(0, 3),
        [503, 503, 503],
        `first calls hit the failing local endpoint: ${statuses}`,
      );
      assert.deepEqual(statuses.slice(3), Array(4).fill(200), `then it is ejected: ${statuses}`);
      assert.ok(
        versions.slice(3).every((v) => v === 'v1'),
        'served by ratings-1 on node2',
      );
      const scrape = (await mesh.agentGet('node1', '/metrics')).body;
      assert.ok(metric(scrape, 'sockmesh_outlier_ejections_total') >= 1, 'ejection metric');
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

  it('denies a principal the AuthorizationPolicy does not allow: 403 over HTTP, refused over TCP', async () => {
    const denied = await call(mesh, 'shop/ratings-1', REVIEWS);
    assert.equal(denied.status, 403, denied.error ?? denied.body);
    const allowed = await call(mesh, 'shop/frontend-1', REVIEWS);
    assert.equal(allowed.status, 200);
    const raw = (from: string) =>
      mesh.exec(from, [
        process.execPath,
        '-e',
        "const s=require('net').connect(9090,'reviews-tcp.shop.svc.cluster.local',()=>s.write('GET / HTTP/1.0\\r\\nhost: x\\r\\n\\r\\n'));let d='';s.on('data',c=>d+=c);s.on('close',()=>process.stdout.write(JSON.stringify({data:d.slice(0,15)})));s.on('error',e=>{process.stdout.write(JSON.stringify({error:e.code}));process.exit(0)})",
      ]);
    const tcpDenied = JSON.parse((await raw('shop/ratings-1')).stdout) as { data?: string; error?: string };
    assert.ok(
      tcpDenied.error !== undefined || tcpDenied.data === '',
      `ratings got through over TCP: ${JSON.stringify(tcpDenied)}`,
    );
    const tcpAllowed = JSON.parse((await raw('shop/frontend-1')).stdout) as { data?: string };
    assert.equal(tcpAllowed.data, 'HTTP/1.1 200 OK');
    const scrapes = await Promise.all(
      ['node1', 'node2'].map(async (n) => (await mesh.agentGet(n, '/metrics')).body),
    );
    assert.ok(
      scrapes.reduce((a, s) => a + metric(s, 'sockmesh_authz_denials_total'), 0) >= 2,
      'denials counted',
    );
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
    const stats = JSON.parse((await mesh.agentGet('node1', '/stats/config')).body) as {
      bpf: Record<string, number>;
    };
    assert.ok((stats.bpf.plaintextRefused ?? 0) >= 1, `refusals counted: ${JSON.stringify(stats.bpf)}`);
  });
});
