/**
 * SLO-guarded canary, decided inside the mesh (issue 15). reviews-v2 is the canary at 10 % of the
 * HTTPRoute and of a GRPCRoute, under keep-alive, fresh, h2c and gRPC load from the frontend pod.
 * v2 starts answering 503 (its own PUT /control/fail, called inside its pod): the control plane,
 * from what the agents report over LRS, moves both canaries to 0; the open connections follow;
 * v1 serves everything; nothing fails but the canary's own 503s. Then v2 recovers, the guards get
 * promotion steps, and the canary is promoted step by step to 100 %, with no failed request.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { canaryCommand } from '../../cli/commands/canary.js';
import type { LocalMesh } from '../../lab/mesh.js';
import type { CanaryStatus } from '../../xds/server/canary.js';
import { FIXTURES } from '../helpers/lab.js';
import { eventually, startShop } from '../helpers/mesh.js';

const OPEN = fileURLToPath(new URL('./manifests-open/', import.meta.url));
const CANARY = fileURLToPath(new URL('./manifests-canary/', import.meta.url));
const REVIEWS = 'http://reviews.shop.svc.cluster.local:9080/';
const INTERVAL_MS = 2000;
/** Open connections follow a pushed change within this (issue 12's bound). */
const FOLLOW_MS = 2000;

