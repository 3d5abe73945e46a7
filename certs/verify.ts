/**
 * X.509-SVID validation (X509-SVID.md section 5): standard path validation against the
 * peer's trust-domain bundle, plus the SPIFFE leaf rules. Every refusal carries a stable
 * code and a sentence a human can act on.
 */
import { X509Certificate } from 'node:crypto';
import { checkSpiffeId } from './spiffe-id.js';
import type { TrustBundle } from './svid.js';
import * as x509 from './x509.js';

export type VerifyFailureCode =
  | 'empty-chain'
  | 'malformed-certificate'
  | 'no-uri-san'
  | 'several-uri-sans'
  | 'bad-spiffe-id'
  | 'ca-leaf'
  | 'expired'
  | 'not-yet-valid'
  | 'wrong-trust-domain'
  | 'bad-signature'
  | 'untrusted-issuer'
  | 'unexpected-spiffe-id';

export type VerifyResult =
  | { ok: true; spiffeId: string; trustDomain: string }
  | { ok: false; code: VerifyFailureCode; reason: string };

export interface VerifyOptions {
  /** Evaluation time in ms since the epoch (default: now). */
  now?: number;
  /** Refuse any peer whose SPIFFE ID is not this one. */
  expectedSpiffeId?: string;
}

/** What a certificate says about itself, decoded once for checks and for `identity inspect`. */
export interface CertificateFacts {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  isCA: boolean;
  basicConstraintsPresent: boolean;
  keyUsage: string[];
  keyUsageCritical: boolean | null;
  extKeyUsage: string[];
  uriSans: string[];
  dnsSans: string[];
}

const KEY_USAGE_NAMES: Array<[x509.KeyUsageFlags, string]> = [
  [x509.KeyUsageFlags.digitalSignature, 'digitalSignature'],
  [x509.KeyUsageFlags.nonRepudiation, 'nonRepudiation'],
  [x509.KeyUsageFlags.keyEncipherment, 'keyEncipherment'],
  [x509.KeyUsageFlags.dataEncipherment, 'dataEncipherment'],
  [x509.KeyUsageFlags.keyAgreement, 'keyAgreement'],
  [x509.KeyUsageFlags.keyCertSign, 'keyCertSign'],
  [x509.KeyUsageFlags.cRLSign, 'cRLSign'],
  [x509.KeyUsageFlags.encipherOnly, 'encipherOnly'],
  [x509.KeyUsageFlags.decipherOnly, 'decipherOnly'],
];

const EKU_NAMES: Record<string, string> = {
  [x509.ExtendedKeyUsage.serverAuth]: 'serverAuth',
  [x509.ExtendedKeyUsage.clientAuth]: 'clientAuth',
  [x509.ExtendedKeyUsage.codeSigning]: 'codeSigning',
  [x509.ExtendedKeyUsage.emailProtection]: 'emailProtection',
  [x509.ExtendedKeyUsage.timeStamping]: 'timeStamping',
  [x509.ExtendedKeyUsage.ocspSigning]: 'ocspSigning',
};

/** Decodes the fields SVID rules talk about. Throws on undecodable input. */
export function certificateFacts(der: Buffer): CertificateFacts {
  const cert = new x509.X509Certificate(der);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const names = san ? san.names.items : [];
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serial: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    isCA: bc?.ca ?? false,
    basicConstraintsPresent: bc !== null,
    keyUsage: ku ? KEY_USAGE_NAMES.filter(([flag]) => (ku.usages & flag) !== 0).map(([, n]) => n) : [],
    keyUsageCritical: ku ? ku.critical : null,
    extKeyUsage: eku ? [...eku.usages].map((u) => EKU_NAMES[String(u)] ?? String(u)) : [],
    uriSans: names.filter((n) => n.type === 'url').map((n) => n.value),
    dnsSans: names.filter((n) => n.type === 'dns').map((n) => n.value),
  };
}

/** Bundle certificates are the same Buffers call after call: decode each once. */
const bundleCache = new WeakMap<Buffer, { cert: X509Certificate; facts: CertificateFacts }>();

function decodedBundleCert(der: Buffer): { cert: X509Certificate; facts: CertificateFacts } {
  let hit = bundleCache.get(der);
  if (!hit) {
    hit = { cert: new X509Certificate(der), facts: certificateFacts(der) };
    bundleCache.set(der, hit);
  }
  return hit;
}

function fail(code: VerifyFailureCode, reason: string): VerifyResult {
  return { ok: false, code, reason };
}

/** The SPIFFE ID a leaf certificate asserts, by the one-URI-SAN rule; no trust decision. */
export function peerSpiffeIdOf(
  leafDer: Buffer,
): { ok: true; spiffeId: string } | { ok: false; code: VerifyFailureCode; reason: string } {
  let facts: CertificateFacts;
  try {
    facts = certificateFacts(leafDer);
  } catch (err) {
    return {
      ok: false,
      code: 'malformed-certificate',
      reason: `cannot decode leaf: ${(err as Error).message}`,
    };
  }
  return spiffeIdFromFacts(facts);
}

function spiffeIdFromFacts(
  facts: CertificateFacts,
): { ok: true; spiffeId: string } | { ok: false; code: VerifyFailureCode; reason: string } {
  if (facts.uriSans.length === 0) {
    return { ok: false, code: 'no-uri-san', reason: 'leaf certificate has no URI SAN, so no SPIFFE ID' };
  }
  if (facts.uriSans.length > 1) {
    return {
      ok: false,
      code: 'several-uri-sans',
      reason: `leaf certificate has ${facts.uriSans.length} URI SANs; an X.509-SVID has exactly one`,
    };
  }
  return { ok: true, spiffeId: facts.uriSans[0]! };
}

