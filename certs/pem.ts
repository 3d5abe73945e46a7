/**
 * PEM <-> DER for certificates and keys. Splitting a DER run into certificates is
 * left to Node's X509Certificate (it reports each one's exact encoding in `.raw`).
 */
import { X509Certificate } from 'node:crypto';
import { SockmeshError } from '../lib/errors.js';

const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g;

export function derToPem(der: Buffer, label = 'CERTIFICATE'): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.endsWith('\n') ? b64 : `${b64}\n`}-----END ${label}-----\n`;
}

export function certsToPem(ders: readonly Buffer[]): string {
  return ders.map((d) => derToPem(d)).join('');
}

/** Every certificate in a PEM text, in order, as DER. */
export function pemToCertDers(pem: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of pem.matchAll(PEM_CERT)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}

/** Splits concatenated DER certificates (the Workload API's chain and bundle encoding). */
export function splitDerCertificates(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < buf.length) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(buf.subarray(offset));
    } catch (err) {
      throw new SockmeshError('SOCKMESH_E_SVID', `malformed DER certificate at byte ${offset}`, {
        hint: 'expected ASN.1 DER certificates concatenated back to back',
        cause: err,
      });
    }
    if (cert.raw.length === 0) break;
    out.push(Buffer.from(cert.raw));
    offset += cert.raw.length;
  }
  return out;
}

/** Accepts PEM text or raw DER and returns DER certificates. */
export function readCertificates(data: Buffer | string): Buffer[] {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  if (text.includes('-----BEGIN CERTIFICATE-----')) return pemToCertDers(text);
  return splitDerCertificates(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
}
