/**
 * What a Workload API caller may have: from the kernel's view of the caller (pid,
 * uid, gid) to the SVID sources it is entitled to, default identity first. One
 * pod = one identity (WorkloadEntitlements), or a registration table that can
 * grant one caller several identities (RegistrationEntitlements), the way a SPIRE
 * agent serves a node proxy whose process matches several registration entries.
 */
import type { SvidSource } from '../source.js';
import type { PeerCredentials } from './peercred.js';
import type { SvidProvider, SvidSourcesById } from './provider.js';
import { entitledSpiffeIds, type RegistrationTable } from './registrations.js';
import { cgroupV2PathOf, type WorkloadResolver } from './resolver.js';

export interface Entitlement {
  /** One source per granted SPIFFE ID, default identity first; never empty. */
  sources: SvidSource[];
  /** Who the caller is, for logs. */
  who: Record<string, unknown>;
}

export interface CallerEntitlements {
  /** null: the caller is entitled to nothing (PERMISSION_DENIED). Rejects when a source cannot start. */
  entitle(peer: PeerCredentials): Promise<Entitlement | null>;
}

/** A meshed pod's process gets its pod's identity, nothing else. */
export class WorkloadEntitlements implements CallerEntitlements {
  constructor(
    private readonly resolver: WorkloadResolver,
    private readonly provider: SvidProvider,
  ) {}

  async entitle(peer: PeerCredentials): Promise<Entitlement | null> {
    const workload = await this.resolver.resolve(peer.pid);
    if (!workload) return null;
    return {
      sources: [await this.provider.sourceFor(workload)],
      who: { namespace: workload.namespace, serviceAccount: workload.serviceAccount, pod: workload.podName },
    };
  }
}

/** Every identity of every registration entry whose selectors the caller matches. */
export class RegistrationEntitlements implements CallerEntitlements {
  constructor(
    private table: RegistrationTable,
    private readonly sources: SvidSourcesById,
    private readonly cgroupOf: (pid: number) => Promise<string | null> = cgroupV2PathOf,
  ) {}

  /** Takes effect for new streams; the server's refresh() re-evaluates open ones. */
  setTable(table: RegistrationTable): void {
    this.table = table;
  }

  async entitle(peer: PeerCredentials): Promise<Entitlement | null> {
    const cgroup = await this.cgroupOf(peer.pid);
    const ids = entitledSpiffeIds(this.table, { uid: peer.uid, gid: peer.gid, cgroup });
    if (ids.length === 0) return null;
    return {
      sources: await Promise.all(ids.map((id) => this.sources.sourceForId(id))),
      who: { cgroup, spiffeIds: ids },
    };
  }
}
