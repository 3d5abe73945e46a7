import {
  type CertificateAuthority,
  SvidRotator,
  type TrustBundle,
  type X509Svid,
} from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import { identitySni } from '../tunnel/peer.js';

/**
 * The SVIDs this node presents: one rotating SVID per identity of a local
 * meshed workload. Pods sharing a service account share the identity.
 */
export class NodeIdentities {
  private readonly rotators = new Map<string, SvidRotator>();
  private readonly bySni = new Map<string, string>();
  private readonly listeners = new Set<(spiffeId: string) => void>();

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly log: Logger,
    private readonly ttlMs?: number,
    /** Told about every SVID issued (the agent records them for `sockmesh identity ls`). */
    private readonly onIssued?: (svid: X509Svid) => Promise<unknown>,
  ) {}

  /** Keeps exactly these identities: starts rotators for new ones, stops the rest. Resolves once all have an SVID. */
  async reconcile(wanted: Iterable<string>): Promise<void> {
    const want = new Set(wanted);
    for (const [id, r] of this.rotators) {
      if (!want.has(id)) {
        r.stop();
        this.rotators.delete(id);
        this.bySni.delete(identitySni(id));
      }
    }
    const starting: Promise<X509Svid>[] = [];
    for (const id of want) {
      if (this.rotators.has(id)) continue;
      const rotator = new SvidRotator({
        fetch: async () => {
          const svid = await this.ca.issueSvid(id, this.ttlMs === undefined ? {} : { ttlMs: this.ttlMs });
          await this.onIssued?.(svid).catch((err: Error) =>
            this.log.warn('could not record issued SVID', { err }),
          );
          return svid;
        },
        logger: this.log,
        name: id,
      });
      rotator.subscribe(() => {
        for (const l of this.listeners) l(id);
      });
      this.rotators.set(id, rotator);
      this.bySni.set(identitySni(id), id);
      starting.push(rotator.start());
    }
    await Promise.all(starting);
  }

  svidFor(spiffeId: string): X509Svid | undefined {
    return this.rotators.get(spiffeId)?.current() ?? undefined;
  }

  svidBySni(sni: string): X509Svid | undefined {
    const id = this.bySni.get(sni);
    return id === undefined ? undefined : this.svidFor(id);
  }

  bundle(): TrustBundle {
    return this.ca.bundle;
  }

  /** Called with the SPIFFE ID whenever one of its SVIDs rotates. */
  onRotate(listener: (spiffeId: string) => void): void {
    this.listeners.add(listener);
  }

  list(): X509Svid[] {
    return [...this.rotators.values()].map((r) => r.current()).filter((s): s is X509Svid => s !== null);
  }

  stop(): void {
    for (const r of this.rotators.values()) r.stop();
    this.rotators.clear();
    this.bySni.clear();
  }
}
