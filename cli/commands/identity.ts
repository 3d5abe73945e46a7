import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CA_FILES,
  listIssued,
  loadAuthority,
  readCaConfig,
  recordIssued,
  resolveCaDir,
} from '../../certs/ca/store.js';
import { svidViolations } from '../../certs/conformance.js';
import { formatDuration, parseDuration } from '../../certs/duration.js';
import { readCertificates } from '../../certs/pem.js';
import { checkSpiffeId } from '../../certs/spiffe-id.js';
import { bundlePem, svidChainPem, svidKeyPem, type TrustBundle } from '../../certs/svid.js';
import { certificateFacts, peerSpiffeIdOf, verifyPeer } from '../../certs/verify.js';
import { WorkloadApiClient } from '../../certs/workload-api/client.js';
import { StandaloneWorkloadApi } from '../../certs/workload-api/standalone.js';
import { DEFAULT_STATE_DIR } from '../../lab/state.js';
import { TestBed } from '../../lab/testbed.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';

const USAGE = `Usage: sockmesh identity <issue|inspect|ls|serve> [options]

X.509-SVIDs for humans.

  sockmesh identity issue --namespace <ns> --service-account <sa> [--ttl 1h] [--out <dir>]
      issue spiffe://<td>/ns/<ns>/sa/<sa> from the CA; writes svid.pem (chain,
      leaf first), svid.key (PKCS#8, mode 0600) and bundle.pem to --out
      (default ./<ns>.<sa>/)
  sockmesh identity inspect <cert.pem|cert.der> [--bundle <bundle.pem>]
      print SPIFFE ID, issuer, validity, X509-SVID profile problems and the
      chain's verdict against the bundle (default: the CA directory's bundle)
  sockmesh identity inspect --socket unix:///path/agent.sock
      the same for the SVID a Workload API (e.g. a SPIRE agent) gives this process
  sockmesh identity ls
      the SVIDs 'identity issue' made (certificates only), with their state
  sockmesh identity serve --socket <path> --registrations <file.yaml> [--ca <dir>] [--ttl 1h]
      run a SPIFFE Workload API server (a SPIRE-agent stand-in) on a unix
      socket: a caller gets every SPIFFE ID of every registration entry whose
      selectors (cgroup, uid, gid) it matches, all in one FetchX509SVID
      response, issued by the CA and renewed at half life. SIGHUP reloads the
      table and renews every SVID now; SIGINT/SIGTERM stop. Table format:
        entries:
          - selectors: {cgroup: /kubepods/node1/system, uid: 0}
            spiffeIds: [spiffe://<td>/ns/shop/sa/frontend, ...]
        federatedBundles: {spiffe://partner.example: partner.pem}   # optional

Options:
  --dir <path>   CA directory (default: $SOCKMESH_CA_DIR, else the running local
                 mesh's CA, else /var/lib/sockmesh/ca); --ca is the same

Exit codes: inspect returns 1 when the chain is refused; 0 ok, 2 usage.`;

function line(label: string, value: string): string {
  return `${label.padEnd(13)} ${value}\n`;
}

function describeChain(
  chain: Buffer[],
  bundle: TrustBundle | null,
  now: number,
): { text: string; ok: boolean } {
  const leaf = chain[0]!;
  const f = certificateFacts(leaf);
  const id = peerSpiffeIdOf(leaf);
  let out = '';
  out += line('SPIFFE ID', id.ok ? id.spiffeId : `(none: ${id.reason})`);
  out += line('subject', f.subject || '(empty)');
  out += line('issuer', f.issuer);
  out += line('serial', f.serial);
  const left = f.notAfter.getTime() - now;
  out += line(
    'valid',
    `${f.notBefore.toISOString()} .. ${f.notAfter.toISOString()} (${left > 0 ? `${formatDuration(left)} left` : `expired ${formatDuration(-left)} ago`})`,
  );
  out += line('key usage', `${f.keyUsage.join(', ') || '(none)'}${f.keyUsageCritical ? ' (critical)' : ''}`);
  out += line('ext key use', f.extKeyUsage.join(', ') || '(none)');
  out += line('chain', `${chain.length} certificate(s)`);
  const problems = svidViolations(leaf, f.isCA ? 'signing' : 'leaf');
  out += line(
    'profile',
    problems.length === 0 ? 'conforms to X509-SVID' : problems.map((p) => p.message).join('; '),
  );
  if (!bundle) {
    out += line('verdict', 'not verified (no trust bundle: pass --bundle or create a CA)');
    return { text: out, ok: false };
  }
  const v = verifyPeer(chain, bundle, { now });
  out += line(
    'verdict',
    v.ok
      ? `OK: ${v.spiffeId} verifies against the ${bundle.trustDomain} bundle`
      : `REFUSED (${v.code}): ${v.reason}`,
  );
  return { text: out, ok: v.ok };
}

