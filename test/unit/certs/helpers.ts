/** Crafts certificates that break SVID rules on purpose, to prove the checks can fail. */
import { createPrivateKey, type KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '../../../certs/x509.js';

type SelfSignedParams = Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0];

export type KeyKind = 'p256' | 'p384' | 'rsa';

const ALGS: Record<
  KeyKind,
  { gen: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams; sign: object }
> = {
  p256: { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  p384: { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  rsa: {
    gen: {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
};

export interface Crafted {
  der: Buffer;
  pem: string;
  key: KeyObject;
}

export async function craftSelfSigned(opts: {
  extensions: x509.Extension[];
  name?: string;
  kind?: KeyKind;
  notBefore?: Date;
  notAfter?: Date;
}): Promise<Crafted> {
  const alg = ALGS[opts.kind ?? 'p256'];
  const keys = (await webcrypto.subtle.generateKey(alg.gen, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: opts.name ?? 'CN=crafted',
    keys: keys as unknown as SelfSignedParams['keys'],
    signingAlgorithm: alg.sign as SelfSignedParams['signingAlgorithm'],
    notBefore: opts.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + 3_600_000),
    extensions: opts.extensions,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return {
    der: Buffer.from(cert.rawData),
    pem: cert.toString('pem'),
    key: createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }),
  };
}

export const ext = {
  uri: (...uris: string[]) =>
    new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url', value }))),
  dns: (name: string) => new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }]),
  leafBc: () => new x509.BasicConstraintsExtension(false, undefined, true),
  caBc: () => new x509.BasicConstraintsExtension(true, undefined, true),
  ku: (flags: number, critical = true) => new x509.KeyUsagesExtension(flags, critical),
  eku: (...usages: string[]) => new x509.ExtendedKeyUsageExtension(usages),
  flags: x509.KeyUsageFlags,
  usages: x509.ExtendedKeyUsage,
};

/** A correct leaf profile, with one rule replaced. */
export function leafExtensions(
  overrides: Partial<Record<'san' | 'bc' | 'ku' | 'eku', x509.Extension | null>> = {},
) {
  const base: Record<'san' | 'bc' | 'ku' | 'eku', x509.Extension | null> = {
    san: ext.uri('spiffe://example.org/ns/a/sa/b'),
    bc: ext.leafBc(),
    ku: ext.ku(ext.flags.digitalSignature),
    eku: ext.eku(ext.usages.serverAuth, ext.usages.clientAuth),
    ...overrides,
  };
  return Object.values(base).filter((e): e is x509.Extension => e !== null);
}
