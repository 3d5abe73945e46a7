/**
 * X509-SVID profile checks (X509-SVID.md sections 2-4) for certificates we issue or
 * receive: what rules a leaf or signing certificate breaks. Pure; used by tests and
 * by `sockmesh identity inspect`.
 */
import { checkSpiffeId } from './spiffe-id.js';
import { type CertificateFacts, certificateFacts } from './verify.js';

export type ConformanceRule =
  | 'one-uri-san'
  | 'spiffe-id'
  | 'basic-constraints'
  | 'key-usage-critical'
  | 'digital-signature'
  | 'no-cert-sign'
  | 'eku-server-client'
  | 'key-cert-sign';

export interface Violation {
  rule: ConformanceRule;
  message: string;
}

function leafViolations(f: CertificateFacts): Violation[] {
  const v: Violation[] = [];
  if (f.uriSans.length !== 1) {
    v.push({ rule: 'one-uri-san', message: `has ${f.uriSans.length} URI SANs; exactly one is required` });
  } else {
    const id = checkSpiffeId(f.uriSans[0]!);
    if (!id.ok) v.push({ rule: 'spiffe-id', message: `URI SAN is not a SPIFFE ID: ${id.reason}` });
    else if (id.id.path === '') v.push({ rule: 'spiffe-id', message: 'leaf SPIFFE ID must have a path' });
  }
  if (!f.basicConstraintsPresent || f.isCA) {
    v.push({ rule: 'basic-constraints', message: 'leaf must carry basicConstraints with cA=false' });
  }
  if (f.keyUsageCritical !== true) {
    v.push({ rule: 'key-usage-critical', message: 'keyUsage must be present and critical' });
  }
  if (!f.keyUsage.includes('digitalSignature')) {
    v.push({ rule: 'digital-signature', message: 'leaf keyUsage must include digitalSignature' });
  }
  if (f.keyUsage.includes('keyCertSign') || f.keyUsage.includes('cRLSign')) {
    v.push({ rule: 'no-cert-sign', message: 'leaf keyUsage must not include keyCertSign or cRLSign' });
  }
  if (
    f.extKeyUsage.length > 0 &&
    !(f.extKeyUsage.includes('serverAuth') && f.extKeyUsage.includes('clientAuth'))
  ) {
    v.push({
      rule: 'eku-server-client',
      message: 'extKeyUsage, when present, must include serverAuth and clientAuth',
    });
  } else if (f.extKeyUsage.length === 0) {
    v.push({ rule: 'eku-server-client', message: 'extKeyUsage with serverAuth and clientAuth is expected' });
  }
  return v;
}

function signingViolations(f: CertificateFacts): Violation[] {
  const v: Violation[] = [];
  if (!f.isCA) v.push({ rule: 'basic-constraints', message: 'signing certificate must have cA=true' });
  if (f.keyUsageCritical !== true) {
    v.push({ rule: 'key-usage-critical', message: 'keyUsage must be present and critical' });
  }
  if (!f.keyUsage.includes('keyCertSign')) {
    v.push({ rule: 'key-cert-sign', message: 'signing certificate keyUsage must include keyCertSign' });
  }
  if (f.uriSans.length > 1) {
    v.push({
      rule: 'one-uri-san',
      message: `has ${f.uriSans.length} URI SANs; at most one SPIFFE ID is allowed`,
    });
  }
  for (const uri of f.uriSans) {
    const id = checkSpiffeId(uri);
    if (!id.ok) v.push({ rule: 'spiffe-id', message: `URI SAN is not a SPIFFE ID: ${id.reason}` });
    else if (id.id.path !== '')
      v.push({ rule: 'spiffe-id', message: 'signing certificate SPIFFE ID must have no path' });
  }
  return v;
}

/** Rules the certificate breaks for its role (`leaf` SVID or `signing` CA certificate). */
export function svidViolations(der: Buffer, role: 'leaf' | 'signing'): Violation[] {
  const f = certificateFacts(der);
  return role === 'leaf' ? leafViolations(f) : signingViolations(f);
}