/** The trust domain a bundle's CA names in its URI SAN (spiffe://<td>), if it names one. */
function bundleTrustDomain(certs: Buffer[]): string | null {
  for (const der of certs) {
    for (const uri of certificateFacts(der).uriSans) {
      const id = checkSpiffeId(uri);
      if (id.ok && id.id.path === '') return id.id.trustDomain;
    }
  }
  return null;
}

async function loadBundle(
  dir: string,
  explicit: string | undefined,
  leaf: Buffer,
): Promise<TrustBundle | null> {
  const id = peerSpiffeIdOf(leaf);
  const parsed = id.ok ? checkSpiffeId(id.spiffeId) : null;
  const leafTd = parsed?.ok ? parsed.id.trustDomain : '';
  if (explicit) {
    const certs = readCertificates(await readFile(explicit));
    return { trustDomain: bundleTrustDomain(certs) ?? leafTd, certs };
  }
  try {
    const certs = readCertificates(await readFile(join(dir, CA_FILES.bundle)));
    const config = await readCaConfig(dir);
    return { trustDomain: config.trustDomain, certs };
  } catch {
    return null;
  }
}

export const identityCommand: Command = {
  usage: USAGE,
  async run({ argv, stdout, stderr }) {
    const { values, positionals } = parseCommandArgs(argv, {
      dir: { type: 'string' },
      ca: { type: 'string' },
      registrations: { type: 'string' },
      namespace: { type: 'string', short: 'n' },
      'service-account': { type: 'string' },
      ttl: { type: 'string' },
      out: { type: 'string' },
      bundle: { type: 'string' },
      socket: { type: 'string' },
    });
    const dir = resolveCaDir(values.ca ?? values.dir ?? runningMeshCaDir());
    const sub = positionals[0];
    if (sub === 'serve') {
      if (!values.socket || !values.registrations) {
        throw new SockmeshError('SOCKMESH_E_USAGE', 'identity serve needs --socket and --registrations', {
          hint: 'see sockmesh identity --help',
        });
      }
      const socketPath = values.socket.replace(/^unix:(\/\/)?/, '');
      const server = new StandaloneWorkloadApi({
        socketPath,
        ca: await loadAuthority(dir),
        recordDir: dir,
        registrationsFile: values.registrations,
        ...(values.ttl ? { ttlMs: parseDuration(values.ttl) } : {}),
      });
      await server.start();
      const table = server.table!;
      // Handlers before the line that says we serve: whoever reads it may signal at once.
      const reload = () => void server.reload();
      process.on('SIGHUP', reload);
      const stopped = new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      stdout.write(
        `serving the SPIFFE Workload API on ${socketPath}: ${table.entries.length} registration entries, ` +
          `${new Set(table.entries.flatMap((e) => e.spiffeIds)).size} SPIFFE IDs\n`,
      );
      await stopped;
      process.off('SIGHUP', reload);
      stderr.write('sockmesh identity serve: stopping\n');
      await server.stop();
      return EXIT.OK;
    }
    if (sub === 'issue') {
      const ns = values.namespace;
      const sa = values['service-account'];
      if (!ns || !sa) {
        throw new SockmeshError('SOCKMESH_E_USAGE', 'identity issue needs --namespace and --service-account');
      }
      const ca = await loadAuthority(dir);
      const svid = await ca.issueSvid(
        { namespace: ns, serviceAccount: sa },
        values.ttl ? { ttlMs: parseDuration(values.ttl) } : {},
      );
      const out = values.out ?? `${ns}.${sa}`;
      await mkdir(out, { recursive: true });
      await writeFile(join(out, 'svid.key'), svidKeyPem(svid), { mode: 0o600 });
      await chmod(join(out, 'svid.key'), 0o600);
      await writeFile(join(out, 'svid.pem'), svidChainPem(svid));
      await writeFile(join(out, 'bundle.pem'), bundlePem(svid.bundle));
      await recordIssued(dir, svid);
      stdout.write(
        `issued ${svid.spiffeId.uri}\n` +
          line('serial', svid.serial) +
          line(
            'valid until',
            `${svid.notAfter.toISOString()} (${formatDuration(svid.notAfter.getTime() - Date.now())})`,
          ) +
          line(
            'files',
            `${join(out, 'svid.pem')}, ${join(out, 'svid.key')} (0600), ${join(out, 'bundle.pem')}`,
          ),
      );
      return EXIT.OK;
    }
    if (sub === 'inspect') {
      const now = Date.now();
      if (values.socket) {
        const client = new WorkloadApiClient({ address: values.socket });
        try {
          const ctx = await client.fetchX509Context();
          let ok = true;
          for (const [i, svid] of ctx.svids.entries()) {
            const r = describeChain([...svid.chain], svid.bundle, now);
            stdout.write(`${i > 0 ? '\n' : ''}${r.text}`);
            ok &&= r.ok;
          }
          return ok ? EXIT.OK : EXIT.FAILURE;
        } finally {
          client.close();
        }
      }
      const file = positionals[1];
      if (!file) {
        throw new SockmeshError('SOCKMESH_E_USAGE', 'identity inspect needs a certificate file or --socket');
      }
      const chain = readCertificates(await readFile(file));
      if (chain.length === 0) throw new SockmeshError('SOCKMESH_E_SVID', `${file} holds no certificate`);
      const bundle = await loadBundle(dir, values.bundle, chain[0]!);
      const r = describeChain(chain, bundle, now);
      stdout.write(r.text);
      return r.ok ? EXIT.OK : EXIT.FAILURE;
    }
    if (sub === 'ls') {
      const records = await listIssued(dir);
      if (records.length === 0) {
        stdout.write(`no SVIDs issued from ${dir} (issue one with 'sockmesh identity issue')\n`);
        return EXIT.OK;
      }
      const now = Date.now();
      const rows = records.map((r) => {
        const f = certificateFacts(r.der);
        const id = peerSpiffeIdOf(r.der);
        const left = f.notAfter.getTime() - now;
        return [
          f.serial,
          id.ok ? id.spiffeId : '?',
          f.notAfter.toISOString(),
          left > 0 ? `valid ${formatDuration(left)}` : 'expired',
        ];
      });
      const header = ['SERIAL', 'SPIFFE ID', 'NOT AFTER', 'STATE'];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const r of [header, ...rows])
        stdout.write(
          `${r
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd()}\n`,
        );
      return EXIT.OK;
    }
    throw new SockmeshError('SOCKMESH_E_USAGE', `expected issue, inspect, ls or serve, got '${sub ?? ''}'`, {
      hint: 'see sockmesh identity --help',
    });
  },
};

/** With no --dir and no SOCKMESH_CA_DIR, a running local mesh's CA is the one meant. */
function runningMeshCaDir(): string | undefined {
  if (process.env.SOCKMESH_CA_DIR) return undefined;
  const bed = TestBed.list().find((b) => b.persistent);
  return bed ? join(DEFAULT_STATE_DIR, bed.runId, 'ca') : undefined;
}
