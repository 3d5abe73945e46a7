import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { type VerifyFailureCode, type VerifyResult, verifyPeer } from '../../../certs/verify.js';
import { craftSelfSigned, ext, leafExtensions } from './helpers.js';

let ca: CertificateAuthority;
let good: X509Svid;
before(async () => {
  ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
  good = await ca.issueSvid({ namespace: 'shop', serviceAccount: 'cart' });
});

function assertRefused(res: VerifyResult, code: VerifyFailureCode, reason?: RegExp): void {
  assert.equal(res.ok, false, 'expected a refusal');
  if (res.ok) return;
  assert.equal(res.code, code, res.reason);
  if (reason) assert.match(res.reason, reason);
}

describe('verifyPeer', () => {
  it('accepts a valid SVID and returns its SPIFFE ID', () => {
    const res = verifyPeer(good.chain, ca.bundle);
    assert.deepEqual(res, {
      ok: true,
      spiffeId: 'spiffe://example.org/ns/shop/sa/cart',
      trustDomain: 'example.org',
    });
  });

  it('accepts a chain through an intermediate, and one that includes the root', async () => {
    const inter = await ca.createIntermediate();
    const svid = await inter.issueSvid({ namespace: 'a', serviceAccount: 'b' });
    assert.equal(verifyPeer(svid.chain, ca.bundle).ok, true);
    assert.equal(verifyPeer([...svid.chain, ca.bundle.certs[0]!], ca.bundle).ok, true);
    assertRefused(verifyPeer([svid.chain[0]!], ca.bundle), 'untrusted-issuer', /bundle issued/);
  });

  it('refuses an expired SVID, and one not yet valid', async () => {
    const past = Date.now() - 3 * 3_600_000;
    const old = await ca.issueSvid({ namespace: 'shop', serviceAccount: 'cart' }, { now: past });
    assertRefused(verifyPeer(old.chain, ca.bundle), 'expired', /expired at/);
    assertRefused(
      verifyPeer(good.chain, ca.bundle, { now: good.notBefore.getTime() - 1000 }),
      'not-yet-valid',
    );
    assertRefused(verifyPeer(good.chain, ca.bundle, { now: good.notAfter.getTime() }), 'expired');
  });

  it('refuses a peer from a foreign trust domain', async () => {
    const foreign = await CertificateAuthority.createRoot({ trustDomain: 'evil.example' });
    const svid = await foreign.issueSvid({ namespace: 'shop', serviceAccount: 'cart' });
    assertRefused(verifyPeer(svid.chain, ca.bundle), 'wrong-trust-domain', /'evil\.example' is not trusted/);
    // Federation: with its bundle present it verifies.
    assert.equal(verifyPeer(svid.chain, [ca.bundle, foreign.bundle]).ok, true);
  });

  it('refuses a cert claiming our trust domain but signed by another CA', async () => {
    const impostor = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const svid = await impostor.issueSvid({ namespace: 'shop', serviceAccount: 'cart' });
    assertRefused(verifyPeer(svid.chain, ca.bundle), 'untrusted-issuer');
  });

  it('refuses a bad signature', () => {
    const leaf = Buffer.from(good.chain[0]!);
    leaf[leaf.length - 1]! ^= 0x01;
    assertRefused(verifyPeer([leaf], ca.bundle), 'bad-signature');
  });

  it('refuses no URI SAN, several URI SANs, a CA as leaf, and a path-less ID', async () => {
    const noUri = await craftSelfSigned({ extensions: leafExtensions({ san: ext.dns('cart.example.org') }) });
    assertRefused(verifyPeer([noUri.der], ca.bundle), 'no-uri-san');
    const two = await craftSelfSigned({
      extensions: leafExtensions({ san: ext.uri('spiffe://example.org/a', 'spiffe://example.org/b') }),
    });
    assertRefused(verifyPeer([two.der], ca.bundle), 'several-uri-sans', /2 URI SANs/);
    const caLeaf = await craftSelfSigned({ extensions: leafExtensions({ bc: ext.caBc() }) });
    assertRefused(verifyPeer([caLeaf.der], ca.bundle), 'ca-leaf');
    const certSign = await craftSelfSigned({
      extensions: leafExtensions({ ku: ext.ku(ext.flags.digitalSignature | ext.flags.keyCertSign) }),
    });
    assertRefused(verifyPeer([certSign.der], ca.bundle), 'ca-leaf');
    assertRefused(verifyPeer([ca.bundle.certs[0]!], ca.bundle), 'bad-spiffe-id', /no path/);
    const badId = await craftSelfSigned({
      extensions: leafExtensions({ san: ext.uri('spiffe://Example.org/x') }),
    });
    assertRefused(verifyPeer([badId.der], ca.bundle), 'bad-spiffe-id', /lowercase/);
  });

  it('refuses an unexpected SPIFFE ID, an empty chain and garbage', () => {
    assertRefused(
      verifyPeer(good.chain, ca.bundle, { expectedSpiffeId: 'spiffe://example.org/ns/shop/sa/web' }),
      'unexpected-spiffe-id',
    );
    assertRefused(verifyPeer([], ca.bundle), 'empty-chain');
    assertRefused(verifyPeer([Buffer.from('not a certificate')], ca.bundle), 'malformed-certificate');
  });
});

