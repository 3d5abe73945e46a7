import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRbac } from '../../../mesh-agent/authz/rbac.js';
import { rbacNeedsHttp } from '../../../mesh-agent/inbound/l7-need.js';
import { protocolBaggage, senderWroteIdentity } from '../../../mesh-agent/inbound/policy.js';

const FRONTEND = { authenticated: { principal_name: { exact: 'spiffe://td/ns/shop/sa/frontend' } } };
const METHOD_DELETE = { header: { name: ':method', string_match: { exact: 'DELETE' } } };
const ADMIN = { url_path: { path: { prefix: '/admin' } } };

function config(action: 'ALLOW' | 'DENY' | 'LOG', permissions: object[], principals: object[] = [FRONTEND]) {
  return parseRbac({ action, policies: { p: { permissions, principals } } });
}

describe('rbacNeedsHttp: does the destination have to parse HTTP on this port', () => {
  it('is false without policies, and for identity and port rules (L4 decides them exactly)', () => {
    assert.equal(rbacNeedsHttp([], 9080), false);
    assert.equal(rbacNeedsHttp([config('ALLOW', [{ any: true }])], 9080), false);
    assert.equal(rbacNeedsHttp([config('DENY', [{ destination_port: 9080 }])], 9080), false);
    const ns = {
      metadata: {
        filter: 'sockmesh',
        path: [{ key: 'source.namespace' }],
        value: { string_match: { exact: 'shop' } },
      },
    };
    assert.equal(rbacNeedsHttp([config('ALLOW', [{ any: true }], [ns])], 9080), false);
  });

  it('is true for a method or path condition in an ALLOW or DENY policy', () => {
    assert.equal(rbacNeedsHttp([config('DENY', [METHOD_DELETE])], 9080), true);
    assert.equal(rbacNeedsHttp([config('ALLOW', [ADMIN])], 9080), true);
    assert.equal(rbacNeedsHttp([config('DENY', [{ not_rule: METHOD_DELETE }])], 9080), true);
    assert.equal(
      rbacNeedsHttp([config('ALLOW', [{ or_rules: { rules: [{ destination_port: 1 }, ADMIN] } }])], 9080),
      true,
    );
  });

  it('is true for a header condition on the principal side', () => {
    const byHeader = { header: { name: 'x-team', string_match: { exact: 'a' } } };
    assert.equal(rbacNeedsHttp([config('ALLOW', [{ any: true }], [byHeader])], 9080), true);
  });

  it('ignores HTTP conditions tied to another port, and LOG policies', () => {
    const onOther = { and_rules: { rules: [{ destination_port: 9091 }, METHOD_DELETE] } };
    assert.equal(rbacNeedsHttp([config('DENY', [onOther])], 9080), false);
    assert.equal(rbacNeedsHttp([config('DENY', [onOther])], 9091), true);
    const range = { and_rules: { rules: [{ destination_port_range: { start: 9000, end: 9080 } }, ADMIN] } };
    assert.equal(rbacNeedsHttp([config('ALLOW', [range])], 9080), false);
    assert.equal(rbacNeedsHttp([config('ALLOW', [range])], 9079), true);
    assert.equal(rbacNeedsHttp([config('LOG', [METHOD_DELETE])], 9080), false);
    // A principal-side HTTP condition in a policy whose permissions cannot match this port.
    const byHeader = { header: { name: 'x-team', string_match: { exact: 'a' } } };
    assert.equal(rbacNeedsHttp([config('ALLOW', [{ destination_port: 1 }], [byHeader])], 9080), false);
  });

  it('stays conservative under not: a negated port rule does not prune', () => {
    const notPort = { and_rules: { rules: [{ not_rule: { destination_port: 9080 } }, ADMIN] } };
    assert.equal(rbacNeedsHttp([config('DENY', [notPort])], 9080), true);
  });
});

describe('senderWroteIdentity: the sender says it wrote x-forwarded-client-cert', () => {
  it('is said with http only, and read back from a full baggage header', () => {
    assert.equal(senderWroteIdentity(`k8s.namespace.name=shop,${protocolBaggage('http')}`), true);
    assert.equal(senderWroteIdentity(`k8s.namespace.name=shop,${protocolBaggage('tcp')}`), false);
    assert.equal(senderWroteIdentity(undefined), false);
    assert.equal(senderWroteIdentity('sockmesh.protocol=http'), false);
    assert.equal(senderWroteIdentity('a=b, sockmesh.xfcc = set ;p=1'), true);
    assert.equal(senderWroteIdentity('sockmesh.xfcc=no'), false);
  });
});
