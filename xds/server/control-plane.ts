/**
 * The running control plane: source -> validated model -> snapshot -> ADS.
 * Source changes are debounced. By the source's acceptance policy, an invalid
 * change is rejected as a whole (`set`: the last good snapshot keeps being
 * served) or object by object (`object`: the bad object's last accepted
 * version stays in force, the rest is applied, and the source is told).
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { credentials, Server, ServerCredentials } from '@grpc/grpc-js';
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import { LrsClient } from '../client/lrs-client.js';
import { buildModelPerObject } from '../model/accept.js';
import { buildModel, type ModelOptions } from '../model/build.js';
import { canaryWeights } from '../model/canary.js';
import type { MeshModel } from '../model/types.js';
import { adsServiceDefinition, lrsClientConstructor } from '../protos.js';
import { DirectorySource } from '../sources/directory.js';
import type { ConfigError, ConfigSource, SourceObject } from '../sources/source.js';
import { formatConfigError } from '../sources/source.js';
import { AdsServer } from './ads.js';
import { type ApplyChange, applyManifests } from './apply.js';
import { CanaryController } from './canary.js';
import { Snapshot } from './snapshot.js';

export interface TlsConfig {
  /** PEM: server certificate chain, key, and the CA bundle client certificates must chain to. */
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export interface ListenAddress {
  /** `host:port` (port 0 picks one) or `unix:/path`. */
  address: string;
  /** mTLS; required for a TCP address that is not loopback. */
  tls?: TlsConfig;
}

export interface ControlPlaneOptions {
  source: ConfigSource;
  model?: ModelOptions;
  listen: ListenAddress[];
  /** Quiet time after a source event before reloading (coalesces editor write bursts). */
  debounceMs?: number;
  logger?: Logger;
}

export type ReloadResult =
  /** `rejected`: under the `object` policy, the errors of the objects left out (or kept at an older version). */
  | { applied: true; version: string; rejected?: ConfigError[] }
  | { applied: false; version: string | undefined; errors: ConfigError[] };

export interface ControlPlaneEvents {
  reload: [result: ReloadResult];
}

export class ControlPlane extends EventEmitter<ControlPlaneEvents> {
  readonly ads: AdsServer;
  readonly canary: CanaryController;
  /** The last model built from the source, before canary overrides. */
  private baseModel: MeshModel | undefined;
  private readonly log: Logger;
  private readonly grpc = new Server({
    'grpc.max_send_message_length': -1,
    'grpc.max_receive_message_length': -1,
  });
  private readonly bound: string[] = [];
  private version = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private pending: { promise: Promise<ReloadResult>; resolve: (r: ReloadResult) => void } | undefined;
  private readonly learnedNodes = new Map<string, string>();
  private lastErrors = '';
  private fingerprint = '';
  /** A follower's LRS stream to the leader, carrying what its own agents report. */
  private forwarder: { target: string; client: LrsClient } | undefined;
  private closing = false;
  /** `object` policy: id -> the version of each object in force. */
  private inForce = new Map<string, SourceObject>();

  constructor(private readonly opts: ControlPlaneOptions) {
    super();
    this.log = opts.logger ?? createLogger('xds');
    this.ads = new AdsServer(this.log);
    this.canary = new CanaryController(this.log.child({ concern: 'canary' }), () =>
      this.serveCanaryWeights(),
    );
    // Replicas: a follower serves the weights the leader records, and takes over the decisions.
    const leadership = opts.source.leadership;
    if (leadership) {
      this.canary.setFollowing(!leadership.leading());
      // The guards decide on the leader only: a follower passes its agents' load reports on.
      const forward = () => this.forwardLoad(leadership.leading() ? undefined : leadership.leaderAddress());
      leadership.onChange((leading) => {
        this.canary.setFollowing(!leading);
        if (leading) this.reportGuards();
        else this.followGuards();
        forward();
      });
      leadership.onLeaderAddress(forward);
      opts.source.watchRecordedGuards?.(() => this.followGuards());
    }
    this.ads.on('connect', (node) => {
      const ip = node.metadata.underlayIp;
      if (typeof ip === 'string' && isIP(ip) === 4 && this.learnedNodes.get(node.id) !== ip) {
        this.learnedNodes.set(node.id, ip);
        this.scheduleReload();
      }
    });
  }

