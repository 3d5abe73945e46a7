import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Authorizer } from '../../../mesh-agent/authz/authorizer.js';
import {
  ANY_PORT,
  type CompiledKernelPolicy,
  compileKernelPolicy,
  DEFAULT_DENY,
  PLAINTEXT_IDENTITY,
  policyOfRule,
} from '../../../mesh-agent/authz/kernel-policy.js';
import { mulberry32 } from '../../../scripts/fuzz/manifest-fuzz.js';
import {
  generateTable,
  identity,
  NAMED_PORTS,
  OTHER_PORT,
  proxyDeniesAll,
} from '../../helpers/policy-table.js';

const IDENTITIES = [
  identity('a', 'x'),
  identity('a', 'y'),
  identity('b', 'x'),
  identity('c', 'z'),
  identity('c', 'x'),
];

/** What connect4/sk_lookup compute from the compiled table (include/policy.bpf.h, in JS). */
function kernelLookup(c: CompiledKernelPolicy, source: number, ip: string, port: number) {
  const dest = c.destinations.get(ip);
  if (dest === undefined) return undefined;
  const find = (p: number) =>
    c.rules.find((r) => r.source === source && r.destination === dest && r.port === p);
  const r = find(port) ?? find(ANY_PORT);
  return r && { verdict: r.verdict, policy: c.policies[r.policy] };
}

test('the compiled table gives the Authorizer answer for every caller, destination and port', () => {
  for (const seed of [1, 2, 3, 19, 2026]) {
    const gen = generateTable(mulberry32(seed), IDENTITIES, 24);
    const ids = new Map(IDENTITIES.map((i, n) => [i.spiffeId, n + 1]));
    const destinations = [...gen.sets].map(([app, rbac]) => ({ ip: `10.99.0.${app.slice(1)}`, rbac }));
    const c = compileKernelPolicy({ identities: ids, destinations, sources: new Map() });
    let decided = 0;
    for (const [app, rbac] of gen.sets) {
      const ip = `10.99.0.${app.slice(1)}`;
      const authz = new Authorizer(rbac);
      if (gen.l7Allow.has(app)) {
        assert.equal(c.destinations.has(ip), false, `${app} allows by HTTP: the proxy decides`);
        continue;
      }
      for (const caller of [undefined, ...IDENTITIES]) {
        for (const port of [...NAMED_PORTS, OTHER_PORT, 1, 65535]) {
          const want = authz.evaluate({
            sourcePrincipal: caller?.spiffeId,
            sourceNamespace: caller?.namespace,
            destinationPort: port,
          });
          const got = kernelLookup(c, caller ? ids.get(caller.spiffeId)! : PLAINTEXT_IDENTITY, ip, port);
          if (authz.isEmpty) {
            assert.equal(got, undefined, 'no policy: no rules, the proxy allows');
            continue;
          }
          decided++;
          const at = `seed ${seed} ${caller?.spiffeId ?? 'plaintext'} -> ${app}:${port}`;
          if (gen.l7.has(app)) {
            // Only DENY policies read HTTP here: the kernel may deny less than the proxy, never more.
            const who = { principal: caller?.spiffeId, namespace: caller?.namespace };
            if (got?.verdict === 'deny') assert.ok(proxyDeniesAll(authz, who, port), at);
            continue;
          }
          if (gen.l7.has(app)) {
            // HTTP DENY rules: the kernel may deny less than the proxy, never more.
            if (got?.verdict === 'deny')
              assert.ok(
                proxyDeniesAll(authz, { principal: caller?.spiffeId, namespace: caller?.namespace }, port),
                at,
              );
            continue;
          }
          assert.equal(got?.verdict, want.allowed ? 'allow' : 'deny', at);
          if (!want.allowed)
            assert.equal(
              got?.policy,
              want.policy === undefined ? DEFAULT_DENY : policyOfRule(want.policy),
              at,
            );
        }
      }
    }
    assert.ok(decided > 200, `seed ${seed}: only ${decided} decided cases`);
  }
});

test('pods sharing one RBAC share one policy set, and ports no policy names share one rule', () => {
  const gen = generateTable(mulberry32(7), IDENTITIES, 6);
  const rbac = [...gen.sets.values()].find((r) => r.length > 0 && !JSON.stringify(r).includes('header'))!;
  const c = compileKernelPolicy({
    identities: new Map(IDENTITIES.map((i, n) => [i.spiffeId, n + 1])),
    destinations: [
      { ip: '10.0.0.1', rbac },
      { ip: '10.0.0.2', rbac },
    ],
    sources: new Map(),
  });
  assert.equal(c.destinations.get('10.0.0.1'), c.destinations.get('10.0.0.2'));
  // At most one rule per (caller, port named) plus the any-port one.
  assert.ok(c.rules.length <= (IDENTITIES.length + 1) * (NAMED_PORTS.length + 1), `${c.rules.length} rules`);
});

test('an ALLOW policy with no rule denies every caller, counted as default-deny', () => {
  const c = compileKernelPolicy({
    identities: new Map([[IDENTITIES[0]!.spiffeId, 1]]),
    destinations: [{ ip: '10.0.0.1', rbac: [{ action: 'ALLOW', policies: [] }] }],
    sources: new Map(),
  });
  assert.deepEqual(kernelLookup(c, 1, '10.0.0.1', 80), { verdict: 'deny', policy: DEFAULT_DENY });
  assert.deepEqual(kernelLookup(c, PLAINTEXT_IDENTITY, '10.0.0.1', 80), {
    verdict: 'deny',
    policy: DEFAULT_DENY,
  });
});

test('a wide port range leaves its destination to the proxy', () => {
  const c = compileKernelPolicy({
    identities: new Map(),
    destinations: [
      {
        ip: '10.0.0.1',
        rbac: [
          {
            action: 'DENY',
            policies: [
              {
                name: 'ns/p/rule-0',
                permissions: [{ kind: 'destination-port-range', start: 1000, end: 60000 }],
                principals: [{ kind: 'any' }],
              },
            ],
          },
        ],
      },
    ],
    sources: new Map(),
  });
  assert.deepEqual(c.passed, [{ ip: '10.0.0.1', reason: 'wide-port-range' }]);
  assert.equal(c.rules.length, 0);
});
