/**
 * `sockmesh explain` on the example shop, against the live agents and control
 * plane of one local mesh (2 nodes, real BPF, mTLS). Every explanation is
 * checked against what real traffic of the same pair does.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { explainCommand } from '../../cli/commands/explain.js';
import type { Explanation } from '../../cli/explain/model.js';
import type { LocalMesh } from '../../lab/mesh.js';
import { isSockmeshError } from '../../lib/errors.js';
import type { InboundExplanation } from '../../mesh-agent/explain/types.js';
import { FIXTURES } from '../helpers/lab.js';
import { call, eventually, startShop } from '../helpers/mesh.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const GRPC_ROUTE = fileURLToPath(new URL('./manifests-grpcroute/', import.meta.url));
const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';

describe('sockmesh explain (2 nodes, real BPF, live agents)', () => {
  let mesh: LocalMesh;

  const explain = async (...argv: string[]): Promise<string> => {
    let out = '';
    const stdout = new Writable({
      write(chunk, _enc, done) {
        out += String(chunk);
        done();
      },
    });
    await explainCommand.run({ argv: [...argv, '--run', mesh.bed.runId], stdout, stderr: stdout });
    return out;
  };
  const explainJson = async (...argv: string[]) =>
    JSON.parse(await explain(...argv, '--json')) as Explanation;
  const inboundOf = (e: Explanation) =>
    e.inbound.map((a) => {
      assert.ok(!('error' in a.answer), `agent of ${a.node}: ${JSON.stringify(a.answer)}`);
      return a.answer as InboundExplanation;
    });

  before(async () => {
    mesh = await startShop([GRPC_ROUTE]);
  });
  after(async () => {
    await mesh?.stop();
  });

  it('a canary route with a header match: which rule matches, why the other does not, the split and its endpoints', async () => {
    const plain = await explainJson('shop/frontend-1', 'reviews.shop:9080/');
    const o = plain.outbound;
    assert.equal(o.source.pod, 'shop/frontend-1');
    assert.equal(o.source.enrolled?.mode, 'strict', 'the kernel membership map holds the frontend');
    assert.equal(o.source.svid?.spiffeId, FRONTEND);
    assert.equal(o.capture.captured, true);
    assert.equal(o.listener.kind, 'http');
    const [canaryRule, splitRule] = o.http!.routes;
    assert.equal(canaryRule?.httpRoute, 'shop/reviews');
    assert.equal(canaryRule?.result, 'no-match');
    assert.match(canaryRule!.mismatch!, /header x-canary exact "true": the request has none/);
    assert.equal(splitRule?.result, 'matched');
    assert.deepEqual(
      plain.split?.served.map((t) => [t.service, t.weight]),
      [
        ['reviews-v1.shop', 90],
        ['reviews-v2.shop', 10],
      ],
    );
    assert.deepEqual(
      plain.split?.written.map((w) => w.weight),
      [90, 10],
    );
    const byService = new Map(o.clusters.map((c) => [c.service, c]));
    assert.equal(byService.get('reviews-v1.shop')?.endpoints[0]?.path, 'same-node');
    assert.equal(byService.get('reviews-v2.shop')?.endpoints[0]?.path, 'tunnel');
    assert.equal(byService.get('reviews-v2.shop')?.endpoints[0]?.tunnel, '10.10.0.2:15008');
    assert.deepEqual(
      inboundOf(plain).map((i) => [i.destination.pod, i.caller.principal, i.authorization.policy]),
      [
        ['shop/reviews-v1-1', FRONTEND, 'shop/reviews-callers/rule-0'],
        ['shop/reviews-v2-1', FRONTEND, 'shop/reviews-callers/rule-0'],
      ],
    );
    assert.equal(plain.verdict.outcome, 'allowed');

    const tester = await explainJson('shop/frontend-1', 'reviews.shop:9080/', '--header', 'x-canary: true');
    assert.deepEqual(
      tester.outbound.http!.routes.map((r) => r.result),
      ['matched', 'not-reached'],
    );
    assert.deepEqual(
      tester.split?.served.map((t) => [t.service, t.share]),
      [['reviews-v2.shop', 1]],
    );
    assert.deepEqual(
      tester.inbound.map((a) => a.endpoint),
      ['10.244.2.10:9080'],
    );
    // What explain says is what the data path does: the header reaches v2 only.
    for (let i = 0; i < 5; i++) {
      const r = await call(mesh, 'shop/frontend-1', 'http://reviews.shop:9080/', {
        headers: { 'x-canary': 'true' },
      });
      assert.equal(JSON.parse(r.body).version, 'v2');
    }

    const text = await explain('shop/frontend-1', 'reviews.shop:9080/');
    assert.match(text, /shop\/reviews rule 0 +prefix \/ and header x-canary exact "true" +no match/);
    assert.match(text, /split: +served reviews-v1\.shop 90%, reviews-v2\.shop 10%/);
    assert.match(text, /verdict: +allowed/);
  });

  it('a GRPCRoute: named as one, which rule matches an RPC, the split, and real h2c calls agree', async () => {
    const rate = await explainJson(
      'shop/frontend-1',
      'reviews.shop:9091/shop.Reviews/Rate',
      '--method',
      'POST',
    );
    assert.deepEqual(
      rate.outbound.http!.routes.map((r) => [r.httpRoute, r.routeKind, r.rule, r.result]),
      [
        ['shop/reviews-grpc', 'GRPCRoute', 0, 'matched'],
        ['shop/reviews-grpc', 'GRPCRoute', 1, 'not-reached'],
      ],
    );
    assert.deepEqual(
      [rate.split?.httpRoute, rate.split?.routeKind, rate.split?.served.map((t) => t.service)],
      ['shop/reviews-grpc', 'GRPCRoute', ['reviews-v2-grpc.shop']],
    );
    const get = await explainJson(
      'shop/frontend-1',
      'reviews.shop:9091/shop.Reviews/Get',
      '--method',
      'POST',
    );
    assert.deepEqual(
      get.outbound.http!.routes.map((r) => r.result),
      ['no-match', 'matched'],
    );
    assert.deepEqual(
      get.split?.written.map((w) => [w.service, w.weight]),
      [
        ['reviews-v1-grpc.shop', 90],
        ['reviews-v2-grpc.shop', 10],
      ],
    );
    const text = await explain('shop/frontend-1', 'reviews.shop:9091/shop.Reviews/Get', '--method', 'POST');
    assert.match(text, /shop\/reviews-grpc \(GRPCRoute\) rule 0 +path \/shop\.Reviews\/Rate +no match/);
    assert.match(text, /shop\/reviews-grpc \(GRPCRoute\) rule 1 +.* +matched/);
    // What explain says is what the data path does: Rate reaches v2 only, over one h2c connection.
    const res = await mesh.exec('shop/frontend-1', [
      process.execPath,
      join(FIXTURES, 'h2c-client.mjs'),
      'http://reviews.shop:9091/shop.Reviews/Rate',
      '5',
      JSON.stringify({ ':method': 'POST' }),
    ]);
    const answers = JSON.parse(res.stdout) as Array<{ status: number; body: string }>;
    assert.deepEqual(
      answers.map((a) => [a.status, JSON.parse(a.body).version]),
      Array(5).fill([200, 'v2']),
    );
  });

  it('a denied pair: the destination agent names the deciding policy rule, and real traffic gets 403', async () => {
    const noAllow = await explainJson('shop/ratings-1', 'reviews.shop');
    assert.equal(noAllow.verdict.outcome, 'denied');
    for (const i of inboundOf(noAllow)) {
      assert.equal(i.authorization.allowed, false);
      assert.equal(i.authorization.reason, 'no-allow-match');
      assert.deepEqual(
        i.authorization.policies.map((p) => [p.name, p.action]),
        [['shop/reviews-callers/rule-0', 'ALLOW']],
      );
    }
    assert.equal((await call(mesh, 'shop/ratings-1', 'http://reviews.shop:9080/')).status, 403);

    const admin = mesh.admin();
    try {
      const r = await admin.apply(
        readFileSync(join(REPO, 'examples/journeys/deny-frontend-to-ratings.yaml'), 'utf8'),
      );
      assert.equal(r.applied, true);
    } finally {
      await admin.close();
    }
    const denied = await eventually(
      'the DENY policy reaches the agent of node2',
      () => explainJson('shop/frontend-1', 'ratings.shop:9080/'),
      (e) => e.verdict.outcome === 'denied',
    );
    const [at] = inboundOf(denied);
    assert.equal(at?.authorization.reason, 'denied-by-policy');
    assert.equal(at?.authorization.policy, 'shop/ratings-deny-frontend/rule-0');
    const real = await call(mesh, 'shop/frontend-1', 'http://ratings.shop:9080/');
    assert.equal(real.status, 403);
    assert.match(real.body, /shop\/ratings-deny-frontend\/rule-0/);
    assert.match(
      await explain('shop/frontend-1', 'ratings.shop:9080/'),
      /authz: +shop\/ratings-1 on node2 \(strict, http\): DENY by shop\/ratings-deny-frontend\/rule-0/,
    );

    // The Service address is left to the proxy; the pod's own address is refused at connect4.
    assert.equal(denied.kernel?.decision, null);
    assert.match(denied.kernel?.note ?? '', /Service address/);
    const direct = await eventually(
      'the kernel rule set of node1 holds the DENY',
      () => explainJson('shop/frontend-1', 'shop/ratings-1'),
      (e) => e.kernel?.decision?.verdict === 'deny',
    );
    assert.equal(direct.kernel?.hook, 'connect4');
    assert.equal(direct.kernel?.node, 'node1');
    assert.match(
      direct.kernel?.decision?.verdict === 'deny' ? direct.kernel.decision.policy : '',
      /ratings-deny-frontend/,
    );
    assert.equal(direct.verdict.outcome, 'denied');
    assert.match(direct.verdict.summary, /refused in the kernel at connect4/);
    assert.match(await explain('shop/frontend-1', 'shop/ratings-1'), /kernel: +connect4 on node1: DENY by /);
    const probe = `const s=require('node:net').connect(9080,'10.244.2.11');s.on('connect',()=>{console.log('connected');process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)});setTimeout(()=>{console.log('timeout');process.exit(0)},2000)`;
    assert.equal(
      (await mesh.exec('shop/frontend-1', [process.execPath, '-e', probe])).stdout.trim(),
      'EPERM',
    );
  });

  it('an unmeshed source: not in the membership map, not captured, the VIP unreachable', async () => {
    const e = await explainJson('legacy/client', 'ratings.shop:9080');
    assert.equal(e.source.namespace.meshed, false);
    assert.equal(e.outbound.source.pod, null);
    assert.equal(e.outbound.source.enrolled, null, "the client's cgroup is not in sm_pods");
    assert.equal(e.outbound.capture.captured, false);
    assert.equal(e.verdict.outcome, 'unreachable');
    assert.equal((await call(mesh, 'legacy/client', 'http://ratings.shop:9080/')).status, 0);
  });

  it('a strict bypass: plaintext from an unmeshed pod to a strict pod is dropped in the kernel', async () => {
    const e = await explainJson('legacy/client', 'shop/ratings-1');
    assert.equal(e.destination.port, 9080);
    assert.equal(e.outbound.capture.captured, false);
    const [i] = inboundOf(e);
    assert.equal(i?.destination.enrolled?.mode, 'strict');
    assert.equal(i?.caller.principal, null);
    assert.equal(i?.plaintext?.verdict, 'dropped-in-kernel');
    assert.equal(e.verdict.outcome, 'dropped');
    // The SYN is dropped: no answer at all within 2 s (a refusal would be a reset).
    const probe = `const s=require('node:net').connect(9080,'10.244.2.11');s.on('connect',()=>{console.log('connected');process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)});setTimeout(()=>{console.log('timeout');process.exit(0)},2000)`;
    const real = await mesh.exec('legacy/client', [process.execPath, '-e', probe]);
    assert.equal(real.stdout.trim(), 'timeout');
  });

  it('names an unknown pod or Service, with what is known', async () => {
    const said = async (...argv: string[]) => {
      try {
        await explain(...argv);
      } catch (err) {
        assert.ok(isSockmeshError(err), String(err));
        return `${err.code}: ${err.describe()}`;
      }
      assert.fail(`explain ${argv.join(' ')} did not fail`);
    };
    assert.match(
      await said('shop/nope-1', 'reviews.shop'),
      /SOCKMESH_E_NOT_FOUND: .*no pod shop\/nope-1 .*known pods: shop\/frontend-1/,
    );
    assert.match(await said('shop/frontend-1', 'nope.shop'), /no Service nope\.shop .*known: frontend\.shop/);
    assert.match(
      await said('shop/frontend-1', 'reviews.shop:1234'),
      /has no port 1234 .*its ports: 9080, 9091/,
    );
  });
});
