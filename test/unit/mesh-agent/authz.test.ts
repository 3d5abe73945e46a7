import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Authorizer,
  type AuthzRequest,
  parseRbac,
  parseRbacFilter,
} from '../../../mesh-agent/authz/index.js';
import { NETWORK_RBAC_TYPE } from '../../../xds/protos.js';
import { type Raw, TD, wire } from './fixtures/envoy.js';

/** An RBAC config as it arrives inside a network RBAC filter (through the real codec). */
function rbac(
  action: 'ALLOW' | 'DENY',
  policies: Record<string, { permissions: Raw[]; principals: Raw[] }>,
): Raw {
  return wire(NETWORK_RBAC_TYPE, { stat_prefix: 'rbac', rules: { action, policies } });
}

const spiffe = (ns: string, sa: string) => `${TD}/ns/${ns}/sa/${sa}`;
const principal = (m: Raw) => ({ authenticated: { principal_name: m } });
const any = { any: true };

function r(src: string | undefined, port = 9080, http: Partial<AuthzRequest> = {}): AuthzRequest {
  const ns = src ? /\/ns\/([^/]+)\//.exec(src)?.[1] : undefined;
  return { sourcePrincipal: src, sourceNamespace: ns, destinationPort: port, ...http };
}

const denyLegacy = rbac('DENY', {
  'shop/deny-legacy': {
    permissions: [any],
    principals: [principal({ exact: spiffe('legacy', 'old-client') })],
  },
});

const allowShop = rbac('ALLOW', {
  'shop/allow-frontend': {
    permissions: [
      {
        and_rules: {
          rules: [
            { destination_port: 9080 },
            {
              or_rules: {
                rules: [
                  { header: { name: ':method', string_match: { exact: 'GET' } } },
                  { header: { name: ':method', string_match: { exact: 'HEAD' } } },
                ],
              },
            },
            { url_path: { path: { prefix: '/api/' } } },
          ],
        },
      },
    ],
    principals: [principal({ exact: spiffe('shop', 'frontend') })],
  },
  'shop/allow-ops-namespace': {
    permissions: [{ destination_port_range: { start: 9000, end: 9100 } }],
    principals: [
      {
        metadata: {
          filter: 'sockmesh',
          path: [{ key: 'source.namespace' }],
          value: { string_match: { exact: 'ops' } },
        },
      },
    ],
  },
  'shop/allow-batch-prefix': {
    permissions: [{ not_rule: { url_path: { path: { suffix: '.secret' } } } }],
    principals: [principal({ prefix: `${TD}/ns/batch/` })],
  },
});

describe('Authorizer: DENY first, then ALLOW', () => {
  const authz = Authorizer.fromWire([allowShop, denyLegacy]);
  const table: Array<[string, AuthzRequest, boolean, string | undefined]> = [
    [
      'frontend GET /api',
      r(spiffe('shop', 'frontend'), 9080, { method: 'GET', path: '/api/items?x=1' }),
      true,
      'shop/allow-frontend',
    ],
    [
      'frontend HEAD /api',
      r(spiffe('shop', 'frontend'), 9080, { method: 'HEAD', path: '/api/' }),
      true,
      'shop/allow-frontend',
    ],
    [
      'frontend POST /api',
      r(spiffe('shop', 'frontend'), 9080, { method: 'POST', path: '/api/items' }),
      false,
      undefined,
    ],
    [
      'frontend GET /admin',
      r(spiffe('shop', 'frontend'), 9080, { method: 'GET', path: '/admin' }),
      false,
      undefined,
    ],
    ['frontend on a TCP connection (no method/path)', r(spiffe('shop', 'frontend'), 9080), false, undefined],
    [
      'frontend on another port',
      r(spiffe('shop', 'frontend'), 8080, { method: 'GET', path: '/api/' }),
      false,
      undefined,
    ],
    ['ops namespace, port in range', r(spiffe('ops', 'anything'), 9099), true, 'shop/allow-ops-namespace'],
    ['ops namespace, range end is exclusive', r(spiffe('ops', 'anything'), 9100), false, undefined],
    ['batch prefix', r(spiffe('batch', 'job'), 1234, { path: '/x' }), true, 'shop/allow-batch-prefix'],
    [
      'batch prefix, not_rule excludes',
      r(spiffe('batch', 'job'), 1234, { path: '/x.secret' }),
      false,
      undefined,
    ],
    [
      'batch prefix on TCP: an ALLOW rule with a path condition never matches a TCP stream (Istio)',
      r(spiffe('batch', 'job'), 1234),
      false,
      undefined,
    ],
    ['prefix is not a substring match', r(`${TD}/ns/batchy/sa/x`, 1234), false, undefined],
    [
      'plaintext (no peer certificate)',
      r(undefined, 9080, { method: 'GET', path: '/api/' }),
      false,
      undefined,
    ],
    [
      'legacy client is denied before any allow',
      r(spiffe('legacy', 'old-client'), 9099),
      false,
      'shop/deny-legacy',
    ],
  ];
  for (const [name, req, allowed, policy] of table) {
    it(name, () => {
      const d = authz.evaluate(req);
      assert.equal(d.allowed, allowed);
      assert.equal(d.policy, policy);
    });
  }

  it('reports why', () => {
    assert.equal(authz.evaluate(r(spiffe('legacy', 'old-client'))).reason, 'denied-by-policy');
    assert.equal(authz.evaluate(r(spiffe('x', 'y'))).reason, 'no-allow-match');
    assert.equal(authz.evaluate(r(spiffe('ops', 'y'), 9000)).reason, 'allowed-by-policy');
  });
});

