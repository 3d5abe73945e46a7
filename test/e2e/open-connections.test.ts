/**
 * Open connections follow every change (issue 12). Users keep connections open: keep-alive pools,
 * h2c sessions, gRPC channels, TCP streams. Each change below is made while such connections carry
 * load, and the test reads what those very connections saw: weights, SVID rotation (every agent
 * here rotates every few seconds, for the whole file), an L4 DENY, permissive -> strict, a
 * namespace leaving the mesh, a cluster renamed under load.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { LocalMesh } from '../../lab/mesh.js';
import { FIXTURES, startEchoServer } from '../helpers/lab.js';
import { eventually, startShop } from '../helpers/mesh.js';

const OPEN = fileURLToPath(new URL('./manifests-open/', import.meta.url));
const PERMISSIVE = fileURLToPath(new URL('./manifests-permissive/', import.meta.url));
const REVIEWS = 'http://reviews.shop.svc.cluster.local:9080/';
const FRONTEND_ID = 'spiffe://cluster.local/ns/shop/sa/frontend';
/** Every SVID lives this long: the agents rotate at half life, so about every 5 s during the whole file. */
const SVID_TTL_S = 10;
/** How soon after a change the open connections must follow it (the bound). */
const FOLLOW_MS = 2000;

type Mode = 'keepalive' | 'fresh' | 'h2c' | 'grpc';
/** [epochMs, mode, status, version | error, caller] */
type Rec = [number, Mode, number, string, string | null];
interface Timeline {
  records: Rec[];
  sessions: { h2c: number; grpc: number };
}