describe('bringing an existing CA', () => {
  for (const kind of ['p256', 'p384', 'rsa'] as const) {
    it(`accepts a ${kind} CA with its key and issues verifiable SVIDs`, async () => {
      const root = await craftSelfSigned({
        kind,
        name: 'CN=team root',
        extensions: [
          ext.caBc(),
          ext.ku(ext.flags.keyCertSign | ext.flags.cRLSign),
          ext.uri('spiffe://corp.example'),
        ],
      });
      const loaded = CertificateAuthority.load({
        trustDomain: 'corp.example',
        certPem: root.pem,
        keyPem: root.key,
      });
      const svid = await loaded.issueSvid({ namespace: 'a', serviceAccount: 'b' });
      assert.equal(verifyPeer(svid.chain, loaded.bundle).ok, true);
    });
  }

  it('refuses a leaf as CA, a key that does not match, a foreign CA ID, and an expired CA', async () => {
    const leaf = await craftSelfSigned({ extensions: leafExtensions() });
    assert.throws(
      () => CertificateAuthority.load({ trustDomain: 'example.org', certPem: leaf.pem, keyPem: leaf.key }),
      /not a CA/,
    );
    const root = await craftSelfSigned({ extensions: [ext.caBc(), ext.ku(ext.flags.keyCertSign)] });
    const other = await craftSelfSigned({ extensions: [ext.caBc(), ext.ku(ext.flags.keyCertSign)] });
    assert.throws(
      () => CertificateAuthority.load({ trustDomain: 'example.org', certPem: root.pem, keyPem: other.key }),
      /does not match/,
    );
    const named = await craftSelfSigned({
      extensions: [ext.caBc(), ext.ku(ext.flags.keyCertSign), ext.uri('spiffe://corp.example')],
    });
    assert.throws(
      () => CertificateAuthority.load({ trustDomain: 'example.org', certPem: named.pem, keyPem: named.key }),
      /not trust domain 'example.org'/,
    );
    const expired = await craftSelfSigned({
      extensions: [ext.caBc(), ext.ku(ext.flags.keyCertSign)],
      notBefore: new Date(Date.now() - 7_200_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    assert.throws(
      () =>
        CertificateAuthority.load({ trustDomain: 'example.org', certPem: expired.pem, keyPem: expired.key }),
      /not valid now/,
    );
    assert.throws(
      () => CertificateAuthority.load({ trustDomain: 'Bad_TD', certPem: root.pem, keyPem: root.key }),
      /lowercase/,
    );
  });
});