describe('Authorizer layering edge cases', () => {
  it('no configs: everything allowed', () => {
    const a = new Authorizer([]);
    assert.ok(a.isEmpty);
    assert.deepEqual(a.evaluate(r(undefined)), { allowed: true, reason: 'no-policies', policy: undefined });
  });

  it('DENY only: what does not match is allowed', () => {
    const a = Authorizer.fromWire([denyLegacy]);
    assert.ok(a.evaluate(r(spiffe('shop', 'x'))).allowed);
    assert.ok(a.evaluate(r(undefined)).allowed);
    assert.ok(!a.evaluate(r(spiffe('legacy', 'old-client'))).allowed);
  });

  it('an ALLOW config with no policies allows nothing', () => {
    const a = Authorizer.fromWire([rbac('ALLOW', {})]);
    assert.deepEqual(a.evaluate(r(spiffe('shop', 'x'))), {
      allowed: false,
      reason: 'no-allow-match',
      policy: undefined,
    });
  });

  it('ALLOW policies of several configs are a union', () => {
    const a = Authorizer.fromWire([
      rbac('ALLOW', { a: { permissions: [any], principals: [principal({ exact: spiffe('a', 'a') })] } }),
      rbac('ALLOW', { b: { permissions: [any], principals: [principal({ exact: spiffe('b', 'b') })] } }),
    ]);
    assert.equal(a.evaluate(r(spiffe('a', 'a'))).policy, 'a');
    assert.equal(a.evaluate(r(spiffe('b', 'b'))).policy, 'b');
  });

  it('LOG configs never decide', () => {
    const a = Authorizer.fromWire([
      rbac('DENY', {}),
      wire(NETWORK_RBAC_TYPE, {
        stat_prefix: 's',
        rules: { action: 'LOG', policies: { l: { permissions: [any], principals: [any] } } },
      }),
    ]);
    assert.ok(a.evaluate(r(undefined)).allowed);
  });

  it('authenticated without a name matches any verified peer; and/or/not principals', () => {
    const a = Authorizer.fromWire([
      rbac('ALLOW', {
        p: {
          permissions: [any],
          principals: [
            { and_ids: { ids: [{ authenticated: {} }, { not_id: principal({ suffix: '/sa/default' }) }] } },
          ],
        },
      }),
    ]);
    assert.ok(a.evaluate(r(spiffe('x', 'web'))).allowed);
    assert.ok(!a.evaluate(r(spiffe('x', 'default'))).allowed);
    assert.ok(!a.evaluate(r(undefined)).allowed);
  });

  it('HTTP-only conditions on TCP follow Istio: ALLOW rules with them never match, DENY rules with them do', () => {
    const a = Authorizer.fromWire([
      rbac('DENY', {
        'no-delete': {
          permissions: [{ header: { name: ':method', string_match: { exact: 'DELETE' } } }],
          principals: [any],
        },
      }),
      rbac('ALLOW', {
        'not-post': {
          permissions: [{ header: { name: ':method', string_match: { exact: 'POST' }, invert_match: true } }],
          principals: [any],
        },
      }),
    ]);
    assert.ok(!a.evaluate(r(undefined, 80, { method: 'DELETE', path: '/' })).allowed);
    assert.ok(!a.evaluate(r(undefined, 80, { method: 'POST', path: '/' })).allowed);
    assert.ok(a.evaluate(r(undefined, 80, { method: 'GET', path: '/' })).allowed);
    assert.deepEqual(
      a.evaluate(r(undefined, 80)),
      { allowed: false, reason: 'denied-by-policy', policy: 'no-delete' },
      'TCP: the DENY rule on a method matches (it cannot be checked, so it is not a way around the deny)',
    );
  });

  it('on TCP a DENY rule keeps its L4 conditions; HTTP ones are dropped, also under not_rule', () => {
    const deny = Authorizer.fromWire([
      rbac('DENY', {
        'legacy-admin': {
          permissions: [
            {
              and_rules: {
                rules: [{ destination_port: 9080 }, { url_path: { path: { prefix: '/admin' } } }],
              },
            },
          ],
          principals: [principal({ exact: spiffe('legacy', 'old') })],
        },
        'not-public': {
          permissions: [
            {
              and_rules: {
                rules: [
                  { destination_port: 7000 },
                  { not_rule: { url_path: { path: { prefix: '/public' } } } },
                ],
              },
            },
          ],
          principals: [any],
        },
      }),
    ]);
    const legacy = spiffe('legacy', 'old');
    assert.equal(deny.evaluate(r(legacy, 9080)).policy, 'legacy-admin', 'TCP to 9080: denied');
    assert.ok(deny.evaluate(r(legacy, 9081)).allowed, 'another port: the port condition still applies');
    assert.ok(deny.evaluate(r(legacy, 9080, { method: 'GET', path: '/shop' })).allowed, 'HTTP: path decides');
    assert.equal(deny.evaluate(r(legacy, 7000)).policy, 'not-public', 'negated HTTP condition: still denied');
    assert.ok(deny.evaluate(r(legacy, 7000, { method: 'GET', path: '/public/x' })).allowed);
  });

  it('on TCP an ALLOW rule with a negated or inverted HTTP condition does not match either', () => {
    const allow = Authorizer.fromWire([
      rbac('ALLOW', {
        'all-but-admin': {
          permissions: [{ not_rule: { url_path: { path: { prefix: '/admin' } } } }],
          principals: [any],
        },
        'l4-port': { permissions: [{ destination_port: 5432 }], principals: [any] },
      }),
    ]);
    assert.equal(allow.evaluate(r(spiffe('a', 'b'), 80)).allowed, false);
    assert.equal(allow.evaluate(r(spiffe('a', 'b'), 80, { method: 'GET', path: '/x' })).allowed, true);
    assert.equal(
      allow.evaluate(r(spiffe('a', 'b'), 5432)).policy,
      'l4-port',
      'pure L4 rules still allow TCP',
    );
  });
});

