/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's
 * semantics (k8s.io/client-go/tools/leaderelection): a candidate takes the
 * Lease when it is free or its holder has not renewed it for
 * leaseDurationSeconds as observed locally (no clock comparison across
 * machines), the leader renews every retry period and stops leading when no
 * renewal succeeded within the renew deadline (< the lease duration, so it
 * stops before anyone else may start), every write is a replace guarded by
 * resourceVersion (a lost race is a 409, not two leaders), and a graceful stop
 * clears holderIdentity so a successor need not wait out the lease.
 *
 * Through @kubernetes/client-node's CoordinationV1Api: it has no leader
 * election helper, and its V1MicroTime writes the microsecond times a Lease
 * needs.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { CoordinationV1Api, KubeConfig, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import { SockmeshError } from '../../../lib/errors.js';
import type { Logger } from '../../../lib/log.js';
import type { KubeConnection } from './config.js';

/** Where a leader can be reached by the other replicas (for LRS forwarding), on the Lease. */
export const LEADER_ADDRESS_ANNOTATION = 'sockmesh.io/leader-address';

export interface LeaderElectionOptions {
  connection: KubeConnection;
  namespace: string;
  name: string;
  /** holderIdentity; default `<hostname>_<random>`, as client-go's callers usually pick. */
  identity?: string;
  /** Default 15 s, renew deadline 2/3 of it, retry period 2/15 of it (client-go's 15/10/2 s). */
  leaseDurationMs?: number;
  /**
   * Where the other replicas reach this one, written on the Lease while leading (annotation
   * sockmesh.io/leader-address); read at each write: it may be known only once listening.
   */
  address?: () => string | undefined;
  logger: Logger;
}

export interface LeaderElectorEvents {
  /** true: this replica leads now; false: it stopped leading. */
  leading: [leading: boolean];
  /** The leader's address as the Lease says (undefined: no leader, or it gave none). */
  leader: [address: string | undefined];
}

export class LeaderElector extends EventEmitter<LeaderElectorEvents> {
  readonly identity: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  private readonly api: CoordinationV1Api;
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;
  /** The last record seen, and when (local clock): another holder is alive until observedAt + its duration. */
  private observed: { key: string; at: number } | undefined;
  private lastRenew = 0;
  private currentHolder: string | undefined;
  private currentAddress: string | undefined;

  constructor(private readonly opts: LeaderElectionOptions) {
    super();
    this.identity = opts.identity ?? `${hostname()}_${randomBytes(4).toString('hex')}`;
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    if (this.leaseDurationMs < 1000 || this.leaseDurationMs % 1000 !== 0)
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        `the lease duration must be whole seconds, at least 1s, got ${this.leaseDurationMs} ms`,
      );
    this.renewDeadlineMs = Math.floor((this.leaseDurationMs * 2) / 3);
    this.retryPeriodMs = Math.max(100, Math.floor((this.leaseDurationMs * 2) / 15));
    this.api = kubeConfigOf(opts.connection).makeApiClient(CoordinationV1Api);
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder as last seen on the Lease ('' or undefined: none). */
  holder(): string | undefined {
    return this.currentHolder;
  }

  /** The leader's address as last seen on the Lease; undefined while this replica holds it. */
  leaderAddress(): string | undefined {
    return this.currentAddress;
  }

  private seen(lease: V1Lease | undefined): void {
    const holder = lease?.spec?.holderIdentity ?? '';
    this.currentHolder = holder;
    // Another replica's address only: a leader (or one stepping down) forwards nothing to itself.
    const address =
      holder === '' || holder === this.identity
        ? undefined
        : lease?.metadata?.annotations?.[LEADER_ADDRESS_ANNOTATION];
    if (address === this.currentAddress) return;
    this.currentAddress = address;
    this.emit('leader', address);
  }

  /** The first attempt (so a lone replica leads from its start), then one every retry period. */
  async start(): Promise<void> {
    await this.attempt();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.attempt().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.retryPeriodMs);
  }

  private setLeading(v: boolean): void {
    if (v === this.leading) return;
    this.leading = v;
    this.opts.logger.info(v ? 'became leader' : 'stopped leading', {
      lease: `${this.opts.namespace}/${this.opts.name}`,
      identity: this.identity,
    });
    this.emit('leading', v);
  }

  private async attempt(): Promise<void> {
    try {
      const ok = await this.tryAcquireOrRenew();
      if (ok) this.lastRenew = Date.now();
      this.setLeading(ok);
    } catch (err) {
      // A leader that cannot renew within the renew deadline stops before its lease can expire.
      if (this.leading && Date.now() - this.lastRenew > this.renewDeadlineMs) this.setLeading(false);
      this.opts.logger.warn('lease update failed', {
        lease: `${this.opts.namespace}/${this.opts.name}`,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new V1MicroTime(Date.now());
    const { namespace, name } = this.opts;
    const seconds = this.leaseDurationMs / 1000;
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      const created = await this.api.createNamespacedLease({
        namespace,
        body: {
          metadata: { name, namespace, annotations: this.annotations() },
          spec: {
            holderIdentity: this.identity,
            leaseDurationSeconds: seconds,
            acquireTime: now,
            renewTime: now,
            leaseTransitions: 0,
          },
        },
      });
      this.seen(created);
      return true;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    this.seen(lease);
    // Expiry by the local clock from when this record was first seen (client-go's observedTime).
    const key = JSON.stringify([holder, spec.renewTime, spec.acquireTime, spec.leaseTransitions]);
    if (this.observed?.key !== key) this.observed = { key, at: Date.now() };
    const duration = (spec.leaseDurationSeconds ?? seconds) * 1000;
    if (holder !== '' && holder !== this.identity && this.observed.at + duration > Date.now()) return false;
    const mine = holder === this.identity;
    const replaced = await this.api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        ...lease,
        metadata: { ...lease.metadata, annotations: this.annotations(lease.metadata?.annotations) },
        spec: {
          ...spec,
          holderIdentity: this.identity,
          leaseDurationSeconds: seconds,
          acquireTime: mine && spec.acquireTime ? micro(spec.acquireTime) : now,
          renewTime: now,
          leaseTransitions: mine ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
        },
      },
    });
    this.seen(replaced);
    return true;
  }

  /** Others' annotations kept; ours says where this replica is, or is dropped (never a predecessor's). */
  private annotations(existing: Record<string, string> = {}, leading = true): Record<string, string> {
    const { [LEADER_ADDRESS_ANNOTATION]: _, ...rest } = existing;
    const address = leading ? this.opts.address?.() : undefined;
    return address ? { ...rest, [LEADER_ADDRESS_ANNOTATION]: address } : rest;
  }

  /**
   * Stops campaigning; a leader gives the Lease up (holderIdentity cleared, as client-go's
   * ReleaseOnCancel) so another replica takes it at its next retry instead of after the duration.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    if (!this.leading) return;
    this.setLeading(false);
    const { namespace, name } = this.opts;
    try {
      const lease = await this.api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.identity) return;
      const now = new V1MicroTime(Date.now());
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: {
          ...lease,
          metadata: { ...lease.metadata, annotations: this.annotations(lease.metadata?.annotations, false) },
          spec: {
            ...lease.spec,
            holderIdentity: '',
            leaseDurationSeconds: 1,
            acquireTime: now,
            renewTime: now,
          },
        },
      });
      this.opts.logger.info('lease released', { lease: `${namespace}/${name}`, identity: this.identity });
    } catch (err) {
      this.opts.logger.warn('lease release failed; the next leader waits out the lease', {
        lease: `${namespace}/${name}`,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }
}

/** A time read back (a string or a Date, by client-node's mood) as a MicroTime that writes microseconds. */
function micro(t: Date | string): V1MicroTime {
  return new V1MicroTime(new Date(t).getTime());
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The same server and credentials as the source's own client, for client-node. */
function kubeConfigOf(c: KubeConnection): KubeConfig {
  const b64 = (pem: string | undefined) => (pem ? Buffer.from(pem).toString('base64') : undefined);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'sockmesh',
        server: c.server,
        caData: b64(c.ca),
        skipTLSVerify: c.insecureSkipTlsVerify === true,
      },
    ],
    users: [
      {
        name: 'sockmesh',
        certData: b64(c.cert),
        keyData: b64(c.key),
        token: c.token,
        // client-node re-reads a rotating projected token through its tokenFile provider.
        ...(c.tokenFile ? { authProvider: { name: 'tokenFile', config: { tokenFile: c.tokenFile } } } : {}),
      },
    ],
    contexts: [{ name: 'sockmesh', cluster: 'sockmesh', user: 'sockmesh' }],
    currentContext: 'sockmesh',
  });
  return kc;
}
