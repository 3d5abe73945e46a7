import {
  type CertificateAuthority,
  caRotator,
  DelegatedIdentityClient,
  formatSelectors,
  kubernetesSelectors,
  type SvidListener,
  type SvidSource,
  type TrustBundle,
  WorkloadApiClient,
  WorkloadApiX509Source,
  type X509Svid,
} from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import { identitySni } from '../tunnel/peer.js';

/** One identity as a supply hands it out: its SVIDs, and when the first answer is in. */
export interface SuppliedIdentity extends SvidSource {
  /** Settles once the supply has answered for this identity (with an SVID or without one). */
  readonly ready: Promise<void>;
  stop(): void;
}

/** Where the node's SVIDs come from. The agent never needs to know which. */
export interface SvidSupply {
  readonly kind: 'embedded-ca' | 'workload-api' | 'spire-delegated';
  open(spiffeId: string): SuppliedIdentity;
  /** The trust bundle of the node's trust domain, once known. */
  bundle(): TrustBundle | undefined;
  /** Why an identity the agent asked for has no SVID now. */
  whyMissing(spiffeId: string): string;
  status(): Record<string, unknown>;
  stop(): void;
}

/** SVIDs issued by the embedded CA, one rotator per identity (the agent holds the CA key). */
export class EmbeddedCaSupply implements SvidSupply {
  readonly kind = 'embedded-ca';

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly log: Logger,
    private readonly opts: {
      ttlMs?: number;
      /** Told about every SVID issued (the agent records them for `sockmesh identity ls`). */
      onIssued?: (svid: X509Svid) => Promise<unknown>;
    } = {},
  ) {}

  open(spiffeId: string): SuppliedIdentity {
    const rotator = caRotator(this.ca, spiffeId, { ...this.opts, logger: this.log });
    const ready = rotator.start().then(() => {});
    // stop() before the first SVID rejects start(); nobody waits for it then.
    ready.catch(() => {});
    return {
      ready,
      current: () => rotator.current(),
      subscribe: (l: SvidListener) => rotator.subscribe(l),
      stop: () => rotator.stop(),
    };
  }

  bundle(): TrustBundle {
    return this.ca.bundle;
  }

  whyMissing(): string {
    return 'the embedded CA has not issued it yet (renewal failing)';
  }

  status(): Record<string, unknown> {
    return { kind: this.kind, trustDomain: this.ca.trustDomain };
  }

  stop(): void {}
}

/** `/path/agent.sock` or `unix:///path/agent.sock` (or `tcp://ip:port`) as a Workload API address. */
export function workloadApiAddress(value: string): string {
  return value.startsWith('/') ? `unix://${value}` : value;
}

/**
 * SVIDs from a SPIFFE Workload API (a SPIRE agent): every identity the agent's
 * process is entitled to arrives in one stream. An identity the API does not grant
 * has no SVID, and nothing is substituted for it.
 */
export class WorkloadApiSupply implements SvidSupply {
  readonly kind = 'workload-api';
  private readonly client: WorkloadApiClient;
  private readonly source: WorkloadApiX509Source;
  private readonly first: Promise<void>;

  constructor(
    address: string,
    private readonly log: Logger,
    opts: { firstAnswerTimeoutMs?: number; backoff?: { initialMs?: number; maxMs?: number } } = {},
  ) {
    this.client = new WorkloadApiClient({ address: workloadApiAddress(address) });
    this.source = new WorkloadApiX509Source(this.client, {
      logger: log,
      backoff: opts.backoff ?? { initialMs: 250, maxMs: 5000 },
    });
    const timeoutMs = opts.firstAnswerTimeoutMs ?? 15_000;
    let timer: NodeJS.Timeout | undefined;
    this.first = Promise.race([
      this.source.start().then(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.log.error('the Workload API has not answered; local identities fail closed until it does', {
            address: this.client.address,
            waitedMs: timeoutMs,
            lastError: this.source.status().lastError,
          });
          resolve();
        }, timeoutMs);
      }),
    ])
      .catch(() => {})
      .finally(() => clearTimeout(timer));
  }

  open(spiffeId: string): SuppliedIdentity {
    const view = this.source.sourceFor(spiffeId);
    return { ready: this.first, current: view.current, subscribe: view.subscribe, stop: () => {} };
  }

  bundle(): TrustBundle | undefined {
    return this.source.context().svids[0]?.bundle;
  }

  whyMissing(spiffeId: string): string {
    const st = this.source.status();
    if (st.connected) {
      return `the Workload API does not grant ${spiffeId} to this agent (register it for the agent's process)`;
    }
    const where = `the Workload API at ${this.client.address}`;
    if (st.lastError === null) return `${where} has not answered yet`;
    return `${where} refuses this agent or is unreachable, and no valid SVID is left (${st.lastError})`;
  }

  status(): Record<string, unknown> {
    const st = this.source.status();
    return {
      kind: this.kind,
      address: this.client.address,
      connected: st.connected,
      lastUpdate: st.lastUpdate?.toISOString() ?? null,
      lastError: st.lastError,
      granted: st.spiffeIds,
      federatedTrustDomains: this.source.federatedBundles().map((b) => b.trustDomain),
    };
  }

  stop(): void {
    this.source.stop();
    this.client.close();
  }
}

