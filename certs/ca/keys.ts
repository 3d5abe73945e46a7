/**
 * Key handling for the CA: Node's crypto generates and stores keys (KeyObject),
 * WebCrypto CryptoKeys exist only for the moment @peculiar/x509 signs with them.
 */
import { generateKeyPairSync, type KeyObject, webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;

import { SockmeshError } from '../../lib/errors.js';

export type SigningKeyKind = 'ec-p256' | 'ec-p384' | 'rsa';

interface SigningProfile {
  importAlgorithm: webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams;
  signingAlgorithm: Algorithm | EcdsaParams;
}

const PROFILES: Record<SigningKeyKind, SigningProfile> = {
  'ec-p256': {
    importAlgorithm: { name: 'ECDSA', namedCurve: 'P-256' },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
  },
  'ec-p384': {
    importAlgorithm: { name: 'ECDSA', namedCurve: 'P-384' },
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams,
  },
  rsa: {
    importAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' },
  },
};

/** Which signing profile a CA key needs; refuses key types the mesh does not sign with. */
export function signingKeyKind(key: KeyObject): SigningKeyKind {
  if (key.asymmetricKeyType === 'rsa') return 'rsa';
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ec-p256';
    if (curve === 'secp384r1') return 'ec-p384';
    throw new SockmeshError('SOCKMESH_E_CA', `unsupported EC curve '${curve ?? 'unknown'}' for a CA key`, {
      hint: 'use an ECDSA P-256 or P-384 key, or RSA',
    });
  }
  throw new SockmeshError(
    'SOCKMESH_E_CA',
    `unsupported CA key type '${key.asymmetricKeyType ?? 'unknown'}'`,
    {
      hint: 'use an ECDSA P-256 or P-384 key, or RSA',
    },
  );
}

/** A fresh ECDSA P-256 key pair (the only key type the mesh issues). */
export function generateP256(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

export function pkcs8Der(key: KeyObject): Buffer {
  return key.export({ type: 'pkcs8', format: 'der' });
}

export function spkiDer(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** Imports a private KeyObject as a non-extractable WebCrypto signing key. */
export async function toSigningKey(
  key: KeyObject,
): Promise<{ cryptoKey: CryptoKey; signingAlgorithm: Algorithm | EcdsaParams }> {
  const profile = PROFILES[signingKeyKind(key)];
  const cryptoKey = await webcrypto.subtle.importKey('pkcs8', pkcs8Der(key), profile.importAlgorithm, false, [
    'sign',
  ]);
  return { cryptoKey, signingAlgorithm: profile.signingAlgorithm };
}

/** Imports a public KeyObject for @peculiar/x509 (which wants a CryptoKey or SPKI bytes). */
export async function toPublicCryptoKey(key: KeyObject): Promise<CryptoKey> {
  const profile = PROFILES[signingKeyKind(key)];
  return webcrypto.subtle.importKey('spki', spkiDer(key), profile.importAlgorithm, true, ['verify']);
}
