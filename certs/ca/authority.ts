/**
 * The embedded certificate authority: holds one signing certificate and key for a
 * trust domain and issues X.509-SVIDs (X509-SVID.md sections 3-4) and, on request,
 * intermediate signing certificates. Keys are Node KeyObjects; @peculiar/x509 does
 * the certificate encoding.
 */
import { createPrivateKey, type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { SockmeshError } from '../../lib/errors.js';
import { certsToPem, pemToCertDers } from '../pem.js';
import {
  parseSpiffeId,
  parseTrustDomain,
  type SpiffeId,
  trustDomainId,
  type WorkloadRef,
  workloadSpiffeId,
} from '../spiffe-id.js';
import type { TrustBundle, X509Svid } from '../svid.js';
import { certificateFacts } from '../verify.js';
import * as x509 from '../x509.js';
import { generateP256, signingKeyKind, toPublicCryptoKey, toSigningKey } from './keys.js';

export const DEFAULT_SVID_TTL_MS = 60 * 60 * 1000;
export const DEFAULT_ROOT_TTL_MS = 10 * 365 * 24 * 60 * 60 * 1000;
export const DEFAULT_INTERMEDIATE_TTL_MS = 24 * 60 * 60 * 1000;
/** Tolerates small clock differences between issuer and verifier, but never more than a tenth of the TTL. */
const MAX_BACKDATE_MS = 10_000;

export interface IssueOptions {
  ttlMs?: number;
  /** Evaluation time (ms since the epoch); default now. For tests of expiry. */
  now?: number;
  hint?: string;
}

/** 16 random bytes as a positive DER INTEGER: high bit clear, leading byte non-zero. */
function newSerialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

function secondsFloor(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

function validityWindow(now: number, ttlMs: number, capMs: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isFinite(ttlMs) || ttlMs < 1000) {
    throw new SockmeshError('SOCKMESH_E_CA', `certificate TTL must be at least 1s (got ${ttlMs}ms)`, {
      hint: 'pass a TTL such as 1h or 30m',
    });
  }
  const backdate = Math.min(MAX_BACKDATE_MS, Math.floor(ttlMs / 10));
  const notAfterMs = Math.min(now + ttlMs, capMs);
  if (notAfterMs <= now) {
    throw new SockmeshError('SOCKMESH_E_CA', 'the CA certificate has expired; it cannot issue', {
      hint: 'rotate the CA with `sockmesh ca init --force`',
    });
  }
  return { notBefore: secondsFloor(now - backdate), notAfter: secondsFloor(notAfterMs) };
}

async function keyIdExtensions(
  subjectPublic: KeyObject,
  issuer: x509.X509Certificate | null,
  issuerPublic: KeyObject,
): Promise<x509.Extension[]> {
  const ski = await x509.SubjectKeyIdentifierExtension.create(await toPublicCryptoKey(subjectPublic));
  // Reuse the issuer's own SKI so that a brought-in CA with a non-SHA-1 key id still links up.
  const issuerSki = issuer?.getExtension(x509.SubjectKeyIdentifierExtension);
  const aki = issuerSki
    ? new x509.AuthorityKeyIdentifierExtension(issuerSki.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(await toPublicCryptoKey(issuerPublic));
  return [ski, aki];
}

export interface LoadAuthorityInput {
  trustDomain: string;
  certPem: string;
  keyPem: string | KeyObject;
  /** Certificates between `certPem` and the root, if `certPem` is not self-signed. */
  upstreamPem?: string;
  /** Root CA(s) for the trust domain; required when `certPem` is not self-signed. */
  bundlePem?: string;
  now?: number;
}

export class CertificateAuthority {
  private constructor(
    readonly trustDomain: string,
    private readonly cert: x509.X509Certificate,
    private readonly key: KeyObject,
    /** Certificates sent after the leaf: this CA's cert when it is not a root, then its upstream. */
    private readonly upstream: readonly Buffer[],
    readonly bundle: TrustBundle,
  ) {}

  /** Creates a self-signed ECDSA P-256 root for `trustDomain`. */
  static async createRoot(opts: {
    trustDomain: string;
    ttlMs?: number;
    now?: number;
  }): Promise<CertificateAuthority> {
    const td = parseTrustDomain(opts.trustDomain);
    const now = opts.now ?? Date.now();
    const { notBefore, notAfter } = validityWindow(
      now,
      opts.ttlMs ?? DEFAULT_ROOT_TTL_MS,
      Number.POSITIVE_INFINITY,
    );
    const { privateKey, publicKey } = generateP256();
    const { cryptoKey, signingAlgorithm } = await toSigningKey(privateKey);
    const name = `O=sockmesh, CN=sockmesh root CA ${td}`;
    const pub = await toPublicCryptoKey(publicKey);
    const ski = await x509.SubjectKeyIdentifierExtension.create(pub);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: newSerialHex(),
      subject: name,
      issuer: name,
      notBefore,
      notAfter,
      publicKey: pub,
      signingKey: cryptoKey,
      signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainId(td) }]),
        ski,
        new x509.AuthorityKeyIdentifierExtension(ski.keyId),
      ],
    });
    const der = Buffer.from(cert.rawData);
    return new CertificateAuthority(td, cert, privateKey, [], { trustDomain: td, certs: [der] });
  }

  /**
   * Loads a CA a security team brings (or one `ca init` stored): it must be a CA
   * certificate (cA=true, keyCertSign), valid now, with a matching P-256/P-384/RSA key.
   */
  static load(input: LoadAuthorityInput): CertificateAuthority {
    const td = parseTrustDomain(input.trustDomain);
    const now = input.now ?? Date.now();
    const certDers = pemCerts(input.certPem, 'CA certificate');
    const certDer = certDers[0]!;
    let node: X509Certificate;
    let cert: x509.X509Certificate;
    try {
      node = new X509Certificate(certDer);
      cert = new x509.X509Certificate(certDer);
    } catch (err) {
      throw new SockmeshError('SOCKMESH_E_CA', 'CA certificate cannot be decoded', { cause: err });
    }
    const facts = certificateFacts(certDer);
    if (!facts.isCA) {
      throw new SockmeshError(
        'SOCKMESH_E_CA',
        'the certificate is not a CA (basicConstraints cA is not true)',
        {
          hint: 'bring a CA certificate, not a leaf',
        },
      );
    }
    if (facts.keyUsage.length > 0 && !facts.keyUsage.includes('keyCertSign')) {
      throw new SockmeshError('SOCKMESH_E_CA', 'the CA certificate does not allow keyCertSign', {
        hint: 'its keyUsage extension must include keyCertSign',
      });
    }
    if (now >= facts.notAfter.getTime() || now < facts.notBefore.getTime()) {
      throw new SockmeshError(
        'SOCKMESH_E_CA',
        `the CA certificate is not valid now (${facts.notBefore.toISOString()} .. ${facts.notAfter.toISOString()})`,
      );
    }
    for (const uri of facts.uriSans) {
      if (!uri.startsWith('spiffe://')) continue;
      const id = parseSpiffeId(uri);
      if (id.trustDomain !== td || id.path !== '') {
        throw new SockmeshError(
          'SOCKMESH_E_CA',
          `the CA certificate names '${uri}', not trust domain '${td}'`,
          {
            hint: `pass --trust-domain ${id.trustDomain} or bring the CA of '${td}'`,
          },
        );
      }
    }
    let key: KeyObject;
    try {
      key = typeof input.keyPem === 'string' ? createPrivateKey(input.keyPem) : input.keyPem;
    } catch (err) {
      throw new SockmeshError('SOCKMESH_E_CA', 'CA key cannot be read (expected an unencrypted PEM key)', {
        cause: err,
      });
    }
    signingKeyKind(key);
    if (!node.checkPrivateKey(key)) {
      throw new SockmeshError('SOCKMESH_E_CA', 'the CA key does not match the CA certificate', {
        hint: 'pass the key that belongs to --cert',
      });
    }
    const selfSigned = node.checkIssued(node) && node.verify(node.publicKey);
    const upstream = [
      ...certDers.slice(1),
      ...(input.upstreamPem ? pemCerts(input.upstreamPem, 'upstream chain') : []),
    ];
    let roots: Buffer[];
    if (selfSigned) {
      roots = [certDer, ...(input.bundlePem ? pemCerts(input.bundlePem, 'bundle') : [])];
    } else {
      if (!input.bundlePem) {
        throw new SockmeshError(
          'SOCKMESH_E_CA',
          'the CA certificate is not self-signed and no root bundle was given',
          {
            hint: 'pass --bundle with the root CA certificate(s) it chains to',
          },
        );
      }
      roots = pemCerts(input.bundlePem, 'bundle');
    }
    return new CertificateAuthority(td, cert, key, selfSigned ? upstream : [certDer, ...upstream], {
      trustDomain: td,
      certs: dedupe(roots),
    });
  }

  /** This CA's certificate (DER). */
  get certificateDer(): Buffer {
    return Buffer.from(this.cert.rawData);
  }

  get notAfter(): Date {
    return this.cert.notAfter;
  }

  certificatePem(): string {
    return certsToPem([this.certificateDer, ...this.upstream.filter((d) => !d.equals(this.certificateDer))]);
  }

  /** The CA key as PKCS#8 PEM, for the CA store only. */
  keyPem(): string {
    return this.key.export({ type: 'pkcs8', format: 'pem' }).toString();
  }

  /** Issues an X.509-SVID for a workload (`/ns/<ns>/sa/<sa>`) or an explicit SPIFFE ID. */
  async issueSvid(target: WorkloadRef | string, opts: IssueOptions = {}): Promise<X509Svid> {
    const id: SpiffeId =
      typeof target === 'string'
        ? parseSpiffeId(target)
        : workloadSpiffeId(this.trustDomain, target.namespace, target.serviceAccount);
    if (id.trustDomain !== this.trustDomain) {
      throw new SockmeshError(
        'SOCKMESH_E_CA',
        `cannot issue '${id.uri}': this CA signs for '${this.trustDomain}'`,
      );
    }
    if (id.path === '') {
      throw new SockmeshError('SOCKMESH_E_CA', `cannot issue '${id.uri}': a leaf SVID needs a path`);
    }
    const now = opts.now ?? Date.now();
    const { notBefore, notAfter } = validityWindow(
      now,
      opts.ttlMs ?? DEFAULT_SVID_TTL_MS,
      this.cert.notAfter.getTime(),
    );
    const { privateKey, publicKey } = generateP256();
    const { cryptoKey, signingAlgorithm } = await toSigningKey(this.key);
    const serial = newSerialHex();
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: 'O=sockmesh',
      issuer: this.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: await toPublicCryptoKey(publicKey),
      signingKey: cryptoKey,
      signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.uri }]),
        ...(await keyIdExtensions(publicKey, this.cert, this.publicKey())),
      ],
    });
    return {
      spiffeId: id,
      chain: [Buffer.from(leaf.rawData), ...this.upstream],
      privateKey,
      bundle: this.bundle,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      serial,
      ...(opts.hint ? { hint: opts.hint } : {}),
    };
  }

  /** Issues an intermediate signing certificate and returns a CA that signs with it. */
  async createIntermediate(opts: { ttlMs?: number; now?: number } = {}): Promise<CertificateAuthority> {
    const now = opts.now ?? Date.now();
    const { notBefore, notAfter } = validityWindow(
      now,
      opts.ttlMs ?? DEFAULT_INTERMEDIATE_TTL_MS,
      this.cert.notAfter.getTime(),
    );
    const { privateKey, publicKey } = generateP256();
    const { cryptoKey, signingAlgorithm } = await toSigningKey(this.key);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: newSerialHex(),
      subject: `O=sockmesh, CN=sockmesh intermediate CA ${this.trustDomain}`,
      issuer: this.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: await toPublicCryptoKey(publicKey),
      signingKey: cryptoKey,
      signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainId(this.trustDomain) }]),
        ...(await keyIdExtensions(publicKey, this.cert, this.publicKey())),
      ],
    });
    const der = Buffer.from(cert.rawData);
    return new CertificateAuthority(this.trustDomain, cert, privateKey, [der, ...this.upstream], this.bundle);
  }

  private publicKey(): KeyObject {
    return new X509Certificate(this.certificateDer).publicKey;
  }
}

function pemCerts(pem: string, what: string): Buffer[] {
  const ders = pemToCertDers(pem);
  if (ders.length === 0) {
    throw new SockmeshError('SOCKMESH_E_CA', `${what} contains no PEM certificate`, {
      hint: 'expected -----BEGIN CERTIFICATE----- blocks',
    });
  }
  return ders;
}

function dedupe(ders: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const d of ders) if (!out.some((o) => o.equals(d))) out.push(d);
  return out;
}
