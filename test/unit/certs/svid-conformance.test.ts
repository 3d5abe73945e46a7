import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { CertificateAuthority, DEFAULT_SVID_TTL_MS } from '../../../certs/ca/authority.js';
import { type ConformanceRule, svidViolations } from '../../../certs/conformance.js';
import { certificateFacts } from '../../../certs/verify.js';
import { isSockmeshError } from '../../../lib/errors.js';
import { craftSelfSigned, ext, leafExtensions } from './helpers.js';

let ca: CertificateAuthority;
before(async () => {
  ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
});

function rules(der: Buffer, role: 'leaf' | 'signing'): ConformanceRule[] {
  return svidViolations(der, role).map((v) => v.rule);
}

describe('issued X.509-SVIDs follow the X509-SVID profile', () => {
  it('a leaf has exactly one URI SAN, cA=false, critical digitalSignature-only keyUsage, server+client EKU', async () => {
    const svid = await ca.issueSvid({ namespace: 'shop', serviceAccount: 'cart' });
    const f = certificateFacts(svid.chain[0]!);
    assert.deepEqual(f.uriSans, ['spiffe://example.org/ns/shop/sa/cart']);
    assert.equal(svid.spiffeId.uri, 'spiffe://example.org/ns/shop/sa/cart');
    assert.equal(f.basicConstraintsPresent, true);
    assert.equal(f.isCA, false);
    assert.equal(f.keyUsageCritical, true);
    assert.deepEqual(f.keyUsage, ['digitalSignature']);
    assert.deepEqual(f.extKeyUsage.sort(), ['clientAuth', 'serverAuth']);
    assert.deepEqual(rules(svid.chain[0]!, 'leaf'), []);
    assert.equal(new X509Certificate(svid.chain[0]!).checkPrivateKey(svid.privateKey), true);
    assert.equal(svid.privateKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  });

  it('defaults to a 1 h TTL and honours a configured one', async () => {
    const now = Date.now();
    const def = await ca.issueSvid({ namespace: 'a', serviceAccount: 'b' }, { now });
    assert.ok(Math.abs(def.notAfter.getTime() - (now + DEFAULT_SVID_TTL_MS)) <= 1000);
    assert.equal(DEFAULT_SVID_TTL_MS, 3_600_000);
    const short = await ca.issueSvid({ namespace: 'a', serviceAccount: 'b' }, { now, ttlMs: 120_000 });
    assert.ok(Math.abs(short.notAfter.getTime() - (now + 120_000)) <= 1000);
    assert.ok(short.notBefore.getTime() <= now);
    await assert.rejects(ca.issueSvid({ namespace: 'a', serviceAccount: 'b' }, { ttlMs: 10 }), /at least 1s/);
  });

  it('never issues past the CA certificate', async () => {
    const shortCa = await CertificateAuthority.createRoot({ trustDomain: 'example.org', ttlMs: 60_000 });
    const svid = await shortCa.issueSvid({ namespace: 'a', serviceAccount: 'b' });
    assert.ok(svid.notAfter.getTime() <= shortCa.notAfter.getTime());
  });

  it('gives every SVID a unique positive serial', async () => {
    const serials = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const s = await ca.issueSvid({ namespace: 'a', serviceAccount: 'b' });
      assert.match(s.serial, /^[0-7][0-9a-f]{31}$/);
      serials.add(s.serial);
    }
    assert.equal(serials.size, 300);
  });

  it('signing certificates (root, intermediate) have cA=true and keyCertSign', async () => {
    const inter = await ca.createIntermediate();
    for (const der of [ca.bundle.certs[0]!, inter.certificateDer]) {
      const f = certificateFacts(der);
      assert.equal(f.isCA, true);
      assert.ok(f.keyUsage.includes('keyCertSign'));
      assert.ok(!f.keyUsage.includes('digitalSignature'));
      assert.deepEqual(f.uriSans, ['spiffe://example.org']);
      assert.deepEqual(rules(der, 'signing'), []);
    }
    const svid = await inter.issueSvid({ namespace: 'a', serviceAccount: 'b' });
    assert.equal(svid.chain.length, 2, 'leaf then intermediate');
    assert.ok(svid.chain[1]!.equals(inter.certificateDer));
  });

  it('refuses to issue outside its trust domain or without a path', async () => {
    await assert.rejects(ca.issueSvid('spiffe://other.org/ns/a/sa/b'), (e: unknown) =>
      isSockmeshError(e, 'SOCKMESH_E_CA'),
    );
    await assert.rejects(ca.issueSvid('spiffe://example.org'), /needs a path/);
    await assert.rejects(ca.issueSvid('spiffe://example.org/a/../b'), /relative/);
  });
});

describe('the conformance checks catch each broken rule', () => {
  const cases: Array<[string, Parameters<typeof leafExtensions>[0], ConformanceRule]> = [
    ['no URI SAN', { san: ext.dns('x.example.org') }, 'one-uri-san'],
    ['two URI SANs', { san: ext.uri('spiffe://example.org/a', 'spiffe://example.org/b') }, 'one-uri-san'],
    ['a non-SPIFFE URI', { san: ext.uri('https://example.org/a') }, 'spiffe-id'],
    ['a path-less leaf ID', { san: ext.uri('spiffe://example.org') }, 'spiffe-id'],
    ['cA=true on a leaf', { bc: ext.caBc() }, 'basic-constraints'],
    ['no basicConstraints', { bc: null }, 'basic-constraints'],
    ['non-critical keyUsage', { ku: ext.ku(ext.flags.digitalSignature, false) }, 'key-usage-critical'],
    ['no keyUsage', { ku: null }, 'key-usage-critical'],
    ['keyUsage without digitalSignature', { ku: ext.ku(ext.flags.keyEncipherment) }, 'digital-signature'],
    [
      'keyCertSign on a leaf',
      { ku: ext.ku(ext.flags.digitalSignature | ext.flags.keyCertSign) },
      'no-cert-sign',
    ],
    ['cRLSign on a leaf', { ku: ext.ku(ext.flags.digitalSignature | ext.flags.cRLSign) }, 'no-cert-sign'],
    ['EKU without clientAuth', { eku: ext.eku(ext.usages.serverAuth) }, 'eku-server-client'],
  ];
  it('the correct profile passes', async () => {
    const ok = await craftSelfSigned({ extensions: leafExtensions() });
    assert.deepEqual(rules(ok.der, 'leaf'), []);
  });
  for (const [what, overrides, rule] of cases) {
    it(`leaf with ${what} breaks '${rule}'`, async () => {
      const bad = await craftSelfSigned({ extensions: leafExtensions(overrides) });
      assert.ok(
        rules(bad.der, 'leaf').includes(rule),
        `got ${JSON.stringify(svidViolations(bad.der, 'leaf'))}`,
      );
    });
  }
  it('a signing certificate without cA=true or keyCertSign is flagged', async () => {
    const noCa = await craftSelfSigned({
      extensions: [ext.leafBc(), ext.ku(ext.flags.keyCertSign), ext.uri('spiffe://example.org')],
    });
    assert.ok(rules(noCa.der, 'signing').includes('basic-constraints'));
    const noSign = await craftSelfSigned({ extensions: [ext.caBc(), ext.ku(ext.flags.cRLSign)] });
    assert.ok(rules(noSign.der, 'signing').includes('key-cert-sign'));
    const withPath = await craftSelfSigned({
      extensions: [ext.caBc(), ext.ku(ext.flags.keyCertSign), ext.uri('spiffe://example.org/ca')],
    });
    assert.ok(rules(withPath.der, 'signing').includes('spiffe-id'));
  });
});