/**
 * SVIDs from SPIRE's Delegated Identity API on the SPIRE agent's admin socket: the agent, listed in
 * SPIRE's `authorized_delegates`, subscribes for each local identity with the selectors of its
 * pods (`k8s:ns:<ns>`, `k8s:sa:<sa>`), so SPIRE needs entries for the pods only, none per pod
 * for the agent. An identity no entry matches has no SVID, and nothing is substituted for it.
 */
export class DelegatedIdentitySupply implements SvidSupply {
  readonly kind = 'spire-delegated';
  private readonly client: DelegatedIdentityClient;
  private readonly opened = new Map<string, { source: WorkloadApiX509Source; selectors: string }>();

  constructor(
    adminSocket: string,
    private readonly log: Logger,
    private readonly opts: {
      firstAnswerTimeoutMs?: number;
      backoff?: { initialMs?: number; maxMs?: number };
    } = {},
  ) {
    this.client = new DelegatedIdentityClient({ socketPath: adminSocket });
  }

  open(spiffeId: string): SuppliedIdentity {
    const selectors = kubernetesSelectors(spiffeId);
    if (!selectors) {
      this.log.error('no selectors for an identity outside /ns/<ns>/sa/<sa>: it fails closed', { spiffeId });
      return { ready: Promise.resolve(), current: () => null, subscribe: () => () => {}, stop: () => {} };
    }
    const source = new WorkloadApiX509Source(this.client.watcherFor(selectors), {
      logger: this.log,
      backoff: this.opts.backoff ?? { initialMs: 250, maxMs: 5000 },
    });
    const entry = { source, selectors: formatSelectors(selectors) };
    this.opened.set(spiffeId, entry);
    const timeoutMs = this.opts.firstAnswerTimeoutMs ?? 15_000;
    let timer: NodeJS.Timeout | undefined;
    const ready = Promise.race([
      source.start().then(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.log.error('SPIRE has not answered for a local identity; it fails closed until it does', {
            address: this.client.address,
            spiffeId,
            waitedMs: timeoutMs,
            lastError: source.status().lastError,
          });
          resolve();
        }, timeoutMs);
      }),
    ])
      .catch(() => {})
      .finally(() => clearTimeout(timer));
    const view = source.sourceFor(spiffeId);
    return {
      ready,
      current: view.current,
      subscribe: view.subscribe,
      stop: () => {
        source.stop();
        if (this.opened.get(spiffeId) === entry) this.opened.delete(spiffeId);
      },
    };
  }

  bundle(): TrustBundle | undefined {
    for (const { source } of this.opened.values()) {
      const b = source.context().svids[0]?.bundle;
      if (b && b.certs.length > 0) return b;
    }
    return undefined;
  }

  whyMissing(spiffeId: string): string {
    const o = this.opened.get(spiffeId);
    if (!o) return `${spiffeId} does not name a namespace and service account, so it has no selectors`;
    const st = o.source.status();
    const where = `SPIRE's Delegated Identity API at ${this.client.address}`;
    if (st.connected) {
      const other = st.spiffeIds.length > 0 ? ` (it issues ${st.spiffeIds.join(', ')} for them)` : '';
      return `no SPIRE entry for selectors ${o.selectors} issues ${spiffeId} under this node's SPIRE agent${other}: register the pods' identity there`;
    }
    if (st.lastError === null) return `${where} has not answered yet`;
    return `${where} refuses this agent or is unreachable, and no valid SVID is left (${st.lastError})`;
  }

  status(): Record<string, unknown> {
    const subs = [...this.opened].map(([spiffeId, { source, selectors }]) => {
      const st = source.status();
      return {
        spiffeId,
        selectors,
        connected: st.connected,
        lastUpdate: st.lastUpdate?.toISOString() ?? null,
        lastError: st.lastError,
        issued: st.spiffeIds,
      };
    });
    return {
      kind: this.kind,
      address: this.client.address,
      connected: subs.length > 0 && subs.every((s) => s.connected),
      subscriptions: subs,
      trustDomains: this.client.trustBundles().map((b) => b.trustDomain),
    };
  }

  stop(): void {
    for (const { source } of this.opened.values()) source.stop();
    this.opened.clear();
    this.client.close();
  }
}