  get snapshot(): Snapshot | undefined {
    return this.ads.snapshot;
  }

  /** Loads the source (must be valid), starts watching, binds every listen address. */
  async start(): Promise<void> {
    const first = await this.reload();
    if (!first.applied) {
      throw new SockmeshError(
        'SOCKMESH_E_MANIFEST',
        `invalid manifests in ${this.opts.source.description}:\n${first.errors.map(formatConfigError).join('\n')}`,
        { hint: 'fix the listed fields and start again' },
      );
    }
    this.opts.source.watch(() => this.scheduleReload());
    const def = adsServiceDefinition();
    // The ADS servers write responses already serialized (shared by every stream of a version).
    const raw = (b: Buffer) => b;
    const service = {
      StreamAggregatedResources: { ...def.StreamAggregatedResources!, responseSerialize: raw },
      DeltaAggregatedResources: { ...def.DeltaAggregatedResources!, responseSerialize: raw },
    };
    this.grpc.addService(service, {
      StreamAggregatedResources: this.ads.handle,
      DeltaAggregatedResources: this.ads.handleDelta,
    });
    // LRS on the same server and credentials: agents report the guarded clusters' outcomes.
    this.grpc.addService(lrsClientConstructor().service, { StreamLoadStats: this.canary.handleLrs });
    for (const l of this.opts.listen) this.bound.push(await this.bind(l));
  }

  /** The addresses actually bound (port 0 resolved), in `listen` order. */
  addresses(): string[] {
    return [...this.bound];
  }

  private async bind(l: ListenAddress): Promise<string> {
    let creds: ServerCredentials;
    if (l.address.startsWith('unix:')) {
      await rm(l.address.slice('unix:'.length), { force: true });
      creds = l.tls
        ? ServerCredentials.createSsl(l.tls.ca, [{ cert_chain: l.tls.cert, private_key: l.tls.key }], true)
        : ServerCredentials.createInsecure();
    } else {
      const host = l.address.slice(0, l.address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
      const loopback = host === 'localhost' || host === '::1' || host.startsWith('127.');
      if (!l.tls && !loopback) {
        throw new SockmeshError(
          'SOCKMESH_E_CONFIG',
          `refusing plaintext xDS on non-loopback address ${l.address}`,
          {
            hint: 'configure TLS certificates, or listen on 127.0.0.1 or a unix: socket',
          },
        );
      }
      creds = l.tls
        ? ServerCredentials.createSsl(l.tls.ca, [{ cert_chain: l.tls.cert, private_key: l.tls.key }], true)
        : ServerCredentials.createInsecure();
    }
    const port = await new Promise<number>((resolve, reject) =>
      this.grpc.bindAsync(l.address, creds, (err, p) => (err ? reject(err) : resolve(p))),
    ).catch((err: unknown) => {
      throw new SockmeshError('SOCKMESH_E_XDS', `cannot listen on ${l.address}: ${(err as Error).message}`, {
        hint: 'pick a free port or remove the stale socket',
        cause: err,
      });
    });
    const addr = l.address.startsWith('unix:')
      ? l.address
      : `${l.address.slice(0, l.address.lastIndexOf(':'))}:${port}`;
    this.log.info('xDS listening', { address: addr, mtls: l.tls !== undefined });
    return addr;
  }

  private scheduleReload(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload(), this.opts.debounceMs ?? 20);
  }

