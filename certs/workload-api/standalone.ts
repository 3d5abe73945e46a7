/**
 * A standalone Workload API server: the embedded CA behind a registration table,
 * on a unix socket. A stand-in for a SPIRE agent built from this project's own
 * server, so the node agent's Workload API mode runs for real without SPIRE.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import type { CertificateAuthority } from '../ca/authority.js';
import { recordIssued } from '../ca/store.js';
import { readCertificates } from '../pem.js';
import { parseSpiffeId } from '../spiffe-id.js';
import type { TrustBundle } from '../svid.js';
import { RegistrationEntitlements } from './entitlements.js';
import { EmbeddedSvidProvider } from './provider.js';
import { parseRegistrations, type RegistrationTable } from './registrations.js';
import { WorkloadApiServer } from './server.js';

export interface StandaloneOptions {
  socketPath: string;
  ca: CertificateAuthority;
  registrationsFile: string;
  ttlMs?: number;
  logger?: Logger;
  /** A CA directory to record every issued SVID in (what `sockmesh identity ls` lists). */
  recordDir?: string;
}

interface LoadedTable {
  table: RegistrationTable;
  federated: TrustBundle[];
}

/** Reads and checks the table: every ID must be in the CA's trust domain, every bundle file readable. */
export async function loadRegistrationTable(file: string, trustDomain: string): Promise<LoadedTable> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `cannot read registration table ${file}`, {
      hint: 'pass --registrations <file.yaml>',
      cause: err,
    });
  }
  const table = parseRegistrations(file, text);
  for (const e of table.entries) {
    for (const id of e.spiffeIds) {
      if (parseSpiffeId(id).trustDomain !== trustDomain) {
        throw new SockmeshError(
          'SOCKMESH_E_CONFIG',
          `${file}:${e.line}: ${id} is not in the CA's trust domain ${trustDomain}`,
          { hint: 'this server only issues SVIDs of its own trust domain' },
        );
      }
    }
  }
  const federated = await Promise.all(
    table.federatedBundles.map(async (b) => {
      const path = resolve(dirname(file), b.file);
      const certs = readCertificates(await readFile(path));
      if (certs.length === 0) {
        throw new SockmeshError(
          'SOCKMESH_E_CONFIG',
          `${path} holds no certificate (bundle of ${b.trustDomain})`,
        );
      }
      return { trustDomain: b.trustDomain, certs };
    }),
  );
  return { table, federated };
}

export class StandaloneWorkloadApi {
  private readonly log: Logger;
  private readonly provider: EmbeddedSvidProvider;
  private entitlements: RegistrationEntitlements | undefined;
  private server: WorkloadApiServer | undefined;
  private loaded: LoadedTable | undefined;

  constructor(private readonly opts: StandaloneOptions) {
    this.log = (opts.logger ?? createLogger('certs')).child({ sub: 'workload-api-standalone' });
    this.provider = new EmbeddedSvidProvider(opts.ca, {
      ...(opts.ttlMs === undefined ? {} : { ttlMs: opts.ttlMs }),
      ...(opts.recordDir === undefined ? {} : { onIssued: (svid) => recordIssued(opts.recordDir!, svid) }),
      logger: this.log,
    });
  }

  get table(): RegistrationTable | undefined {
    return this.loaded?.table;
  }

  async start(): Promise<void> {
    this.loaded = await loadRegistrationTable(this.opts.registrationsFile, this.opts.ca.trustDomain);
    this.entitlements = new RegistrationEntitlements(this.loaded.table, this.provider);
    this.server = new WorkloadApiServer({
      socketPath: this.opts.socketPath,
      entitlements: this.entitlements,
      federatedBundles: () => this.loaded?.federated ?? [],
      logger: this.log,
    });
    await this.server.start();
  }

  /** Re-reads the table (a bad one is refused and the current one kept), renews every SVID, updates open streams. */
  async reload(): Promise<void> {
    try {
      this.loaded = await loadRegistrationTable(this.opts.registrationsFile, this.opts.ca.trustDomain);
      this.entitlements?.setTable(this.loaded.table);
      this.log.info('registration table reloaded', { entries: this.loaded.table.entries.length });
    } catch (err) {
      this.log.error('registration table refused; keeping the current one', { err });
    }
    await this.provider.rotateAll();
    await this.server?.refresh();
  }

  async stop(): Promise<void> {
    await this.server?.stop();
    this.provider.close();
  }
}
