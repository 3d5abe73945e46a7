import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CertificateAuthority, DEFAULT_ROOT_TTL_MS } from '../../certs/ca/authority.js';
import { CA_FILES, loadAuthority, readCaConfig, resolveCaDir, saveAuthority } from '../../certs/ca/store.js';
import { formatDuration, parseDuration } from '../../certs/duration.js';
import { certificateFacts } from '../../certs/verify.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';

const USAGE = `Usage: sockmesh ca <init|show|bundle> [options]

The embedded certificate authority that issues X.509-SVIDs
(spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>).

  sockmesh ca init --trust-domain <td> [--ttl 87600h] [--force]
      create an ECDSA P-256 root CA for the trust domain
  sockmesh ca init --trust-domain <td> --cert ca.pem --key ca.key [--bundle root.pem] [--force]
      bring an existing CA (EC P-256/P-384 or RSA); --bundle is needed when
      ca.pem is an intermediate, not a self-signed root
  sockmesh ca show      print the trust domain and the CA certificate
  sockmesh ca bundle    print the trust bundle (PEM) that peers verify against

Options:
  --dir <path>   CA directory (default: $SOCKMESH_CA_DIR or /var/lib/sockmesh/ca);
                 holds ca.crt, ca.key (mode 0600), bundle.crt, config.json

Exit codes: 0 ok, 1 failure, 2 usage.`;

export const caCommand: Command = {
  usage: USAGE,
  async run({ argv, stdout }) {
    const { values, positionals } = parseCommandArgs(argv, {
      dir: { type: 'string' },
      'trust-domain': { type: 'string' },
      ttl: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      bundle: { type: 'string' },
      force: { type: 'boolean' },
    });
    const dir = resolveCaDir(values.dir);
    const sub = positionals[0];
    if (sub === 'init') {
      const td = values['trust-domain'];
      if (!td)
        throw new SockmeshError('SOCKMESH_E_USAGE', 'ca init needs --trust-domain', {
          hint: 'e.g. --trust-domain example.org',
        });
      let ca: CertificateAuthority;
      let origin: 'generated' | 'imported';
      if (values.cert || values.key) {
        if (!values.cert || !values.key) {
          throw new SockmeshError('SOCKMESH_E_USAGE', 'bringing a CA needs both --cert and --key');
        }
        if (values.ttl) throw new SockmeshError('SOCKMESH_E_USAGE', '--ttl applies to a generated CA only');
        const [certPem, keyPem, bundlePem] = await Promise.all([
          readFile(values.cert, 'utf8'),
          readFile(values.key, 'utf8'),
          values.bundle ? readFile(values.bundle, 'utf8') : Promise.resolve(undefined),
        ]);
        ca = CertificateAuthority.load({
          trustDomain: td,
          certPem,
          keyPem,
          ...(bundlePem ? { bundlePem } : {}),
        });
        origin = 'imported';
      } else {
        if (values.bundle) throw new SockmeshError('SOCKMESH_E_USAGE', '--bundle goes with --cert and --key');
        ca = await CertificateAuthority.createRoot({
          trustDomain: td,
          ttlMs: values.ttl ? parseDuration(values.ttl) : DEFAULT_ROOT_TTL_MS,
        });
        origin = 'generated';
      }
      await saveAuthority(dir, ca, origin, { force: values.force ?? false });
      const f = certificateFacts(ca.certificateDer);
      stdout.write(
        `${origin === 'generated' ? 'created' : 'imported'} CA for trust domain ${ca.trustDomain} in ${dir}\n` +
          `  certificate  ${join(dir, CA_FILES.cert)} (${f.subject}, valid until ${f.notAfter.toISOString()})\n` +
          `  key          ${join(dir, CA_FILES.key)} (mode 0600)\n` +
          `  bundle       ${join(dir, CA_FILES.bundle)}\n`,
      );
      return EXIT.OK;
    }
    if (sub === 'show') {
      const config = await readCaConfig(dir);
      const ca = await loadAuthority(dir);
      const f = certificateFacts(ca.certificateDer);
      stdout.write(
        `trust domain  ${ca.trustDomain} (${config.origin}${config.createdAt ? `, ${config.createdAt}` : ''})\n` +
          `directory     ${dir}\n` +
          `subject       ${f.subject}\n` +
          `issuer        ${f.issuer}\n` +
          `serial        ${f.serial}\n` +
          `valid         ${f.notBefore.toISOString()} .. ${f.notAfter.toISOString()} (${formatDuration(f.notAfter.getTime() - Date.now())} left)\n` +
          `bundle        ${ca.bundle.certs.length} CA certificate(s) in ${join(dir, CA_FILES.bundle)}\n`,
      );
      return EXIT.OK;
    }
    if (sub === 'bundle') {
      const ca = await loadAuthority(dir);
      stdout.write(await readFile(join(dir, CA_FILES.bundle), 'utf8').catch(() => ca.certificatePem()));
      return EXIT.OK;
    }
    throw new SockmeshError('SOCKMESH_E_USAGE', `expected init, show or bundle, got '${sub ?? ''}'`, {
      hint: 'see sockmesh ca --help',
    });
  },
};