function timeProblem(facts: CertificateFacts, what: string, now: number): VerifyResult | null {
  if (now >= facts.notAfter.getTime()) {
    return fail('expired', `${what} expired at ${facts.notAfter.toISOString()}`);
  }
  if (now < facts.notBefore.getTime()) {
    return fail('not-yet-valid', `${what} is not valid before ${facts.notBefore.toISOString()}`);
  }
  return null;
}

function bundleFor(bundles: TrustBundle | readonly TrustBundle[], td: string): TrustBundle | undefined {
  const list: readonly TrustBundle[] = Array.isArray(bundles) ? bundles : [bundles as TrustBundle];
  return list.find((b) => b.trustDomain === td);
}

function trustedDomains(bundles: TrustBundle | readonly TrustBundle[]): string {
  const list: readonly TrustBundle[] = Array.isArray(bundles) ? bundles : [bundles as TrustBundle];
  return list.map((b) => b.trustDomain).join(', ') || 'none';
}

/**
 * Verifies a peer's chain (leaf first, then any intermediates; a root in it is
 * harmless) against the bundle of the peer's trust domain. Returns the SPIFFE ID
 * or the first reason to refuse it.
 */
export function verifyPeer(
  chain: readonly Buffer[],
  bundles: TrustBundle | readonly TrustBundle[],
  opts: VerifyOptions = {},
): VerifyResult {
  const now = opts.now ?? Date.now();
  const leafDer = chain[0];
  if (!leafDer) return fail('empty-chain', 'peer presented no certificate');

  let leafFacts: CertificateFacts;
  let leaf: X509Certificate;
  try {
    leafFacts = certificateFacts(leafDer);
    leaf = new X509Certificate(leafDer);
  } catch (err) {
    return fail('malformed-certificate', `cannot decode leaf certificate: ${(err as Error).message}`);
  }
  const idRes = spiffeIdFromFacts(leafFacts);
  if (!idRes.ok) return idRes;
  const parsed = checkSpiffeId(idRes.spiffeId);
  if (!parsed.ok)
    return fail('bad-spiffe-id', `leaf URI SAN '${idRes.spiffeId}' is not a SPIFFE ID: ${parsed.reason}`);
  if (parsed.id.path === '') {
    return fail(
      'bad-spiffe-id',
      `leaf SPIFFE ID '${parsed.id.uri}' has no path; only signing certificates may`,
    );
  }
  if (
    leafFacts.isCA ||
    leafFacts.keyUsage.includes('keyCertSign') ||
    leafFacts.keyUsage.includes('cRLSign')
  ) {
    return fail(
      'ca-leaf',
      'leaf certificate is a CA (cA=true or keyCertSign/cRLSign set); it cannot identify a peer',
    );
  }
  if (opts.expectedSpiffeId !== undefined && opts.expectedSpiffeId !== parsed.id.uri) {
    return fail('unexpected-spiffe-id', `peer is '${parsed.id.uri}', expected '${opts.expectedSpiffeId}'`);
  }
  const bundle = bundleFor(bundles, parsed.id.trustDomain);
  if (!bundle || bundle.certs.length === 0) {
    return fail(
      'wrong-trust-domain',
      `peer trust domain '${parsed.id.trustDomain}' is not trusted (bundles for: ${trustedDomains(bundles)})`,
    );
  }
  const leafTime = timeProblem(leafFacts, 'leaf certificate', now);
  if (leafTime) return leafTime;

  let roots: Array<{ cert: X509Certificate; facts: CertificateFacts }>;
  let intermediates: Array<{ cert: X509Certificate; facts: CertificateFacts }>;
  try {
    roots = bundle.certs.map(decodedBundleCert);
    intermediates = chain.slice(1).map((d) => ({ cert: new X509Certificate(d), facts: certificateFacts(d) }));
  } catch (err) {
    return fail('malformed-certificate', `cannot decode chain or bundle: ${(err as Error).message}`);
  }

  // Walk up from the leaf: each step needs an issuer whose name/key id match and whose key verifies the signature.
  let current = leaf;
  let nameMatched = false;
  const used = new Set<X509Certificate>();
  for (let depth = 0; depth <= chain.length; depth++) {
    for (const root of roots) {
      if (!current.checkIssued(root.cert)) continue;
      nameMatched = true;
      if (current.verify(root.cert.publicKey)) {
        const rootTime = timeProblem(root.facts, 'trust bundle CA', now);
        if (rootTime) return rootTime;
        return { ok: true, spiffeId: parsed.id.uri, trustDomain: parsed.id.trustDomain };
      }
    }
    const next = intermediates.find(
      (i) =>
        !used.has(i.cert) && i.facts.isCA && current.checkIssued(i.cert) && current.verify(i.cert.publicKey),
    );
    if (!next) {
      if (intermediates.some((i) => !used.has(i.cert) && current.checkIssued(i.cert))) nameMatched = true;
      break;
    }
    const interTime = timeProblem(next.facts, 'intermediate certificate', now);
    if (interTime) return interTime;
    used.add(next.cert);
    current = next.cert;
  }
  if (nameMatched) {
    return fail(
      'bad-signature',
      `signature on '${current.subject.replace(/\n/g, ', ')}' does not verify with its issuer's key`,
    );
  }
  return fail(
    'untrusted-issuer',
    `no certificate in the '${bundle.trustDomain}' bundle issued '${current.issuer.replace(/\n/g, ', ')}'`,
  );
}
