/**
 * The CA directory: ca.crt (PEM, this CA's cert then any upstream chain), ca.key
 * (PKCS#8 PEM, mode 0600), bundle.crt (root certificates of the trust domain) and
 * config.json (the trust domain). Default /var/lib/sockmesh/ca, or SOCKMESH_CA_DIR.
 */
import { chmod, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SockmeshError } from '../../lib/errors.js';
import { certsToPem, pemToCertDers } from '../pem.js';
import { parseTrustDomain } from '../spiffe-id.js';
import type { X509Svid } from '../svid.js';
import { CertificateAuthority } from './authority.js';

export const DEFAULT_CA_DIR = '/var/lib/sockmesh/ca';

export const CA_FILES = {
  cert: 'ca.crt',
  key: 'ca.key',
  bundle: 'bundle.crt',
  config: 'config.json',
} as const;

export interface CaConfig {
  trustDomain: string;
  createdAt: string;
  /** `generated` by ca init, or `imported` from a security team's CA. */
  origin: 'generated' | 'imported';
}

/** `--dir` wins, then SOCKMESH_CA_DIR, then the default. */
export function resolveCaDir(explicit?: string): string {
  return explicit ?? process.env.SOCKMESH_CA_DIR ?? DEFAULT_CA_DIR;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes atomically (temp file + rename) with the given mode, then enforces it against the umask. */
async function writeFileMode(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

export async function saveAuthority(
  dir: string,
  ca: CertificateAuthority,
  origin: CaConfig['origin'],
  opts: { force?: boolean } = {},
): Promise<void> {
  if (!opts.force && (await exists(join(dir, CA_FILES.key)))) {
    throw new SockmeshError('SOCKMESH_E_CA', `a CA already exists in ${dir}`, {
      hint: 'pass --force to replace it (every issued SVID stops verifying), or choose another --dir',
    });
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  await writeFileMode(join(dir, CA_FILES.key), ca.keyPem(), 0o600);
  await writeFileMode(join(dir, CA_FILES.cert), ca.certificatePem(), 0o644);
  await writeFileMode(join(dir, CA_FILES.bundle), certsToPem(ca.bundle.certs), 0o644);
  const config: CaConfig = { trustDomain: ca.trustDomain, createdAt: new Date().toISOString(), origin };
  await writeFileMode(join(dir, CA_FILES.config), `${JSON.stringify(config, null, 2)}\n`, 0o644);
}

export async function readCaConfig(dir: string): Promise<CaConfig> {
  let raw: string;
  try {
    raw = await readFile(join(dir, CA_FILES.config), 'utf8');
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no CA in ${dir}`, {
      hint: 'run `sockmesh ca init --trust-domain <td>` first, or pass --dir / SOCKMESH_CA_DIR',
      cause: err,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_CA', `${join(dir, CA_FILES.config)} is not valid JSON`, {
      cause: err,
    });
  }
  const p = parsed as Partial<CaConfig> | null;
  if (!p || typeof p.trustDomain !== 'string') {
    throw new SockmeshError('SOCKMESH_E_CA', `${join(dir, CA_FILES.config)} has no trustDomain`);
  }
  return {
    trustDomain: parseTrustDomain(p.trustDomain),
    createdAt: typeof p.createdAt === 'string' ? p.createdAt : '',
    origin: p.origin === 'imported' ? 'imported' : 'generated',
  };
}

/** Loads and validates the CA stored in `dir`; refuses a key file readable by others. */
export async function loadAuthority(dir: string): Promise<CertificateAuthority> {
  const config = await readCaConfig(dir);
  const keyPath = join(dir, CA_FILES.key);
  const st = await stat(keyPath).catch((err: unknown) => {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `CA key ${keyPath} is missing`, { cause: err });
  });
  if ((st.mode & 0o077) !== 0) {
    throw new SockmeshError(
      'SOCKMESH_E_CA',
      `CA key ${keyPath} is accessible by group/others (mode ${(st.mode & 0o777).toString(8)})`,
      {
        hint: `chmod 600 ${keyPath}`,
      },
    );
  }
  const [certPem, keyPem, bundlePem] = await Promise.all([
    readFile(join(dir, CA_FILES.cert), 'utf8'),
    readFile(keyPath, 'utf8'),
    readFile(join(dir, CA_FILES.bundle), 'utf8').catch(() => undefined),
  ]);
  return CertificateAuthority.load({
    trustDomain: config.trustDomain,
    certPem,
    keyPem,
    ...(bundlePem ? { bundlePem } : {}),
  });
}

/** Keeps a copy of an SVID's certificate (never its key) under issued/, for `identity ls`. */
export async function recordIssued(dir: string, svid: X509Svid): Promise<string> {
  const issuedDir = join(dir, 'issued');
  await mkdir(issuedDir, { recursive: true, mode: 0o755 });
  const path = join(issuedDir, `${svid.serial}.pem`);
  await writeFileMode(path, certsToPem([svid.chain[0]!]), 0o644);
  return path;
}

export interface IssuedRecord {
  path: string;
  der: Buffer;
}

/** The certificates `recordIssued` kept, in file-name order. */
export async function listIssued(dir: string): Promise<IssuedRecord[]> {
  const issuedDir = join(dir, 'issued');
  let names: string[];
  try {
    names = (await readdir(issuedDir)).filter((n) => n.endsWith('.pem')).sort();
  } catch {
    return [];
  }
  const out: IssuedRecord[] = [];
  for (const name of names) {
    const path = join(issuedDir, name);
    const der = pemToCertDers(await readFile(path, 'utf8'))[0];
    if (der) out.push({ path, der });
  }
  return out;
}
