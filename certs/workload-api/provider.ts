/**
 * Which SVID source serves which workload. The embedded provider keeps one
 * SvidRotator per SPIFFE ID, issued by the embedded CA and shared by every caller
 * with that identity.
 */
import { createLogger, type Logger } from '../../lib/log.js';
import type { CertificateAuthority } from '../ca/authority.js';
import { SvidRotator } from '../rotator.js';
import type { SvidSource } from '../source.js';
import { workloadSpiffeId } from '../spiffe-id.js';
import type { WorkloadInfo } from './resolver.js';

export interface SvidProvider {
  /** A started source for the workload's identity (first SVID already available). */
  sourceFor(workload: WorkloadInfo): Promise<SvidSource>;
  close(): void;
}

export class EmbeddedSvidProvider implements SvidProvider {
  private readonly rotators = new Map<string, Promise<SvidRotator>>();
  private readonly log: Logger;

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly opts: { ttlMs?: number; logger?: Logger } = {},
  ) {
    this.log = opts.logger ?? createLogger('certs');
  }

  sourceFor(workload: WorkloadInfo): Promise<SvidSource> {
    const id = workloadSpiffeId(this.ca.trustDomain, workload.namespace, workload.serviceAccount).uri;
    let entry = this.rotators.get(id);
    if (!entry) {
      const rotator = new SvidRotator({
        name: id,
        logger: this.log,
        fetch: () => this.ca.issueSvid(id, this.opts.ttlMs === undefined ? {} : { ttlMs: this.opts.ttlMs }),
      });
      entry = rotator.start().then(() => rotator);
      entry.catch(() => this.rotators.delete(id));
      this.rotators.set(id, entry);
    }
    return entry;
  }

  close(): void {
    for (const r of this.rotators.values()) void r.then((rot) => rot.stop()).catch(() => {});
    this.rotators.clear();
  }
}
