/**
 * Which SVID source serves which workload. The embedded provider keeps one
 * SvidRotator per SPIFFE ID, issued by the embedded CA and shared by every caller
 * with that identity.
 */
import { createLogger, type Logger } from '../../lib/log.js';
import type { CertificateAuthority } from '../ca/authority.js';
import { caRotator, type SvidRotator } from '../rotator.js';
import type { SvidSource } from '../source.js';
import { workloadSpiffeId } from '../spiffe-id.js';
import type { X509Svid } from '../svid.js';
import type { WorkloadInfo } from './resolver.js';

export interface SvidProvider {
  /** A started source for the workload's identity (first SVID already available). */
  sourceFor(workload: WorkloadInfo): Promise<SvidSource>;
  close(): void;
}

/** Sources by SPIFFE ID, for callers entitled to IDs that are not of the pod form. */
export interface SvidSourcesById {
  /** A started source for this SPIFFE ID (first SVID already available). */
  sourceForId(spiffeId: string): Promise<SvidSource>;
}

export class EmbeddedSvidProvider implements SvidProvider, SvidSourcesById {
  private readonly rotators = new Map<string, Promise<SvidRotator>>();
  private readonly log: Logger;

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly opts: {
      ttlMs?: number;
      logger?: Logger;
      /** Told about every SVID issued (e.g. to record it for `sockmesh identity ls`). */
      onIssued?: (svid: X509Svid) => Promise<unknown>;
    } = {},
  ) {
    this.log = opts.logger ?? createLogger('certs');
  }

  sourceFor(workload: WorkloadInfo): Promise<SvidSource> {
    return this.sourceForId(
      workloadSpiffeId(this.ca.trustDomain, workload.namespace, workload.serviceAccount).uri,
    );
  }

  sourceForId(id: string): Promise<SvidSource> {
    let entry = this.rotators.get(id);
    if (!entry) {
      const rotator = caRotator(this.ca, id, { ...this.opts, logger: this.log });
      entry = rotator.start().then(() => rotator);
      entry.catch(() => this.rotators.delete(id));
      this.rotators.set(id, entry);
    }
    return entry;
  }

  /** Renews every SVID now (an operator-forced rotation); each source publishes its new SVID. */
  async rotateAll(): Promise<void> {
    const rotators = await Promise.allSettled(this.rotators.values());
    await Promise.all(rotators.flatMap((r) => (r.status === 'fulfilled' ? [r.value.rotateNow()] : [])));
  }

  close(): void {
    for (const r of this.rotators.values()) void r.then((rot) => rot.stop()).catch(() => {});
    this.rotators.clear();
  }
}
