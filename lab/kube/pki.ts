/**
 * Throwaway PKI for a test API server, laid out as envtest lays it out: one CA signs the serving
 * certificate and the admin client certificate (O=system:masters); a separate key pair signs
 * service-account tokens. Keys are ECDSA P-256 (the API server accepts ES256 token keys).
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const VALID_MS = 7 * 24 * 3600 * 1000;

export interface KubePki {
  caPem: string;
  caKeyPem: string;
  servingCertPem: string;
  servingKeyPem: string;
  /** CN=sockmesh-admin, O=system:masters. */
  adminCertPem: string;
  adminKeyPem: string;
  serviceAccountKeyPem: string;
  serviceAccountPubPem: string;
}

export interface KubePkiOptions {
  /** IP SANs of the serving certificate besides 127.0.0.1 (e.g. the `kubernetes` Service's ClusterIP). */
  serviceIps: string[];
  clusterDomain?: string;
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function privatePem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function publicPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('spki', key), 'PUBLIC KEY');
}

function serial(): string {
  // Positive, 16 bytes.
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = b[0]! & 0x7f;
  return Buffer.from(b).toString('hex');
}

async function leaf(
  ca: { cert: x509.X509Certificate; keys: CryptoKeyPair },
  subject: string,
  extensions: x509.Extension[],
): Promise<{ certPem: string; keyPem: string }> {
  const keys = await keyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: ca.cert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + VALID_MS),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
      ...extensions,
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await privatePem(keys.privateKey) };
}

export async function generateKubePki(opts: KubePkiOptions): Promise<KubePki> {
  const domain = opts.clusterDomain ?? 'cluster.local';
  const caKeys = await keyPair();
  const now = Date.now();
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=sockmesh-kube-ca',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + VALID_MS),
    signingAlgorithm: ALG,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const ca = { cert: caCert, keys: caKeys };
  const dnsNames = [
    'localhost',
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    `kubernetes.default.svc.${domain}`,
  ];
  const serving = await leaf(ca, 'CN=kube-apiserver', [
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    new x509.SubjectAlternativeNameExtension([
      ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ...['127.0.0.1', ...opts.serviceIps].map((value) => ({ type: 'ip' as const, value })),
    ]),
  ]);
  const admin = await leaf(ca, 'CN=sockmesh-admin, O=system:masters', [
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
  ]);
  const saKeys = await keyPair();
  return {
    caPem: caCert.toString('pem'),
    caKeyPem: await privatePem(caKeys.privateKey),
    servingCertPem: serving.certPem,
    servingKeyPem: serving.keyPem,
    adminCertPem: admin.certPem,
    adminKeyPem: admin.keyPem,
    serviceAccountKeyPem: await privatePem(saKeys.privateKey),
    serviceAccountPubPem: await publicPem(saKeys.publicKey),
  };
}
