/**
 * The X.509-SVID as the rest of sockmesh sees it: a certificate chain (leaf first),
 * its private key and the trust bundle of its trust domain. Private keys never leave
 * this object except as TLS context material or the Workload API's PKCS#8 bytes.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { SockmeshError } from '../lib/errors.js';
import { certsToPem, splitDerCertificates } from './pem.js';
import { parseSpiffeId, type SpiffeId } from './spiffe-id.js';
import { peerSpiffeIdOf } from './verify.js';

/** The CA certificates that a trust domain's SVIDs chain up to. */
export interface TrustBundle {
  readonly trustDomain: string;
  /** DER CA certificates. */
  readonly certs: readonly Buffer[];
}

export interface X509Svid {
  readonly spiffeId: SpiffeId;
  /** DER certificates, leaf first, then any intermediates (never the root). */
  readonly chain: readonly Buffer[];
  readonly privateKey: KeyObject;
  readonly bundle: TrustBundle;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Hex serial number of the leaf, lowercase. */
  readonly serial: string;
  /** Optional Workload API hint (`internal`, `external`, ...). */
  readonly hint?: string;
}

export function bundlePem(bundle: TrustBundle): string {
  return certsToPem(bundle.certs);
}

export function bundleDer(bundle: TrustBundle): Buffer {
  return Buffer.concat(bundle.certs);
}

/** Options ready for `tls.createSecureContext` / `tls.createServer` / `tls.connect`. */
export interface SvidTlsMaterial {
  /** Chain PEM, leaf first. */
  cert: string;
  /** PKCS#8 private key PEM: hand it to TLS only. */
  key: string;
  /** Trust bundle PEM. */
  ca: string;
}

export function svidTlsMaterial(svid: X509Svid): SvidTlsMaterial {
  return { cert: certsToPem(svid.chain), key: svidKeyPem(svid), ca: bundlePem(svid.bundle) };
}

export function svidChainPem(svid: X509Svid): string {
  return certsToPem(svid.chain);
}

export function svidKeyPem(svid: X509Svid): string {
  return svid.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

export function svidKeyPkcs8Der(svid: X509Svid): Buffer {
  return svid.privateKey.export({ type: 'pkcs8', format: 'der' });
}

export function isExpired(svid: X509Svid, now: number = Date.now()): boolean {
  return now >= svid.notAfter.getTime();
}

/**
 * Builds an X509Svid from the Workload API's wire encoding (concatenated DER chain,
 * PKCS#8 key, concatenated DER bundle), checking that the key belongs to the leaf.
 */
export function svidFromDer(parts: {
  spiffeId?: string;
  chainDer: Buffer;
  keyPkcs8Der: Buffer;
  bundleDer: Buffer;
  trustDomain?: string;
  hint?: string;
}): X509Svid {
  const chain = splitDerCertificates(parts.chainDer);
  const leafDer = chain[0];
  if (!leafDer) throw new SockmeshError('SOCKMESH_E_SVID', 'X.509-SVID chain is empty');
  const leaf = new X509Certificate(leafDer);
  const idFromCert = peerSpiffeIdOf(leafDer);
  if (!idFromCert.ok) throw new SockmeshError('SOCKMESH_E_SVID', `X.509-SVID leaf: ${idFromCert.reason}`);
  const spiffeId = parseSpiffeId(idFromCert.spiffeId);
  if (parts.spiffeId && parts.spiffeId !== spiffeId.uri) {
    throw new SockmeshError(
      'SOCKMESH_E_SVID',
      `SVID entry says '${parts.spiffeId}' but its certificate carries '${spiffeId.uri}'`,
    );
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: parts.keyPkcs8Der, format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_SVID', 'X.509-SVID key is not an unencrypted PKCS#8 DER key', {
      cause: err,
    });
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new SockmeshError('SOCKMESH_E_SVID', 'X.509-SVID private key does not match the leaf certificate');
  }
  const bundleCerts = splitDerCertificates(parts.bundleDer);
  return {
    spiffeId,
    chain,
    privateKey,
    bundle: { trustDomain: parts.trustDomain ?? spiffeId.trustDomain, certs: bundleCerts },
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    serial: leaf.serialNumber.toLowerCase(),
    ...(parts.hint ? { hint: parts.hint } : {}),
  };
}

/** An SVID in the Workload API's wire encoding, for handing it to another process (a proxy worker). */
export interface SvidWire {
  spiffeId: string;
  chainDer: Buffer;
  keyPkcs8Der: Buffer;
  bundleDer: Buffer;
  trustDomain: string;
}

export function svidToWire(svid: X509Svid): SvidWire {
  return {
    spiffeId: svid.spiffeId.uri,
    chainDer: Buffer.concat(svid.chain),
    keyPkcs8Der: svidKeyPkcs8Der(svid),
    bundleDer: bundleDer(svid.bundle),
    trustDomain: svid.bundle.trustDomain,
  };
}

export function svidFromWire(w: SvidWire): X509Svid {
  return svidFromDer({
    spiffeId: w.spiffeId,
    chainDer: Buffer.from(w.chainDer),
    keyPkcs8Der: Buffer.from(w.keyPkcs8Der),
    bundleDer: Buffer.from(w.bundleDer),
    trustDomain: w.trustDomain,
  });
}
