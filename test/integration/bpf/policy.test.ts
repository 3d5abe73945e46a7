/**
 * Kernel L4 policy against a real kernel: seeded AuthorizationPolicy tables,
 * translated and parsed as an agent receives them, compiled into the BPF maps;
 * real connect() calls from pods (own netns and cgroup) decide at connect4,
 * real plaintext connections decide at sk_lookup, and every answer must be the
 * proxy Authorizer's. Denied connects fail with EPERM before any packet: the
 * stand-in proxy never accepts them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  type KernelPolicyTable,
  type KernelRule,
  POLICY_LIMITS,
  type SockopsDataplane,
} from '../../../bpf-sockops/index.js';
import { TestBed } from '../../../lab/testbed.js';
import type { LabNode, LabPod } from '../../../lab/types.js';
import { Authorizer } from '../../../mesh-agent/authz/authorizer.js';
import { compileKernelPolicy } from '../../../mesh-agent/authz/kernel-policy.js';
import type { RbacConfig } from '../../../mesh-agent/authz/rbac.js';
import { mulberry32 } from '../../../scripts/fuzz/manifest-fuzz.js';
import {
  generateTable,
  type Identity,
  identity,
  NAMED_PORTS,
  OTHER_PORT,
  proxyDeniesAll,
  withoutHttpDenies,
} from '../../helpers/policy-table.js';
import {
  addPods,
  Dialers,
  eventually,
  type Fixture,
  Fixtures,
  openDataplane,
  type runFixture,
} from './helpers.js';

const PROXY_PORT = 15001;
const SEED = Number(process.env.SOCKMESH_POLICY_SEED ?? 19);
const CASES = Number(process.env.SOCKMESH_POLICY_CASES ?? 3000);
const PORTS = [...NAMED_PORTS, OTHER_PORT];

/** Caller pods by identity; one more identity has no pod here (it only shapes the id space). */
const CALLERS: Record<string, Identity> = {
  ax: identity('a', 'x'),
  ay: identity('a', 'y'),
  bx: identity('b', 'x'),
  cz: identity('c', 'z'),
};
const IDENTITIES = [...Object.values(CALLERS), identity('c', 'x')];
const IDS = new Map(IDENTITIES.map((i, n) => [i.spiffeId, n + 1]));