/** The shop's reviews route (with its canary header rule) and a GRPCRoute on the h2c port, one file. */
function routes(v1: number, v2: number, stable = 'reviews-v1', other: [number, number] = [v1, v2]): string {
  const shop = readFileSync(
    join(fileURLToPath(new URL('../../examples/shop/', import.meta.url)), '30-routes.yaml'),
    'utf8',
  )
    .replace('{ name: reviews-v1, port: 9080, weight: 90 }', `{ name: ${stable}, port: 9080, weight: ${v1} }`)
    .replace(
      '{ name: reviews-v2, port: 9080, weight: 10 }',
      `{ name: reviews-v2, port: 9080, weight: ${v2} }`,
    );
  assert.ok(
    shop.includes(`weight: ${v1} }`) && shop.includes(`weight: ${v2} }`),
    'the example route has the weights this test edits',
  );
  // A GRPCRoute (Gateway API v1): the fixture's method by name; the h2c requests (path /) by the
  // catch-all rule (weighted `other`).
  const grpc = `---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: reviews-grpc
  namespace: shop
spec:
  parentRefs:
    - { group: "", kind: Service, name: reviews, port: 9091 }
  rules:
    - matches: [{ method: { service: sockmesh.example.Shop, method: Who } }]
      backendRefs:
        - { name: reviews-v1-grpc, port: 9091, weight: ${v1} }
        - { name: reviews-v2-grpc, port: 9091, weight: ${v2} }
    - backendRefs:
        - { name: reviews-v1-grpc, port: 9091, weight: ${other[0]} }
        - { name: reviews-v2-grpc, port: 9091, weight: ${other[1]} }
`;
  // A renamed stable backend is a new Service in the same file, so the change is one apply.
  const renamed =
    stable === 'reviews-v1'
      ? ''
      : `---
apiVersion: v1
kind: Service
metadata:
  name: ${stable}
  namespace: shop
spec:
  clusterIP: 10.96.0.64
  selector: { app: reviews, version: v1 }
  ports:
    - { name: http, port: 9080, targetPort: http, appProtocol: http }
`;
  return `${shop}${grpc}${renamed}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('open connections follow every change (2 nodes, real BPF, mTLS, xDS)', { timeout: 600_000 }, () => {
  let mesh: LocalMesh;
  const echoes: ChildProcess[] = [];

  before(async () => {
    mesh = await startShop([OPEN, PERMISSIVE], { agentWorkers: 1, svidTtlSeconds: SVID_TTL_S });
    echoes.push(await startEchoServer(mesh.bed, mesh.pod('shop/reviews-v2-1'), 7000));
    echoes.push(await startEchoServer(mesh.bed, mesh.pod('shop/reviews-v1-1'), 7001));
    // The GRPCRoute's method match is in force once every call lands on v1 at 100/0 (without the
    // route, the reviews Service's own cluster spreads calls over both versions; without the method
    // match, the catch-all rule sends them to v2).
    mesh.writeManifest('30-routes.yaml', routes(100, 0, 'reviews-v1', [0, 100]));
    await eventually(
      'the GRPCRoute method match in force',
      () => timeline('shop/frontend-1', REVIEWS, 1500, 2, ['grpc']).result,
      (t) => t.records.length > 20 && t.records.every((r) => r[2] === 200 && r[3] === 'v1'),
      20_000,
    );
    mesh.writeManifest('30-routes.yaml', routes(90, 10));
    await sleep(2000);
  });
  after(async () => {
    for (const e of echoes) e.kill();
    await mesh?.stop();
  });

  let readySeq = 0;
  /** A path the fixture creates once its traffic flows (fixtures start late on a busy machine). */
  function readyPath(): string {
    return join(mesh.paths.runDir, `flowing-${process.pid}-${++readySeq}`);
  }

  /** Resolves once the file exists: the client got its first answer. */
  async function flowing(path: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(path)) {
      if (Date.now() > deadline) throw new Error(`no traffic flowed within ${timeoutMs} ms (${path})`);
      await sleep(50);
    }
  }

  /** Starts the timeline fixture; `flowing` resolves at its first answer, `result` when it ends. */
  function timeline(
    from: string,
    url: string,
    durationMs: number,
    workers: number,
    modes: Mode[],
  ): { flowing: Promise<void>; result: Promise<Timeline> } {
    const ready = readyPath();
    const result = mesh
      .exec(
        from,
        [
          process.execPath,
          join(FIXTURES, 'timeline.mjs'),
          url,
          String(durationMs),
          String(workers),
          modes.join(','),
          '9091',
          '{}',
          ready,
        ],
        durationMs + 60_000,
      )
      .then((res) => {
        if (res.code !== 0) throw new Error(`timeline from ${from} failed: ${res.stderr}`);
        return JSON.parse(res.stdout) as Timeline;
      });
    // A fixture that fails before its first answer must fail the test with its own error.
    return { flowing: Promise.race([flowing(ready), result.then(() => flowing(ready, 0))]), result };
  }

  /** Share of v2 among the answers of one mode in [from, to). */
  function v2Share(t: Timeline, mode: Mode, from: number, to: number): { n: number; v2: number } {
    const rs = t.records.filter((r) => r[1] === mode && r[0] >= from && r[0] < to && r[2] === 200);
    return { n: rs.length, v2: rs.filter((r) => r[3] === 'v2').length / Math.max(1, rs.length) };
  }

  /** The agents' warnings and errors, for a failure message. */
  function agentLog(): string {
    return readdirSync(mesh.paths.logs)
      .filter((f) => f.startsWith('agent'))
      .flatMap((f) =>
        readFileSync(join(mesh.paths.logs, f), 'utf8')
          .split('\n')
          .filter((l) => /"level":"(warn|error)"/.test(l))
          .slice(-10)
          .map((l) => `${f}: ${l.slice(0, 300)}`),
      )
      .join('\n');
  }

  function failures(t: Timeline): Rec[] {
    return t.records.filter((r) => r[2] !== 200);
  }

  async function agentStatus(node: string) {
    return JSON.parse((await mesh.agentGet(node, '/stats/config')).body) as {
      workers: { pids: number[] };
      identities: { spiffeId: string; serial: string }[];
    };
  }

  it('weights 90/10 -> 50/50 -> 0/100 reach open keep-alive, h2c and gRPC connections within 2 s, 0 failed', async () => {
    const modes: Mode[] = ['keepalive', 'fresh', 'h2c', 'grpc'];
    const running = timeline('shop/frontend-1', REVIEWS, 14_000, 2, modes);
    await running.flowing;
    const start = Date.now();
    await sleep(4000);
    const half = Date.now();
    mesh.writeManifest('30-routes.yaml', routes(50, 50));
    await sleep(5000);
    const all = Date.now();
    mesh.writeManifest('30-routes.yaml', routes(0, 100));
    const t = await running.result;
    const end = Math.max(...t.records.map((r) => r[0]));
    const failed = failures(t);
    assert.deepEqual(failed.slice(0, 10), [], `${failed.length} of ${t.records.length} requests failed`);
    for (const m of modes) {
      const before = v2Share(t, m, start + 1000, half);
      const during = v2Share(t, m, half + FOLLOW_MS, all);
      const later = v2Share(t, m, all + FOLLOW_MS, end + 1);
      const where = `${m}: 90/10 ${JSON.stringify(before)}, 50/50 ${JSON.stringify(during)}, 0/100 ${JSON.stringify(later)}`;
      assert.ok(before.n >= 10 && during.n >= 10 && later.n >= 5, `too few answers to judge: ${where}`);
      // Wide enough for the sample sizes here (tens to hundreds), far from the neighbouring splits.
      assert.ok(before.v2 < 0.3, where);
      assert.ok(during.v2 > 0.25 && during.v2 < 0.75, where);
      assert.equal(later.v2, 1, where);
    }
    // The same connections all along: one h2c session, no reconnection of the gRPC channel.
    assert.equal(t.sessions.h2c, 1, 'the h2c session lasted');
    assert.equal(t.sessions.grpc, 0, 'the gRPC channel did not reconnect');
    mesh.writeManifest('30-routes.yaml', routes(90, 10));
  });

  it('SVIDs rotating every few seconds under keep-alive, fresh, h2c and gRPC load: 0 failed, agents alive', async () => {
    const pidsBefore = [(await agentStatus('node1')).workers.pids, (await agentStatus('node2')).workers.pids];
    const serials = new Set<string>();
    let polls = 0;
    let polling = true;
    // One poll at a time (each runs a process in the node's netns): they must not pile up on a busy machine.
    const watch = (async () => {
      while (polling) {
        try {
          const s = await agentStatus('node1');
          polls++;
          for (const i of s.identities) if (i.spiffeId === FRONTEND_ID) serials.add(i.serial);
        } catch {
          // counted by polls
        }
        await sleep(250);
      }
    })();
    // Cross-node (v2 on node2, through the tunnel) and same-node (v1) on every kind of connection.
    mesh.writeManifest('30-routes.yaml', routes(50, 50));
    let t: Timeline;
    try {
      t = await timeline('shop/frontend-1', REVIEWS, 3 * SVID_TTL_S * 1000, 2, [
        'keepalive',
        'fresh',
        'h2c',
        'grpc',
      ]).result;
    } finally {
      polling = false;
      await watch;
      mesh.writeManifest('30-routes.yaml', routes(90, 10));
    }
    const failed = failures(t);
    assert.deepEqual(failed.slice(0, 10), [], `${failed.length} of ${t.records.length} requests failed`);
    // Half-life rotation of a 10 s SVID over 30 s: about 6; at least 3 serials means 2 rotations under load.
    assert.ok(
      serials.size >= 3,
      `the frontend SVID rotated several times during the load: ${serials.size} serials in ${polls} polls`,
    );
    assert.ok(t.records.filter((r) => r[3] === 'v2').length > 50, 'the tunnel carried a share of the load');
    assert.ok(
      t.records.every((r) => r[4] === FRONTEND_ID),
      'every answer carried the caller identity',
    );
    const pidsAfter = [(await agentStatus('node1')).workers.pids, (await agentStatus('node2')).workers.pids];
    assert.deepEqual(pidsAfter, pidsBefore, 'no agent process died or restarted');
  });

  it('an AuthorizationPolicy DENY closes open TCP streams, across nodes and on the same node', async () => {
    const readies: string[] = [];
    const stream = (host: string, port: number) =>
      mesh
        .exec(
          'shop/frontend-1',
          [
            process.execPath,
            join(FIXTURES, 'tcp-stream-client.mjs'),
            host,
            String(port),
            '15000',
            '100',
            readies[readies.push(readyPath()) - 1]!,
          ],
          60_000,
        )
        .then(
          (r) =>
            JSON.parse(r.stdout) as {
              echoed: number;
              closedAtMs: number | null;
              error: string | null;
              startedAt: number;
            },
        );
    const remote = stream('echo-remote.shop.svc.cluster.local', 7000);
    const local = stream('echo-local.shop.svc.cluster.local', 7001);
    await Promise.all(readies.map((r) => flowing(r)));
    await sleep(1500);
    const deniedAt = Date.now();
    mesh.writeManifest(
      '72-deny.yaml',
      `apiVersion: sockmesh.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: no-echo
  namespace: shop
spec:
  selector:
    matchLabels: { app: reviews }
  action: DENY
  rules:
    - from:
        - principals: [${FRONTEND_ID}]
      to:
        - ports: [7000, 7001]
`,
    );
    try {
      const [r, l] = await Promise.all([remote, local]);
      for (const [name, s] of [
        ['across nodes', r],
        ['same node', l],
      ] as const) {
        const closedAt = s.closedAtMs === null ? null : s.startedAt + s.closedAtMs;
        const when = closedAt === null ? 'never' : `${closedAt - deniedAt} ms after the DENY`;
        const where = `${name}: ${JSON.stringify(s)}, closed ${when}\n${agentLog()}`;
        assert.ok(s.echoed >= 10, `the stream carried data before the DENY: ${where}`);
        assert.notEqual(closedAt, null, `the stream was closed: ${where}`);
        // Within the bound for a change to reach the agents (the file read, pushed, applied).
        assert.ok(closedAt! >= deniedAt && closedAt! < deniedAt + 4000, where);
        // On the same node the proxy resets the caller. Across nodes the peer's RST_STREAM can lose the
        // race with the END_STREAM Node flushes first, and the caller may see an orderly close.
        if (name === 'same node') assert.equal(s.error, 'ECONNRESET', `closed by a reset: ${where}`);
      }
    } finally {
      mesh.removeManifest('72-deny.yaml');
    }
    // A new stream is allowed again once the policy is gone.
    await eventually(
      'echo allowed again',
      () =>
        mesh
          .exec('shop/frontend-1', [
            process.execPath,
            join(FIXTURES, 'tcp-stream-client.mjs'),
            'echo-remote.shop.svc.cluster.local',
            '7000',
            '600',
            '100',
          ])
          .then((res) => JSON.parse(res.stdout) as { echoed: number }),
      (s) => s.echoed >= 3,
      15_000,
    );
  });

  it('permissive -> strict closes the plaintext keep-alive connections it had accepted', async () => {
    const file = join(mesh.paths.manifests, '60-permissive.yaml');
    const text = readFileSync(file, 'utf8');
    const running = timeline('legacy/client', 'http://10.244.2.40:8080/', 10_000, 2, ['keepalive']);
    await running.flowing;
    await sleep(3000);
    const strictAt = Date.now();
    mesh.writeManifest(
      '60-permissive.yaml',
      text.replace('sockmesh.io/mtls: permissive', 'sockmesh.io/mtls: strict'),
    );
    let t: Timeline;
    try {
      t = await running.result;
    } finally {
      mesh.writeManifest('60-permissive.yaml', text);
    }
    const before = t.records.filter((r) => r[0] < strictAt && r[2] === 200);
    const late = t.records.filter((r) => r[0] >= strictAt + FOLLOW_MS && r[2] === 200);
    assert.ok(before.length >= 20, `plaintext flowed while permissive: ${before.length}`);
    assert.deepEqual(late.slice(0, 5), [], `${late.length} plaintext answers more than 2 s after the switch`);
    await eventually(
      'permissive again',
      () => timeline('legacy/client', 'http://10.244.2.40:8080/', 300, 1, ['fresh']).result,
      (r) => r.records.some((x) => x[2] === 200),
      20_000,
    );
  });

  it('a namespace that leaves the mesh loses its identity on open connections', async () => {
    const file = join(mesh.paths.manifests, '00-cluster.yaml');
    const text = readFileSync(file, 'utf8');
    const running = timeline('shop/frontend-1', REVIEWS, 10_000, 2, ['keepalive', 'h2c']);
    await running.flowing;
    await sleep(3000);
    const leftAt = Date.now();
    mesh.writeManifest(
      '00-cluster.yaml',
      text.replace('sockmesh.io/mesh: enabled', 'sockmesh.io/mesh: disabled'),
    );
    let t: Timeline;
    try {
      t = await running.result;
    } finally {
      mesh.writeManifest('00-cluster.yaml', text);
    }
    const before = t.records.filter((r) => r[0] < leftAt && r[4] === FRONTEND_ID);
    const late = t.records.filter((r) => r[0] >= leftAt + FOLLOW_MS && r[4] === FRONTEND_ID);
    assert.ok(before.length >= 20, `the frontend called with its identity before: ${before.length}`);
    assert.deepEqual(
      late.slice(0, 5),
      [],
      `${late.length} answers still carried ${FRONTEND_ID} after it left`,
    );
    await eventually(
      'frontend meshed again',
      () => timeline('shop/frontend-1', REVIEWS, 300, 1, ['fresh']).result,
      (r) => r.records.some((x) => x[2] === 200 && x[4] === FRONTEND_ID),
      20_000,
    );
  });

  it('a cluster renamed under load: no request meets a route without endpoints (0 UH, 0 failed)', async () => {
    const running = timeline('shop/frontend-1', REVIEWS, 9000, 2, ['keepalive', 'fresh', 'h2c', 'grpc']);
    await running.flowing;
    await sleep(2000);
    mesh.writeManifest('30-routes.yaml', routes(90, 10, 'reviews-stable'));
    await sleep(3000);
    mesh.writeManifest('30-routes.yaml', routes(90, 10));
    const t = await running.result;
    const failed = failures(t);
    assert.deepEqual(failed.slice(0, 10), [], `${failed.length} of ${t.records.length} requests failed`);
    assert.ok(t.records.length > 200, `load ran: ${t.records.length}`);
  });
});
