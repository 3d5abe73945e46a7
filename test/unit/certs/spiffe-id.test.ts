import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkSpiffeId,
  parseSpiffeId,
  parseTrustDomain,
  workloadOf,
  workloadSpiffeId,
} from '../../../certs/spiffe-id.js';
import { isSockmeshError } from '../../../lib/errors.js';

const valid: Array<[string, string, string]> = [
  ['spiffe://example.org', 'example.org', ''],
  ['spiffe://example.org/ns/default/sa/web', 'example.org', '/ns/default/sa/web'],
  ['spiffe://k8s-west.example.com/ns/staging/sa/default', 'k8s-west.example.com', '/ns/staging/sa/default'],
  ['spiffe://trust_domain.example.com/x', 'trust_domain.example.com', '/x'],
  ['spiffe://192.168.0.1/ip-looking', '192.168.0.1', '/ip-looking'],
  ['spiffe://td/Upper.Case-Path_ok/9eebccd2-12bf', 'td', '/Upper.Case-Path_ok/9eebccd2-12bf'],
  ['spiffe://td/...', 'td', '/...'],
  ['spiffe://td/.hidden', 'td', '/.hidden'],
];

const invalid: Array<[string, RegExp]> = [
  ['', /empty/],
  ['http://example.org/x', /scheme/],
  ['SPIFFE://example.org/x', /scheme/],
  ['spiffe:/example.org/x', /scheme/],
  ['example.org/ns/a', /scheme/],
  ['spiffe://', /trust domain is empty/],
  ['spiffe:///path', /trust domain is empty/],
  ['spiffe://Example.org/x', /lowercase/],
  ['spiffe://user@example.org/x', /userinfo/],
  ['spiffe://example.org:8080/x', /port/],
  ['spiffe://example.org:/x', /port/],
  ['spiffe://ex%41mple.org/x', /percent/],
  ['spiffe://exa mple.org/x', /\[a-z0-9\._-\]/],
  ['spiffe://[::1]/x', /port|\[a-z0-9\._-\]/],
  ['spiffe://example.org/', /must not end with \//],
  ['spiffe://example.org/a/', /must not end with \//],
  ['spiffe://example.org//a', /empty segment/],
  ['spiffe://example.org/a//b', /empty segment/],
  ['spiffe://example.org/./a', /relative segment '\.'/],
  ['spiffe://example.org/a/..', /relative segment '\.\.'/],
  ['spiffe://example.org/a?b=c', /query/],
  ['spiffe://example.org/a#frag', /fragment/],
  ['spiffe://example.org?x', /query/],
  ['spiffe://example.org/a%20b', /percent/],
  ['spiffe://example.org/a b', /may only contain/],
  ['spiffe://example.org/caf\u00e9', /may only contain/],
  ['spiffe://example.org/a:b', /may only contain/],
  [`spiffe://${'a'.repeat(256)}/x`, /longer than 255/],
  [`spiffe://example.org/${'a'.repeat(2048)}`, /longer than 2048/],
];

describe('SPIFFE ID parser', () => {
  for (const [input, td, path] of valid) {
    it(`accepts ${input}`, () => {
      const res = checkSpiffeId(input);
      assert.ok(res.ok, res.ok ? '' : res.reason);
      assert.equal(res.id.trustDomain, td);
      assert.equal(res.id.path, path);
      assert.equal(res.id.uri, input);
    });
  }
  for (const [input, reason] of invalid) {
    it(`refuses ${JSON.stringify(input.length > 60 ? `${input.slice(0, 60)}...` : input)}`, () => {
      const res = checkSpiffeId(input);
      assert.equal(res.ok, false);
      assert.match(res.ok ? '' : res.reason, reason);
    });
  }

  it('accepts exactly 2048 bytes', () => {
    const prefix = 'spiffe://example.org/';
    const id = prefix + 'a'.repeat(2048 - prefix.length);
    assert.equal(checkSpiffeId(id).ok, true);
    assert.equal(checkSpiffeId(`${id}a`).ok, false);
  });

  it('parseSpiffeId throws SOCKMESH_E_SPIFFE_ID with the reason', () => {
    assert.throws(
      () => parseSpiffeId('spiffe://example.org/a/../b'),
      (err: unknown) => isSockmeshError(err, 'SOCKMESH_E_SPIFFE_ID') && /relative segment/.test(err.message),
    );
  });

  it('validates trust domains by the same rules', () => {
    assert.equal(parseTrustDomain('example.org'), 'example.org');
    assert.equal(parseTrustDomain('spiffe://example.org'), 'example.org');
    assert.throws(() => parseTrustDomain('Example.org'), /lowercase/);
    assert.throws(() => parseTrustDomain(''), /empty/);
    assert.throws(() => parseTrustDomain('example.org:443'), /port/);
  });

  it('builds and reads back workload IDs', () => {
    const id = workloadSpiffeId('example.org', 'shop', 'cart');
    assert.equal(id.uri, 'spiffe://example.org/ns/shop/sa/cart');
    assert.deepEqual(workloadOf(id), { namespace: 'shop', serviceAccount: 'cart' });
    assert.equal(workloadOf(parseSpiffeId('spiffe://example.org/other')), null);
    assert.throws(() => workloadSpiffeId('example.org', 'a/b', 'c'), /SPIFFE ID/);
    assert.throws(() => workloadSpiffeId('example.org', '..', 'c'), /relative/);
  });
});