interface Held {
  identity: SuppliedIdentity;
  unsubscribe: () => void;
  /** Whether the last look found an SVID: logs only on a change. */
  served: boolean | undefined;
}

/**
 * The SVIDs this node presents: one per identity of a local meshed workload
 * (pods sharing a service account share it), from whichever supply the agent
 * runs with. An identity without an SVID is reported, never replaced: the
 * proxy fails that workload's connections closed.
 */
export class NodeIdentities {
  private readonly held = new Map<string, Held>();
  private readonly bySni = new Map<string, string>();
  private readonly listeners = new Set<(spiffeId: string) => void>();

  constructor(
    private readonly supply: SvidSupply,
    private readonly log: Logger,
  ) {}

  /** Keeps exactly these identities. Resolves once the supply has answered for all of them. */
  async reconcile(wanted: Iterable<string>): Promise<void> {
    const want = new Set(wanted);
    for (const [id, h] of this.held) {
      if (want.has(id)) continue;
      h.unsubscribe();
      h.identity.stop();
      this.held.delete(id);
      this.bySni.delete(identitySni(id));
    }
    const starting: Promise<void>[] = [];
    for (const id of want) {
      if (this.held.has(id)) continue;
      const identity = this.supply.open(id);
      const held: Held = {
        identity,
        served: undefined,
        unsubscribe: identity.subscribe(() => {
          this.note(id);
          for (const l of this.listeners) l(id);
        }),
      };
      this.held.set(id, held);
      this.bySni.set(identitySni(id), id);
      starting.push(identity.ready.then(() => this.note(id)));
    }
    await Promise.all(starting);
  }

  svidFor(spiffeId: string): X509Svid | undefined {
    return this.held.get(spiffeId)?.identity.current() ?? undefined;
  }

  svidBySni(sni: string): X509Svid | undefined {
    const id = this.bySni.get(sni);
    return id === undefined ? undefined : this.svidFor(id);
  }

  bundle(): TrustBundle | undefined {
    return this.supply.bundle();
  }

  /** Called with the SPIFFE ID whenever its SVID changes (rotated, granted or gone). */
  onRotate(listener: (spiffeId: string) => void): void {
    this.listeners.add(listener);
  }

  list(): X509Svid[] {
    return [...this.held.values()].flatMap((h) => h.identity.current() ?? []);
  }

  /** Identities a local workload needs that have no SVID now, and why. */
  missing(): { spiffeId: string; reason: string }[] {
    return [...this.held]
      .filter(([, h]) => h.identity.current() === null)
      .map(([id]) => ({ spiffeId: id, reason: this.supply.whyMissing(id) }));
  }

  status(): Record<string, unknown> {
    return { ...this.supply.status(), missing: this.missing() };
  }

  stop(): void {
    for (const h of this.held.values()) {
      h.unsubscribe();
      h.identity.stop();
    }
    this.held.clear();
    this.bySni.clear();
    this.supply.stop();
  }

  private note(id: string): void {
    const h = this.held.get(id);
    if (!h) return;
    const served = h.identity.current() !== null;
    if (served === h.served) return;
    const first = h.served === undefined;
    h.served = served;
    if (!served) {
      this.log.error('no SVID for a local identity: its workloads’ connections fail closed', {
        spiffeId: id,
        reason: this.supply.whyMissing(id),
      });
    } else if (!first) {
      this.log.info('SVID available again for a local identity', { spiffeId: id });
    }
  }
}