type Mode = 'keepalive' | 'fresh' | 'h2c' | 'grpc';
/** [epochMs, mode, status, version | error, caller] */
type Rec = [number, Mode, number, string, string | null];
const MODES: Mode[] = ['keepalive', 'fresh', 'h2c', 'grpc'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('canary guard: rollback and promotion decided in the mesh (2 nodes, real BPF, mTLS, xDS, LRS)', {
  timeout: 600_000,
}, () => {
  let mesh: LocalMesh;

  before(async () => {
    mesh = await startShop([OPEN, CANARY], { agentWorkers: 1 });
  });
  after(async () => {
    // What the agents and the control plane said about load reporting and the guards (read on a failure).
    for (const f of ['control-plane.log', 'agent-node1.log', 'agent-node2.log']) {
      const p = join(mesh.paths.logs, f);
      if (!existsSync(p)) continue;
      const lines = readFileSync(p, 'utf8')
        .split('\n')
        .filter((l) => /"msg":"canary|"msg":"load reporting/.test(l))
        .slice(-8);
      for (const l of lines) process.stdout.write(`# ${f}: ${l.slice(0, 400)}\n`);
    }
    await mesh?.stop();
  });

  /** GET on the control plane's admin socket. */
  function adminGet(path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      request({ socketPath: mesh.paths.adminSocket, path }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve(body));
      })
        .on('error', reject)
        .end();
    });
  }
  const guards = async () => (JSON.parse(await adminGet('/v1/canary')) as { guards: CanaryStatus[] }).guards;
  const guard = async (name: string) => (await guards()).find((g) => g.name === name)!;

  /** `sockmesh canary` as a user runs it (the verb itself, in this process). */
  async function cli(...args: string[]): Promise<string> {
    let out = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        out += chunk.toString();
        done();
      },
    });
    const code = await canaryCommand.run({
      argv: ['--run', mesh.bed.runId, ...args],
      stdout: sink,
      stderr: sink,
    });
    assert.equal(code, 0, out);
    return out;
  }

  let seq = 0;
  function timeline(durationMs: number): { flowing: Promise<void>; result: Promise<Rec[]> } {
    const ready = join(mesh.paths.runDir, `canary-flowing-${process.pid}-${++seq}`);
    const result = mesh
      .exec(
        'shop/frontend-1',
        [
          process.execPath,
          join(FIXTURES, 'timeline.mjs'),
          REVIEWS,
          String(durationMs),
          '2',
          MODES.join(','),
          '9091',
          '{}',
          ready,
        ],
        durationMs + 60_000,
      )
      .then((res) => {
        if (res.code !== 0) throw new Error(`timeline failed: ${res.stderr}`);
        return (JSON.parse(res.stdout) as { records: Rec[] }).records;
      });
    const flowing = (async () => {
      const deadline = Date.now() + 30_000;
      while (!existsSync(ready)) {
        if (Date.now() > deadline) throw new Error('no traffic flowed within 30 s');
        await sleep(50);
      }
    })();
    return { flowing: Promise.race([flowing, result.then(() => flowing)]), result };
  }

  async function setFailing(on: boolean): Promise<void> {
    const script = `fetch('http://127.0.0.1:9080/control/fail?on=${on}',{method:'PUT'}).then(r=>r.text()).then(t=>process.stdout.write(t))`;
    const res = await mesh.exec('shop/reviews-v2-1', [process.execPath, '-e', script]);
    assert.equal(res.stdout.trim(), `failing=${on}`, res.stderr);
  }

  /** The canary's weight in the RouteConfiguration the control plane serves node1. */
  async function servedWeights(): Promise<Record<string, number>> {
    const cfg = JSON.parse(await adminGet('/v1/config?node=node1')) as {
      routes: Array<{
        virtual_hosts: Array<{
          routes: Array<{
            route?: { weighted_clusters?: { clusters: Array<{ name: string; weight: { value: number } }> } };
          }>;
        }>;
      }>;
    };
    const out: Record<string, number> = {};
    for (const rc of cfg.routes)
      for (const vh of rc.virtual_hosts)
        for (const r of vh.routes)
          for (const c of r.route?.weighted_clusters?.clusters ?? [])
            out[c.name.split('|')[3]!.split('.')[0]!] = c.weight.value;
    return out;
  }

  it('a failing canary is rolled back to 0 within an interval; v1 serves everything after; only the canary failed', async () => {
    assert.deepEqual(
      (await guards()).map((g) => [g.name, g.routeKind, g.phase, g.weight]),
      [
        ['shop/reviews', 'HTTPRoute', 'Progressing', 10],
        ['shop/reviews-grpc', 'GRPCRoute', 'Progressing', 10],
      ],
    );
    const run = timeline(24_000);
    await run.flowing;
    // Healthy first: the guards see the canary's traffic and hold (no steps yet).
    await eventually(
      `the guards measure a healthy canary (logs: ${mesh.paths.logs})`,
      guards,
      (gs) => gs.every((g) => g.lastDecision?.action === 'Hold' && g.lastDecision.canary.requests >= 10),
      30_000,
    );
    const failedAt = Date.now();
    let rolled: CanaryStatus[];
    let records: Rec[];
    try {
      await setFailing(true);
      rolled = await eventually(
        'both canaries rolled back',
        guards,
        (gs) => gs.every((g) => g.phase === 'RolledBack'),
        30_000,
      );
      records = await run.result;
    } finally {
      await setFailing(false);
    }

    for (const g of rolled) {
      assert.equal(g.weight, 0);
      assert.equal(g.lastTransition!.to, 0);
      assert.equal(g.lastTransition!.reason, 'SuccessRateBelowBound');
      // From the first failed answer the callers saw on this route's protocols to the decision.
      const grpc = g.name.endsWith('-grpc');
      const firstFailure = Math.min(
        ...records
          .filter((r) =>
            grpc ? r[1] === 'grpc' || r[1] === 'h2c' : r[1] === 'keepalive' || r[1] === 'fresh',
          )
          .filter((r) => r[2] !== 200)
          .map((r) => r[0]),
      );
      const took = Date.parse(g.lastTransition!.at) - firstFailure;
      process.stdout.write(
        `# ${g.name}: rolled back ${took} ms after the first failed answer (interval ${INTERVAL_MS} ms, LRS every 1000 ms)\n`,
      );
      // The next tick after the failures' first report, on a busy machine: interval + one report + slack.
      assert.ok(took <= INTERVAL_MS + 2000, `${g.name} took ${took} ms`);
    }
    // The served split has the canary at 0; the route as written is untouched.
    const served = await servedWeights();
    assert.equal(served['reviews-v2'], 0);
    assert.equal(served['reviews-v1'], 100);
    assert.equal(served['reviews-v2-grpc'], 0);
    assert.match(
      readFileSync(join(mesh.paths.manifests, '30-routes.yaml'), 'utf8'),
      /reviews-v2, port: 9080, weight: 10/,
    );

    const rolledAt = Math.max(...rolled.map((g) => Date.parse(g.lastTransition!.at)));
    for (const mode of MODES) {
      const mine = records.filter((r) => r[1] === mode);
      const before = mine.filter((r) => r[0] < failedAt);
      const afterFollow = mine.filter((r) => r[0] > rolledAt + FOLLOW_MS);
      assert.ok(
        before.some((r) => r[3] === 'v2'),
        `${mode}: v2 served before the failure`,
      );
      assert.ok(afterFollow.length > 20, `${mode}: ${afterFollow.length} answers after the rollback`);
      assert.deepEqual(
        afterFollow.filter((r) => r[2] !== 200 || r[3] !== 'v1').slice(0, 5),
        [],
        `${mode}: v1 serves everything after the rollback`,
      );
      // Failures: only the canary's own 503s (gRPC: UNAVAILABLE), only while it was in force.
      const failed = mine.filter((r) => r[2] !== 200);
      const foreign = failed.filter(
        (r) =>
          !((r[2] === 503 && r[3] === 'v2') || (mode === 'grpc' && r[2] === 1014)) ||
          r[0] > rolledAt + FOLLOW_MS,
      );
      assert.deepEqual(foreign.slice(0, 5), [], `${mode}: failures outside the canary's own errors`);
      process.stdout.write(`# ${mode}: ${mine.length} answers, ${failed.length} canary 503s\n`);
    }

    // Never moved back by itself: v2 is healthy again, the guard stays rolled back.
    await sleep(3 * INTERVAL_MS);
    for (const g of await guards()) {
      assert.equal(g.phase, 'RolledBack');
      assert.equal(g.weight, 0);
    }
    const text = await cli();
    process.stdout.write(`${text.replace(/^/gm, '# ')}\n`);
    assert.match(text, /shop\/reviews\s+shop\/reviews\s+shop\/reviews-v2\s+rolled back\s+0%/);
    assert.match(
      text,
      /shop\/reviews-grpc\s+shop\/reviews-grpc \(GRPCRoute\)\s+shop\/reviews-v2-grpc\s+rolled back\s+0%/,
    );
    assert.match(text, /shop\/reviews: 10% -> 0% at .*: canary success rate [\d.]+ % < 95 %: weight 10 -> 0/);
    const json = JSON.parse(await cli('--json')) as { guards: CanaryStatus[] };
    assert.equal(json.guards.length, 2);
    const metrics = await adminGet('/metrics');
    assert.match(metrics, /sockmesh_canary_weight\{guard="shop\/reviews",phase="RolledBack"\} 0/);
    assert.match(
      metrics,
      /sockmesh_canary_decisions_total\{guard="shop\/reviews",action="RollBack",reason="SuccessRateBelowBound"\} 1/,
    );
    const log = readFileSync(join(mesh.paths.logs, 'control-plane.log'), 'utf8');
    assert.match(log, /"msg":"canary rolled back".*"guard":"shop\/reviews"/);
  });

  it('a healthy canary is promoted step by step (25 -> 50 -> 100) under load, 0 failed', async () => {
    const text = readFileSync(join(CANARY, '80-canary.yaml'), 'utf8').replaceAll(
      '  minRequests: 10\n',
      '  minRequests: 10\n  steps: [25, 50, 100]\n',
    );
    assert.ok(text.includes('steps: [25, 50, 100]'));
    const run = timeline(30_000);
    await run.flowing;
    // A changed guard is a new release: it starts again from the route's written 10 %.
    mesh.writeManifest('80-canary.yaml', text);
    const promoted = await eventually(
      'both canaries promoted',
      guards,
      (gs) => gs.every((g) => g.phase === 'Promoted'),
      60_000,
    );
    for (const g of promoted) assert.equal(g.weight, 100);
    const records = await run.result;
    assert.deepEqual(
      records.filter((r) => r[2] !== 200).slice(0, 5),
      [],
      'no failed request during promotion',
    );
    const steps = readFileSync(join(mesh.paths.logs, 'control-plane.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"msg":"canary promoted"') && l.includes('"guard":"shop/reviews"'))
      .map((l) => {
        const o = JSON.parse(l) as { from: number; to: number };
        return `${o.from}->${o.to}`;
      });
    assert.deepEqual(steps, ['10->25', '25->50', '50->100']);
    const promotedAt = Date.parse((await guard('shop/reviews')).lastTransition!.at);
    const last = records.filter((r) => r[0] > promotedAt + FOLLOW_MS);
    for (const mode of MODES) {
      const mine = last.filter((r) => r[1] === mode);
      if (mine.length > 0)
        assert.ok(
          mine.every((r) => r[3] === 'v2'),
          `${mode}: all v2 at 100 %`,
        );
    }
    const out = await cli();
    process.stdout.write(`${out.replace(/^/gm, '# ')}\n`);
    assert.match(
      out,
      /shop\/reviews\s+shop\/reviews\s+shop\/reviews-v2\s+promoted\s+100%\s+3\/3 \(25,50,100\)/,
    );
  });
});
