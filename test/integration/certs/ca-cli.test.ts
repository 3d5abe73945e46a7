import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { loadAuthority } from '../../../certs/ca/store.js';
import { certsToPem } from '../../../certs/pem.js';
import type { Command } from '../../../cli/command.js';
import { caCommand } from '../../../cli/commands/ca.js';
import { identityCommand } from '../../../cli/commands/identity.js';
import { isSockmeshError } from '../../../lib/errors.js';

async function run(cmd: Command, argv: string[]): Promise<{ code: number; out: string }> {
  const stdout = new PassThrough();
  let out = '';
  stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const code = await cmd.run({ argv, stdout, stderr: new PassThrough() });
  return { code, out };
}

function openssl(args: string[]): { status: number; output: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

describe('CA directory and CLI', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sockmesh-test-ca-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('ca init creates a P-256 root with the key at mode 0600 and refuses to overwrite it', async () => {
    const caDir = join(dir, 'ca');
    const res = await run(caCommand, ['init', '--trust-domain', 'example.org', '--dir', caDir]);
    assert.equal(res.code, 0);
    assert.match(res.out, /created CA for trust domain example\.org/);
    assert.equal((await stat(join(caDir, 'ca.key'))).mode & 0o777, 0o600);
    assert.equal((await stat(caDir)).mode & 0o777, 0o700);
    assert.deepEqual(
      JSON.parse(await readFile(join(caDir, 'config.json'), 'utf8')).trustDomain,
      'example.org',
    );
    const ca = await loadAuthority(caDir);
    assert.equal(ca.trustDomain, 'example.org');
    const text = openssl(['x509', '-in', join(caDir, 'ca.crt'), '-noout', '-text']).output;
    assert.match(text, /NIST CURVE: P-256/);
    assert.match(text, /CA:TRUE/);
    assert.match(text, /Certificate Sign/);
    await assert.rejects(
      run(caCommand, ['init', '--trust-domain', 'example.org', '--dir', caDir]),
      /already exists/,
    );
    await assert.rejects(
      run(caCommand, ['init', '--trust-domain', 'Example.org', '--dir', join(dir, 'bad')]),
      (e: unknown) => isSockmeshError(e, 'SOCKMESH_E_SPIFFE_ID') && /lowercase/.test(e.message),
    );
  });

  it('refuses to load a CA key readable by others', async () => {
    const caDir = join(dir, 'loose');
    await run(caCommand, ['init', '--trust-domain', 'example.org', '--dir', caDir]);
    await chmod(join(caDir, 'ca.key'), 0o644);
    await assert.rejects(
      loadAuthority(caDir),
      (e: unknown) =>
        isSockmeshError(e, 'SOCKMESH_E_CA') &&
        /group\/others/.test(e.message) &&
        /chmod 600/.test(e.hint ?? ''),
    );
  });

  it('imports a P-384 CA made by openssl, and refuses a non-CA certificate', async () => {
    const key = join(dir, 'team.key');
    const cert = join(dir, 'team.pem');
    const made = openssl([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-384',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '30',
      '-subj',
      '/O=security team/CN=corp root',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    assert.equal(made.status, 0, made.output);
    const caDir = join(dir, 'imported');
    const res = await run(caCommand, [
      'init',
      '--trust-domain',
      'corp.example',
      '--cert',
      cert,
      '--key',
      key,
      '--dir',
      caDir,
    ]);
    assert.equal(res.code, 0);
    assert.match(res.out, /imported CA/);
    const issued = await run(identityCommand, [
      'issue',
      '--dir',
      caDir,
      '--namespace',
      'pay',
      '--service-account',
      'api',
      '--out',
      join(dir, 'pay'),
    ]);
    assert.equal(issued.code, 0, issued.out);
    const v = openssl(['verify', '-CAfile', join(dir, 'pay', 'bundle.pem'), join(dir, 'pay', 'svid.pem')]);
    assert.equal(v.status, 0, v.output);

    const leafKey = join(dir, 'leaf.key');
    const leafCert = join(dir, 'leaf.pem');
    assert.equal(
      openssl([
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        leafKey,
        '-out',
        leafCert,
        '-days',
        '1',
        '-subj',
        '/CN=leaf',
        '-addext',
        'basicConstraints=critical,CA:FALSE',
      ]).status,
      0,
    );
    await assert.rejects(
      run(caCommand, [
        'init',
        '--trust-domain',
        'corp.example',
        '--cert',
        leafCert,
        '--key',
        leafKey,
        '--dir',
        join(dir, 'x'),
      ]),
      /not a CA/,
    );
    await assert.rejects(
      run(caCommand, [
        'init',
        '--trust-domain',
        'corp.example',
        '--cert',
        cert,
        '--key',
        leafKey,
        '--dir',
        join(dir, 'y'),
      ]),
      /does not match/,
    );
  });

  it('openssl verify accepts an SVID chain through an intermediate against the bundle', async () => {
    const root = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const inter = await root.createIntermediate();
    const svid = await inter.issueSvid({ namespace: 'shop', serviceAccount: 'cart' });
    const leafPem = join(dir, 'chain-leaf.pem');
    const interPem = join(dir, 'chain-inter.pem');
    const bundle = join(dir, 'chain-bundle.pem');
    await writeFile(leafPem, certsToPem([svid.chain[0]!]));
    await writeFile(interPem, certsToPem(svid.chain.slice(1)));
    await writeFile(bundle, certsToPem(root.bundle.certs));
    const ok = openssl(['verify', '-CAfile', bundle, '-untrusted', interPem, leafPem]);
    assert.equal(ok.status, 0, ok.output);
    assert.match(ok.output, /: OK/);
    // The same check fails without the intermediate and against a foreign bundle.
    assert.notEqual(openssl(['verify', '-CAfile', bundle, leafPem]).status, 0);
    const foreign = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const foreignBundle = join(dir, 'foreign.pem');
    await writeFile(foreignBundle, certsToPem(foreign.bundle.certs));
    assert.notEqual(openssl(['verify', '-CAfile', foreignBundle, '-untrusted', interPem, leafPem]).status, 0);
  });

  it('identity issue / ls / inspect, including an expired certificate', async () => {
    const caDir = join(dir, 'ca');
    const out = join(dir, 'shop.cart');
    const issued = await run(identityCommand, [
      'issue',
      '--dir',
      caDir,
      '--namespace',
      'shop',
      '--service-account',
      'cart',
      '--ttl',
      '10m',
      '--out',
      out,
    ]);
    assert.equal(issued.code, 0);
    assert.match(issued.out, /issued spiffe:\/\/example\.org\/ns\/shop\/sa\/cart/);
    assert.equal((await stat(join(out, 'svid.key'))).mode & 0o777, 0o600);
    const v = openssl(['verify', '-CAfile', join(out, 'bundle.pem'), join(out, 'svid.pem')]);
    assert.equal(v.status, 0, v.output);

    const ls = await run(identityCommand, ['ls', '--dir', caDir]);
    assert.match(ls.out, /spiffe:\/\/example\.org\/ns\/shop\/sa\/cart\s+\S+\s+valid/);

    const good = await run(identityCommand, ['inspect', join(out, 'svid.pem'), '--dir', caDir]);
    assert.equal(good.code, 0);
    assert.match(good.out, /SPIFFE ID\s+spiffe:\/\/example\.org\/ns\/shop\/sa\/cart/);
    assert.match(good.out, /issuer\s+O=sockmesh, CN=sockmesh root CA example\.org/);
    assert.match(good.out, /verdict\s+OK/);

    const ca = await loadAuthority(caDir);
    const old = await ca.issueSvid(
      { namespace: 'shop', serviceAccount: 'cart' },
      { now: Date.now() - 7_200_000 },
    );
    const oldPem = join(dir, 'old.pem');
    await writeFile(oldPem, certsToPem([...old.chain]));
    const bad = await run(identityCommand, ['inspect', oldPem, '--dir', caDir]);
    assert.equal(bad.code, 1);
    assert.match(bad.out, /verdict\s+REFUSED \(expired\)/);
  });
});