  /**
   * Re-reads the source. The result is from a pass that started after this
   * call (so it sees every write made before it); calls made while a pass runs
   * share the one next pass.
   */
  reload(): Promise<ReloadResult> {
    if (!this.pending) {
      let resolve!: (r: ReloadResult) => void;
      const promise = new Promise<ReloadResult>((r) => {
        resolve = r;
      });
      this.pending = { promise, resolve };
    }
    const { promise } = this.pending;
    this.running ??= this.drain();
    return promise;
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const next = this.pending;
      this.pending = undefined;
      next.resolve(await this.doReload());
    }
    this.running = undefined;
  }

  private async doReload(): Promise<ReloadResult> {
    const started = performance.now();
    let result: ReloadResult;
    try {
      const state = await this.opts.source.load();
      if (this.opts.source.acceptance === 'object') {
        result = this.applyPerObject(state.objects, started);
        this.emit('reload', result);
        return result;
      }
      const built =
        state.errors.length > 0
          ? ({ ok: false, errors: state.errors } as const)
          : buildModel(state.objects, this.modelOptions());
      if (!built.ok) {
        const text = built.errors.map(formatConfigError).join('\n');
        if (text !== this.lastErrors) {
          this.log.error('configuration rejected; still serving the last good version', {
            version: this.snapshot?.version,
            errors: built.errors.map(formatConfigError),
          });
        }
        this.lastErrors = text;
        result = { applied: false, version: this.snapshot?.version, errors: built.errors };
      } else if (this.unchanged(state.objects)) {
        this.lastErrors = '';
        result = { applied: true, version: this.snapshot!.version };
      } else {
        this.lastErrors = '';
        const snap = this.snapshotOf(built.model);
        this.ads.setSnapshot(snap);
        this.log.info('configuration applied', {
          version: snap.version,
          ...snap.counts(),
          ms: Math.round(performance.now() - started),
        });
        result = { applied: true, version: snap.version };
      }
    } catch (err) {
      this.log.error('cannot read configuration; still serving the last good version', { error: err });
      const reason = err instanceof Error ? err.message : String(err);
      result = {
        applied: false,
        version: this.snapshot?.version,
        errors: [{ file: this.opts.source.description, line: 0, path: '', reason }],
      };
    }
    this.emit('reload', result);
    return result;
  }

  /** The `object` policy: what holds is applied, what does not is reported to the source. */
  private applyPerObject(objects: readonly SourceObject[], started: number): ReloadResult {
    const built = buildModelPerObject(objects, this.inForce, this.modelOptions());
    this.inForce = built.inForce;
    const rejected = built.verdicts.filter((v) => v.state !== 'accepted');
    const errors = rejected.flatMap((v) => v.errors);
    const text = errors.map(formatConfigError).join('\n');
    if (text !== this.lastErrors && rejected.length > 0) {
      this.log.warn('objects not accepted; the rest is applied', {
        objects: rejected.map((v) => ({ id: v.id, state: v.state })),
        errors: errors.map(formatConfigError),
      });
    }
    this.lastErrors = text;
    let version: string;
    if (this.unchanged(built.used)) version = this.snapshot!.version;
    else {
      const snap = this.snapshotOf(built.model);
      this.ads.setSnapshot(snap);
      this.log.info('configuration applied', {
        version: snap.version,
        ...snap.counts(),
        notAccepted: rejected.length,
        ms: Math.round(performance.now() - started),
      });
      version = snap.version;
    }
    try {
      this.opts.source.report?.(built.verdicts);
    } catch (err) {
      this.log.error('source could not take the acceptance report', { error: err });
    }
    return { applied: true, version, rejected: errors };
  }

  /**
   * Validates documents against the current declarations and, when valid,
   * writes them into the manifests directory and applies them at once.
   */
  async apply(
    text: string,
    { dryRun = false }: { dryRun?: boolean } = {},
  ): Promise<
    | { ok: true; changes: ApplyChange[]; version: string | undefined }
    | { ok: false; errors: ConfigError[]; malformed?: boolean }
  > {
    const source = this.opts.source;
    if (!(source instanceof DirectorySource)) {
      throw new SockmeshError('SOCKMESH_E_CONFIG', `source ${source.description} does not accept apply`);
    }
    const r = await applyManifests(source, text, this.modelOptions(), { dryRun });
    if (!r.ok) return r;
    if (dryRun || r.changes.every((c) => c.action === 'unchanged'))
      return { ...r, version: this.snapshot?.version };
    const after = await this.reload();
    if (!after.applied) return { ok: false, errors: after.errors };
    return { ...r, version: after.version };
  }

  /** True when the declarations and node addresses are exactly those of the served snapshot. */
  private unchanged(objects: readonly SourceObject[]): boolean {
    const fp = createHash('sha1')
      .update(JSON.stringify(objects.map((o) => o.value)))
      .update(JSON.stringify([...this.learnedNodes]))
      .digest('base64');
    const same = fp === this.fingerprint && this.snapshot !== undefined;
    this.fingerprint = fp;
    return same;
  }

  /** A snapshot of a newly built model, with the canary guards' weights in force. */
  private snapshotOf(model: MeshModel): Snapshot {
    this.baseModel = model;
    this.canary.setModel(model, this.opts.source.recordedGuards?.());
    this.reportGuards();
    return new Snapshot(canaryWeights(model, this.canary.weights()), ++this.version, this.snapshot);
  }

  /** A guard moved a weight: the same model, served with the new override. */
  private serveCanaryWeights(): void {
    if (!this.baseModel) return;
    const snap = new Snapshot(
      canaryWeights(this.baseModel, this.canary.weights()),
      ++this.version,
      this.snapshot,
    );
    this.ads.setSnapshot(snap);
    this.log.info('configuration applied', { version: snap.version, ...snap.counts(), cause: 'canary' });
    this.reportGuards();
  }

  private forwardLoad(target: string | undefined): void {
    if (this.forwarder?.target === target || this.closing) return;
    this.forwarder?.client.close();
    this.forwarder = undefined;
    if (!target) return;
    // The leader's xDS server: this replica's own certificate (the mesh's xDS CA) as the client's.
    // Its name is not checked: the leader is reached by pod address, which its certificate does not
    // name; the chain and the Lease (writable only with the control plane's RBAC) say who it is.
    const tls = this.opts.listen.find((l) => l.tls)?.tls;
    const client = new LrsClient({
      target,
      node: { id: 'sockmesh-control-plane-follower' },
      credentials: tls
        ? credentials.createSsl(tls.ca, tls.key, tls.cert, { checkServerIdentity: () => undefined })
        : credentials.createInsecure(),
      collect: async () => this.canary.receivedLoads(),
      logger: this.log.child({ concern: 'lrs-forward' }),
    });
    client.start();
    this.forwarder = { target, client };
    this.log.info('forwarding load reports to the leader', { leader: target });
  }

  private followGuards(): void {
    const recorded = this.opts.source.recordedGuards?.();
    if (recorded) this.canary.follow(recorded);
  }

  /** Prometheus text: the canary guards', then the source's (status writes, leadership). */
  metrics(): string {
    return this.canary.metrics() + (this.opts.source.metrics?.() ?? '');
  }

  /** The source records each guard's state (on Kubernetes, in its status). */
  private reportGuards(): void {
    if (!this.opts.source.reportGuards) return;
    try {
      this.opts.source.reportGuards(
        this.canary.status().map((g) => {
          const [namespace = '', name = ''] = g.name.split('/');
          return {
            namespace,
            name,
            phase: g.phase,
            weight: g.weight,
            step: g.step,
            fingerprint: g.fingerprint,
            ...(g.lastTransition ? { transition: { ...g.lastTransition } } : {}),
          };
        }),
      );
    } catch (err) {
      this.log.error('source could not take the canary report', { error: err });
    }
  }

  private modelOptions(): ModelOptions {
    const nodes: Record<string, string> = Object.fromEntries(this.learnedNodes);
    Object.assign(nodes, this.opts.model?.nodes ?? {});
    return {
      ...this.opts.model,
      nodes,
      endpointsFrom: this.opts.source.endpointsFrom ?? this.opts.model?.endpointsFrom,
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.timer);
    this.forwarder?.client.close();
    this.canary.close();
    await this.opts.source.close();
    this.ads.closeStreams();
    // Every call is a long-lived ADS stream (just ended): nothing to drain.
    this.grpc.forceShutdown();
    for (const a of this.bound) if (a.startsWith('unix:')) await rm(a.slice(5), { force: true });
  }
}