describe('bpf-sockops kernel L4 policy', { timeout: 300_000 }, () => {
  let bed: TestBed;
  let node1: LabNode;
  let dp: SockopsDataplane | undefined;
  let proxy: Fixture;
  const pods: Record<string, LabPod> = {};
  const fixtures = new Fixtures();
  const spawn = (...args: Parameters<typeof runFixture>) => fixtures.spawn(...args);
  const dialers = new Dialers((from) => spawn(bed, from, 'dialer.ts', []));
  const sources = () =>
    new Map(Object.keys(CALLERS).map((k) => [pods[k]!.cgroupId, IDS.get(CALLERS[k]!.spiffeId)!]));

  before(async () => {
    bed = await TestBed.create({ nodes: 1 });
    [node1] = bed.nodes as [LabNode];
    Object.assign(
      pods,
      await addPods(bed, 'kpolicy', {
        ax: 'node1',
        ay: 'node1',
        bx: 'node1',
        cz: 'node1',
        plain: 'node1',
        web: 'node1',
      }),
    );
    dp = openDataplane(node1, PROXY_PORT);
    for (const k of Object.keys(CALLERS)) dp.enrolPod(pods[k]!.cgroupId, { mode: 'permissive' });
    proxy = spawn(bed, node1, 'echo-server.ts', [
      '--name',
      'proxy',
      '--listen',
      `${node1.gatewayIp}:${PROXY_PORT}`,
      '--orig-dst',
      node1.bpffsDir,
    ]);
    await proxy.waitFor((e) => e.event === 'listening', 20_000, 'proxy listening');
    await dialers.start([...Object.keys(CALLERS).map((k) => pods[k]!), pods.plain!]);
  });

  after(async () => {
    await fixtures.stopAll();
    try {
      dp?.detach();
    } finally {
      await bed?.destroy();
    }
  });

  test(`connect4 verdicts equal the proxy Authorizer on ${CASES} seeded pairs (seed ${SEED})`, async () => {
    const rand = mulberry32(SEED);
    const gen = generateTable(rand, IDENTITIES, 12);
    // Two pod addresses per destination workload; they are never dialed for real (connect4 redirects or refuses).
    const dests: { ip: string; app: string; rbac: RbacConfig[] }[] = [];
    for (const [app, rbac] of gen.sets) {
      for (const host of [1, 2]) dests.push({ ip: `10.99.${app.slice(1)}.${host}`, app, rbac });
    }
    const compiled = compileKernelPolicy({ identities: IDS, destinations: dests, sources: sources() });
    dp!.policy.replace(compiled);
    const before = new Map(dp!.policy.counters().map((c) => [c.policy, c]));

    const cases = Array.from({ length: CASES }, () => ({
      from: pick(rand, Object.keys(CALLERS)),
      dest: pick(rand, dests),
      port: pick(rand, PORTS),
    }));
    const denied = new Set<string>();
    let expectDenied = 0;
    let kernelAllowed = 0;
    const mismatches: string[] = [];
    await pool(cases, 24, async (c) => {
      const caller = CALLERS[c.from]!;
      const authz = new Authorizer(c.dest.rbac);
      const want = authz.evaluate({
        sourcePrincipal: caller.spiffeId,
        sourceNamespace: caller.namespace,
        destinationPort: c.port,
      });
      // Where an ALLOW policy reads HTTP the kernel must pass (the proxy may allow some requests);
      // where only a DENY one does, the kernel decides without it: it denies exactly what the
      // L4 rules deny, and the proxy denies that too, whatever request comes.
      const l4 = new Authorizer(withoutHttpDenies(c.dest.rbac)).evaluate({
        sourcePrincipal: caller.spiffeId,
        sourceNamespace: caller.namespace,
        destinationPort: c.port,
      });
      const kernelDenies = gen.l7Allow.has(c.dest.app)
        ? false
        : gen.l7.has(c.dest.app)
          ? !l4.allowed
          : !want.allowed;
      if (
        kernelDenies &&
        !proxyDeniesAll(authz, { principal: caller.spiffeId, namespace: caller.namespace }, c.port)
      )
        mismatches.push(`${c.dest.app}:${c.port}: the oracle would deny what the proxy allows`);
      const to = `${c.dest.ip}:${c.port}`;
      const r = await dialers.dial(pods[c.from]!, to, 5_000);
      const at = `${caller.spiffeId} -> ${c.dest.app} ${to}`;
      if (kernelDenies) {
        expectDenied++;
        denied.add(`${pods[c.from]!.ip}>${to}`);
        if (r.ok || r.code !== 'EPERM')
          mismatches.push(`${at}: want EPERM, got ${r.ok ? 'connected' : r.code}`);
      } else if (!r.ok || r.greeting !== 'proxy') {
        mismatches.push(`${at}: want the proxy, got ${r.ok ? r.greeting : r.code}`);
      }
      // The explain view reads the same maps the kernel read.
      const d = dp!.policy.decide(IDS.get(caller.spiffeId), c.dest.ip, c.port);
      if ((d.verdict === 'deny') !== kernelDenies) mismatches.push(`${at}: decide() says ${d.verdict}`);
      if (d.verdict === 'allow') kernelAllowed++;
    });
    assert.deepEqual(mismatches.slice(0, 10), [], `${mismatches.length} of ${CASES} cases disagree`);
    assert.ok(expectDenied > CASES / 10, `only ${expectDenied} denied cases: the generator is too lenient`);
    assert.ok(CASES - expectDenied > CASES / 10, 'the generator denies almost everything');

    // Never reached the proxy: every accepted connection was an allowed one.
    const accepts = await eventually(
      () => proxy.events.filter((e) => e.event === 'accept'),
      (a) => a.length >= CASES - expectDenied,
    );
    assert.equal(accepts.length, CASES - expectDenied);
    assert.deepEqual(
      accepts.filter((a) => denied.has(`${String(a.peer).split(':')[0]}>${String(a.orig)}`)),
      [],
    );
    // Per-policy counters add up to what callers saw.
    const after = dp!.policy.counters();
    const delta = (k: 'allowed' | 'denied') =>
      after.reduce((n, c) => n + Number(c[k] - (before.get(c.policy)?.[k] ?? 0n)), 0);
    assert.equal(delta('denied'), expectDenied);
    assert.equal(delta('allowed'), kernelAllowed);
  });

  test('sk_lookup denies plaintext the proxy would deny to an unauthenticated caller, with a reset', async () => {
    const inbound = spawn(bed, node1, 'inbound-proxy.ts', [
      node1.cgroupPath,
      node1.bpffsDir,
      pods.web!.ip,
      `/run/netns/${pods.web!.netns}`,
    ]);
    await inbound.waitFor((e) => e.event === 'listening', 20_000, 'inbound proxy listening');
    const rand = mulberry32(SEED + 1);
    const gen = generateTable(rand, IDENTITIES, 16);
    let checked = 0;
    let refused = 0;
    for (const [app, rbac] of gen.sets) {
      if (gen.l7Allow.has(app)) continue;
      dp!.policy.replace(
        compileKernelPolicy({
          identities: IDS,
          destinations: [{ ip: pods.web!.ip, rbac }],
          sources: sources(),
        }),
      );
      const authz = new Authorizer(withoutHttpDenies(rbac));
      for (const port of PORTS) {
        const want = authz.evaluate({
          sourcePrincipal: undefined,
          sourceNamespace: undefined,
          destinationPort: port,
        });
        const to = `${pods.web!.ip}:${port}`;
        const seen = inbound.events.length;
        const r = await dialers.dial(pods.plain!, to, 5_000);
        checked++;
        if (!want.allowed) {
          refused++;
          assert.equal(r.code, 'ECONNREFUSED', `${app} ${to}: plaintext should be refused`);
          assert.equal(
            inbound.events.slice(seen).filter((e) => e.event === 'accept').length,
            0,
            'the proxy accepted a denied connection',
          );
        } else {
          assert.notEqual(r.code, 'ECONNREFUSED', `${app} ${to}: plaintext should reach the proxy`);
          await inbound.waitFor((e) => e.event === 'accept' && e.orig === to, 5_000, `accept of ${to}`);
        }
      }
    }
    assert.ok(refused > 0 && refused < checked, `${refused} of ${checked} refused: both kinds must be seen`);
  });

  test('a rule set beyond the bound is refused whole and the live one stays', () => {
    const live = compileKernelPolicy({
      identities: IDS,
      destinations: [{ ip: '10.98.0.1', rbac: [{ action: 'ALLOW', policies: [] }] }],
      sources: sources(),
    });
    dp!.policy.replace(live);
    const id = IDS.get(CALLERS.ax!.spiffeId)!;
    const swaps = dp!.policy.status().swaps;
    assert.equal(dp!.policy.decide(id, '10.98.0.1', 80).verdict, 'deny');
    const rules: KernelRule[] = Array.from({ length: POLICY_LIMITS.rules + 1 }, (_, i) => ({
      source: 1 + (i % 5000),
      destination: 1 + Math.floor(i / 5000),
      port: 0,
      verdict: 'allow',
      policy: 0,
    }));
    const tooBig: KernelPolicyTable = { destinations: new Map(), sources: sources(), rules, policies: ['x'] };
    assert.throws(
      () => dp!.policy.replace(tooBig),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SOCKMESH_E_POLICY_TOO_LARGE');
        assert.match(err.message, /100001 rules, more than the 100000/);
        return true;
      },
    );
    assert.equal(dp!.policy.status().swaps, swaps);
    assert.equal(dp!.policy.decide(id, '10.98.0.1', 80).verdict, 'deny', 'the live rule set is gone');
  });

  test('swapping rule sets under concurrent connects never decides from a mixed generation', async () => {
    const target = '10.97.0.1';
    const caller = IDS.get(CALLERS.ax!.spiffeId)!;
    // Rule set k: the target is policy set k, denied when k is odd, allowed when even. Every
    // set also carries "poison" rules for the sets of its neighbours, which only a verdict that
    // took the target's set from one generation and the rules from another could reach.
    const POISON = 3;
    const table = (k: number): KernelPolicyTable => {
      const rules: KernelRule[] = [];
      // Filler (other callers) widens the time each swap takes to write.
      for (let i = 0; i < 4000; i++)
        rules.push({ source: 100 + i, destination: k, port: 0, verdict: 'deny', policy: 0 });
      for (let j = Math.max(1, k - 4); j <= k + 4; j++) {
        if (j !== k)
          rules.push({
            source: caller,
            destination: j,
            port: 0,
            verdict: j % 2 ? 'allow' : 'deny',
            policy: POISON,
          });
      }
      rules.push({
        source: caller,
        destination: k,
        port: 0,
        verdict: k % 2 ? 'deny' : 'allow',
        policy: k % 2 ? 1 : 2,
      });
      return {
        destinations: new Map([[target, k]]),
        sources: sources(),
        rules,
        policies: ['filler', 'odd-denies', 'even-allows', 'poison'],
      };
    };
    dp!.policy.replace(table(1));
    const start = dp!.policy.counters();
    const loop = spawn(bed, pods.ax!, 'connect-loop.ts', [`${target}:80`, '4']);
    await loop.waitFor((e) => e.event === 'ready', 20_000, 'connect loop ready');
    const SWAPS = 40;
    for (let k = 2; k <= SWAPS; k++) {
      dp!.policy.replace(table(k));
      await new Promise((r) => setImmediate(r));
    }
    loop.send('stop');
    const done = await loop.waitFor((e) => e.event === 'done', 20_000, 'connect loop done');
    const end = dp!.policy.counters();
    const d = (i: number, k: 'allowed' | 'denied') => Number(end[i]![k] - start[i]![k]);
    assert.equal(d(3, 'allowed') + d(3, 'denied'), 0, 'a verdict came from poison rules: generations mixed');
    assert.equal(d(1, 'allowed') + d(2, 'denied'), 0, 'a rule gave another verdict than its own');
    assert.deepEqual(done.other, {}, 'every connect was either refused or reached the proxy');
    assert.equal(done.eperm, d(1, 'denied'), 'EPERM exactly for the kernel denials');
    assert.ok(d(1, 'denied') > 0 && d(2, 'allowed') > 0, `both rule sets decided: ${JSON.stringify(done)}`);
  });
});

function pick<T>(rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)]!;
}

async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
