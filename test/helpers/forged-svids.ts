/**
 * Certificates an attacker (or a mis-issuing CA) could present to a tunnel: self-signed,
 * signed by a CA's key with URIs the X509-SVID profile forbids, or outside their validity.
 * Test-only: the product issues through certs/ only.
 */
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '../../certs/x509.js';

type CreateParams = Parameters<typeof x509.X509CertificateGenerator.create>[0];
type SelfSignedParams = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0];

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface Pem {
  cert: string;
  key: string;
}

export interface Issuer {
  /** PEM CA certificate and its PKCS#8 (or SEC1) private key. */
  cert: string;
  key: string;
}

export async function forgeLeaf(opts: {
  uris: string[];
  /** Signed by this CA's key; self-signed when absent. */
  issuer?: Issuer;
  notBefore?: Date;
  notAfter?: Date;
}): Promise<Pem> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const extensions: x509.Extension[] = [
    new x509.SubjectAlternativeNameExtension(opts.uris.map((value) => ({ type: 'url' as const, value }))),
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
  ];
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = opts.notAfter ?? new Date(Date.now() + 3_600_000);
  let cert: x509.X509Certificate;
  if (opts.issuer) {
    const signingKey = await webcrypto.subtle.importKey(
      'pkcs8',
      createPrivateKey(opts.issuer.key).export({ format: 'der', type: 'pkcs8' }),
      EC,
      false,
      ['sign'],
    );
    cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial.toString('hex'),
      subject: 'O=forged',
      // The CA's subject as it encodes it: chain building compares the DER names.
      issuer: new x509.X509Certificate(opts.issuer.cert).subjectName,
      notBefore,
      notAfter,
      signingAlgorithm: SIGN,
      publicKey: keys.publicKey as unknown as CreateParams['publicKey'],
      signingKey: signingKey as unknown as CreateParams['publicKey'],
      extensions,
    });
  } else {
    cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial.toString('hex'),
      name: 'O=forged',
      notBefore,
      notAfter,
      signingAlgorithm: SIGN,
      keys: keys as unknown as SelfSignedParams['keys'],
      extensions,
    });
  }
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return {
    cert: cert.toString('pem'),
    key: createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({
      format: 'pem',
      type: 'pkcs8',
    }) as string,
  };
}