describe('parseRbac', () => {
  it('accepts the bare RBAC message and the filter wrapper', () => {
    const bare = parseRbac({ action: 'DENY', policies: { p: { permissions: [any], principals: [any] } } });
    assert.equal(bare.action, 'DENY');
    assert.deepEqual(parseRbacFilter(rbac('DENY', { p: { permissions: [any], principals: [any] } })), bare);
    assert.deepEqual(
      parseRbacFilter({ action: 'DENY', policies: { p: { permissions: [any], principals: [any] } } }),
      bare,
    );
  });

  it('a filter without rules enforces nothing (it is not an empty ALLOW)', () => {
    assert.equal(parseRbacFilter(wire(NETWORK_RBAC_TYPE, { stat_prefix: 'x' })), undefined);
    assert.ok(Authorizer.fromWire([wire(NETWORK_RBAC_TYPE, { stat_prefix: 'x' })]).isEmpty);
    assert.equal(
      parseRbacFilter({ '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC' }),
      undefined,
    );
  });

  it('action defaults to ALLOW (the proto default, omitted on the wire)', () => {
    assert.equal(parseRbacFilter(rbac('ALLOW', {}))?.action, 'ALLOW');
  });

  it('rejects what it cannot evaluate, naming the path', () => {
    assert.throws(
      () =>
        parseRbac({
          policies: { p: { permissions: [{ requested_server_name: { exact: 'x' } }], principals: [any] } },
        }),
      /RBAC\.policies\["p"\]\.permissions\[0\]: unsupported permission requested_server_name/,
    );
    assert.throws(
      () => parseRbac({ policies: { p: { permissions: [any], principals: [{ source_ip: {} }] } } }),
      /unsupported principal source_ip/,
    );
    assert.throws(
      () =>
        parseRbac({
          policies: {
            p: {
              permissions: [any],
              principals: [{ metadata: { filter: 'istio_authn', path: [{ key: 'x' }], value: {} } }],
            },
          },
        }),
      /only the "sockmesh" metadata filter/,
    );
    assert.throws(
      () =>
        parseRbac({
          policies: {
            p: {
              permissions: [any],
              principals: [{ metadata: { filter: 'sockmesh', path: [{ key: 'x' }], value: {} } }],
            },
          },
        }),
      /unknown key "x"/,
    );
    assert.throws(() => parseRbac({ action: 'MAYBE' }), /RBAC\.action: expected one of ALLOW, DENY, LOG/);
    assert.throws(
      () => parseRbac({ policies: { p: { permissions: [any], principals: [any], condition: {} } } }),
      /CEL conditions/,
    );
  });
});
