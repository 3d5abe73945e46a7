/**
 * The Kubernetes source: one reflector per watched resource (see
 * kube/reflector.ts) feeding the same model the manifests directory feeds.
 * Objects are projected onto what the model reads (kube/resources.ts), so a
 * status heartbeat or a server-set field never causes a reload. Objects are
 * accepted one by one (`object` policy) and endpoints come from
 * EndpointSlices; after each reload the control plane reports what became of
 * every object and the source writes it back as status (kube/status.ts).
 */
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import { KubeApiError, KubeClient, type KubeObject } from './kube/client.js';
import type { KubeConnection } from './kube/config.js';
import type { LeaderElector } from './kube/leader.js';
import { Reflector, type ReflectorOptions, type ReflectorStats } from './kube/reflector.js';
import {
  GATEWAY_CRDS_HINT,
  objectPath,
  SOCKMESH_CRDS_HINT,
  WATCHED,
  type WatchedResource,
} from './kube/resources.js';
import {
  carryTransitionTimes,
  FIELD_MANAGER,
  mergeRouteParents,
  policyConditions,
  routeParentStatuses,
  sameConditions,
} from './kube/status.js';
import type {
  ConfigSource,
  GuardReport,
  Leadership,
  ObjectVerdict,
  RecordedGuard,
  SourceLocation,
  SourceObject,
  SourceState,
} from './source.js';

export interface KubernetesSourceOptions {
  connection: KubeConnection;
  logger?: Logger;
  reflector?: ReflectorOptions;
  /** Write Accepted/ResolvedRefs status back (default true). */
  writeStatus?: boolean;
  /** Replicas: status is written only while this elector leads (it is stopped, and released, by close()). */
  leader?: LeaderElector;
}

const ROUTE_KINDS = new Set(['HTTPRoute', 'GRPCRoute', 'TCPRoute']);
/** The canary guards' decisions are another controller's fields than Accepted/ResolvedRefs. */
const CANARY_FIELD_MANAGER = 'sockmesh-canary';
const POLICY_KINDS = new Set(['TrafficPolicy', 'AuthorizationPolicy', 'CanaryGuard']);
/** Load order: what others refer to first; routes keep Gateway API's precedence order (oldest first). */
const ORDER = WATCHED.map((w) => w.kind);

interface Projected {
  object: SourceObject;
  json: string;
  generation: number | undefined;
  created: string;
}

export class KubernetesSource implements ConfigSource {
  readonly description: string;
  readonly acceptance = 'object' as const;
  readonly endpointsFrom = 'EndpointSlice' as const;
  private readonly client: KubeClient;
  private readonly log: Logger;
  private readonly reflectors = new Map<string, Reflector>();
  private readonly projected = new Map<string, Map<string, Projected>>();
  private readonly generations = new WeakMap<SourceObject, number | undefined>();
  private onChange: (() => void) | undefined;
  private synced: Promise<void> | undefined;
  private closed = false;
  /** Status writes: at most one in flight per object; the newest wish wins. */
  private readonly wanted = new Map<string, () => Promise<void>>();
  private readonly inFlight = new Set<string>();
  private readonly written = new Map<string, string>();
  private readonly guardWritten = new Map<string, string>();
  private lastVerdicts: readonly ObjectVerdict[] = [];
  private retry: { timer: NodeJS.Timeout | undefined; delayMs: number } = { timer: undefined, delayMs: 1000 };
  private readonly writes = new Set<Promise<void>>();
  /** Status writes sent, by kind: what `sockmesh_controlplane_status_writes_total` counts. */
  private readonly statusWrites = new Map<string, number>();
  /** CanaryGuard status as last seen, by key: a change is another replica's decision. */
  private readonly guardStatus = new Map<string, string>();
  private onGuardStates: (() => void) | undefined;
  readonly leadership: Leadership | undefined;

  constructor(private readonly opts: KubernetesSourceOptions) {
    this.description = `kubernetes:${opts.connection.server}`;
    this.client = new KubeClient(opts.connection);
    this.log = opts.logger ?? createLogger('xds');
    const leader = opts.leader;
    if (leader) {
      this.leadership = {
        leading: () => leader.isLeader(),
        onChange: (cb) => leader.on('leading', cb),
        leaderAddress: () => leader.leaderAddress(),
        onLeaderAddress: (cb) => leader.on('leader', cb),
      };
      leader.on('leading', (leading) => {
        if (!leading) return;
        // Another replica wrote in between: what this one remembers having written proves nothing.
        this.written.clear();
        this.guardWritten.clear();
        this.report(this.lastVerdicts);
      });
    }
  }

  /** True when this replica writes status: no election, or it leads. */
  private leads(): boolean {
    return this.opts.leader === undefined || this.opts.leader.isLeader();
  }

  private countWrite(kind: string): void {
    this.statusWrites.set(kind, (this.statusWrites.get(kind) ?? 0) + 1);
  }

  /**
   * Lists every watched resource once and starts the watches. Fails with what
   * to do when the API server cannot be reached, refuses us, or lacks a CRD.
   */
  sync(): Promise<void> {
    this.synced ??= this.doSync().catch((err: unknown) => {
      this.synced = undefined;
      throw err;
    });
    return this.synced;
  }

  private async doSync(): Promise<void> {
    const missing: WatchedResource[] = [];
    const started: Reflector[] = [];
    await Promise.all(
      WATCHED.map(async (w) => {
        const r = new Reflector(this.client, w, this.handlerFor(w), this.log, this.opts.reflector);
        try {
          await r.list();
        } catch (err) {
          if (err instanceof KubeApiError && err.status === 404 && w.crd) {
            if (w.optional) {
              this.log.warn('CRD not installed; going on without it', {
                crd: w.crd,
                hint: GATEWAY_CRDS_HINT,
              });
              return;
            }
            missing.push(w);
            return;
          }
          throw this.describeFailure(err, w);
        }
        this.reflectors.set(w.kind, r);
        started.push(r);
      }),
    );
    if (missing.length > 0) {
      const hints = new Set(
        missing.map((w) => (w.crd?.endsWith('.sockmesh.io') ? SOCKMESH_CRDS_HINT : GATEWAY_CRDS_HINT)),
      );
      throw new SockmeshError(
        'SOCKMESH_E_CONFIG',
        `CRD not installed on ${this.opts.connection.server}: ${missing.map((w) => w.crd).join(', ')}`,
        { hint: [...hints].join('; ') },
      );
    }
    if (this.closed) return;
    for (const r of started) r.start();
    this.log.info('kubernetes source synced', {
      server: this.opts.connection.server,
      objects: Object.fromEntries([...this.projected].map(([k, m]) => [k, m.size])),
    });
  }

  private describeFailure(err: unknown, w: WatchedResource): SockmeshError {
    const server = this.opts.connection.server;
    if (err instanceof KubeApiError) {
      if (err.status === 401 || err.status === 403)
        return new SockmeshError(
          'SOCKMESH_E_CONFIG',
          `the API server refused to list ${w.kind}: ${err.message}`,
          {
            hint: 'grant the control plane list/watch on it (see the RBAC list in the README, Kubernetes source)',
            cause: err,
          },
        );
      return new SockmeshError('SOCKMESH_E_CONFIG', `listing ${w.kind} failed: ${err.message}`, {
        cause: err,
      });
    }
    return new SockmeshError(
      'SOCKMESH_E_CONFIG',
      `cannot reach the Kubernetes API server at ${server} (${this.opts.connection.description}): ${err instanceof Error ? err.message : String(err)}`,
      { hint: 'check that the API server runs and that --kubeconfig points at it', cause: err },
    );
  }

  private handlerFor(w: WatchedResource) {
    const cache = this.projected.get(w.kind) ?? new Map<string, Projected>();
    this.projected.set(w.kind, cache);
    const project = (key: string, obj: KubeObject): boolean => {
      const value = w.project(obj);
      if (value === undefined) return cache.delete(key);
      const json = JSON.stringify(value);
      const old = cache.get(key);
      if (old?.json === json) return false;
      const origin: SourceLocation = { file: `${w.kind} ${key}`, line: 0 };
      const object: SourceObject = { value, origin, locate: () => origin };
      const generation = obj.metadata?.generation;
      this.generations.set(object, generation);
      cache.set(key, { object, json, generation, created: obj.metadata?.creationTimestamp ?? '' });
      return true;
    };
    return {
      replaced: (store: ReadonlyMap<string, KubeObject>) => {
        let changed = false;
        const seen = new Set<string>();
        for (const [key, obj] of store) {
          seen.add(key);
          if (project(key, obj)) changed = true;
          if (w.kind === 'CanaryGuard') this.guardStatusSeen(key, obj);
        }
        for (const key of [...cache.keys()]) if (!seen.has(key) && cache.delete(key)) changed = true;
        if (changed) this.onChange?.();
      },
      upserted: (key: string, obj: KubeObject) => {
        if (project(key, obj)) this.onChange?.();
        if (w.kind === 'CanaryGuard') this.guardStatusSeen(key, obj);
      },
      deleted: (key: string) => {
        if (cache.delete(key)) this.onChange?.();
        this.guardStatus.delete(key);
      },
    };
  }

  async load(): Promise<SourceState> {
    await this.sync();
    const objects: SourceObject[] = [];
    for (const kind of ORDER) {
      const list = [...(this.projected.get(kind)?.entries() ?? [])];
      if (ROUTE_KINDS.has(kind))
        list.sort(([ka, a], [kb, b]) =>
          a.created === b.created ? (ka < kb ? -1 : 1) : a.created < b.created ? -1 : 1,
        );
      else list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      for (const [, p] of list) objects.push(p.object);
    }
    return { objects, errors: [] };
  }

  watch(onChange: () => void): void {
    if (this.onChange) throw new SockmeshError('SOCKMESH_E_XDS', 'KubernetesSource.watch called twice');
    this.onChange = onChange;
  }

  /** Per-resource reflector counters (lists, 410 relists, watches, watchdog restarts, errors). */
  stats(): Record<string, ReflectorStats> {
    return Object.fromEntries([...this.reflectors].map(([k, r]) => [k, { ...r.stats }]));
  }

  private guardStatusSeen(key: string, obj: KubeObject): void {
    const json = JSON.stringify(obj.status ?? null);
    if (this.guardStatus.get(key) === json) return;
    this.guardStatus.set(key, json);
    this.onGuardStates?.();
  }

  watchRecordedGuards(onChange: () => void): void {
    this.onGuardStates = onChange;
  }

  metrics(): string {
    const lines = [
      '# HELP sockmesh_controlplane_status_writes_total Status writes this control plane sent to the API server, by kind.',
      '# TYPE sockmesh_controlplane_status_writes_total counter',
      ...[...this.statusWrites].map(
        ([k, n]) => `sockmesh_controlplane_status_writes_total{kind="${k}"} ${n}`,
      ),
      '# HELP sockmesh_controlplane_leader 1 while this replica leads (writes status, decides canaries).',
      '# TYPE sockmesh_controlplane_leader gauge',
      `sockmesh_controlplane_leader ${this.leads() ? 1 : 0}`,
    ];
    return `${lines.join('\n')}\n`;
  }

  report(verdicts: readonly ObjectVerdict[]): void {
    this.lastVerdicts = verdicts;
    if (this.opts.writeStatus === false || this.closed || !this.leads()) return;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    for (const v of verdicts) {
      const value = v.object.value as { kind?: string; metadata?: { name?: string; namespace?: string } };
      const kind = value.kind ?? '';
      if (!ROUTE_KINDS.has(kind) && !POLICY_KINDS.has(kind)) continue;
      const r = this.reflectors.get(kind);
      const key = `${value.metadata?.namespace}/${value.metadata?.name}`;
      const raw = r?.store.get(key);
      if (!r || !raw) continue;
      // A newer generation is on its way through a reload of its own: report that one.
      if (raw.metadata?.generation !== this.generations.get(v.object)) continue;
      const id = `${kind}/${key}`;
      const status = (raw.status ?? {}) as { parents?: unknown; conditions?: unknown };
      const path = `${objectPath(r.type, raw.metadata?.namespace, raw.metadata?.name ?? '')}/status`;
      let fingerprint: string;
      let write: () => Promise<void>;
      if (ROUTE_KINDS.has(kind)) {
        const { parents, changed } = mergeRouteParents(status.parents, routeParentStatuses(v, raw, now));
        fingerprint = JSON.stringify([raw.metadata?.generation, stripTimes(parents)]);
        if (!changed) {
          this.written.set(id, fingerprint);
          continue;
        }
        // status.parents is an atomic list shared with other controllers: a merge patch of the
        // whole list, guarded by resourceVersion, keeps theirs and fails (409) if it moved.
        const body = { metadata: { resourceVersion: raw.metadata?.resourceVersion }, status: { parents } };
        write = () =>
          this.client.json('PATCH', path, {
            query: { fieldManager: FIELD_MANAGER },
            body,
            contentType: 'application/merge-patch+json',
          });
      } else {
        const conditions = carryTransitionTimes(policyConditions(v, raw, now), status.conditions);
        fingerprint = JSON.stringify([raw.metadata?.generation, stripTimes(conditions)]);
        if (sameConditions(conditions, status.conditions)) {
          this.written.set(id, fingerprint);
          continue;
        }
        // Our own CRDs key conditions by type (listType map): server-side apply owns just ours.
        const body = {
          apiVersion: raw.apiVersion,
          kind,
          metadata: { name: raw.metadata?.name, namespace: raw.metadata?.namespace },
          status: { conditions },
        };
        write = () =>
          this.client.json('PATCH', path, {
            query: { fieldManager: FIELD_MANAGER, force: true },
            body,
            contentType: 'application/apply-patch+yaml',
          });
      }
      if (this.written.get(id) === fingerprint) continue; // written already; the watch has not shown it yet
      this.wanted.set(id, async () => {
        this.countWrite(kind);
        await write();
        this.written.set(id, fingerprint);
      });
      this.pump(id);
    }
  }

  /**
   * CanaryGuard status: phase, weight and a RolledBack condition, under a field manager of its
   * own, so server-side apply keeps the Accepted/ResolvedRefs entries report() owns.
   */
  reportGuards(guards: readonly GuardReport[]): void {
    if (this.opts.writeStatus === false || this.closed || !this.leads()) return;
    const r = this.reflectors.get('CanaryGuard');
    if (!r) return;
    for (const g of guards) {
      const raw = r.store.get(`${g.namespace}/${g.name}`);
      if (!raw) continue;
      const rolled = g.phase === 'RolledBack';
      const at = (g.transition?.at ?? new Date().toISOString()).replace(/\.\d+Z$/, 'Z');
      const condition = {
        type: 'RolledBack',
        status: rolled ? 'True' : 'False',
        reason: rolled ? (g.transition?.reason ?? 'RolledBack') : g.phase,
        message: rolled
          ? (g.transition?.message ?? 'rolled back')
          : `canary at ${g.weight} %${g.transition ? ` (${g.transition.message})` : ''}`,
        lastTransitionTime: at,
        ...(raw.metadata?.generation === undefined ? {} : { observedGeneration: raw.metadata.generation }),
      };
      // Everything a restarted control plane needs to resume the guard (recordedGuards).
      const status = {
        phase: g.phase,
        weight: g.weight,
        step: g.step,
        fingerprint: g.fingerprint,
        ...(g.transition
          ? {
              lastTransition: {
                from: g.transition.from,
                to: g.transition.to,
                reason: g.transition.reason,
                message: g.transition.message,
                time: g.transition.at,
              },
            }
          : {}),
        conditions: [condition],
      };
      const id = `CanaryGuard/${g.namespace}/${g.name}`;
      const fingerprint = JSON.stringify([raw.metadata?.generation, status]);
      if (this.guardWritten.get(id) === fingerprint) continue;
      this.guardWritten.set(id, fingerprint);
      this.countWrite('CanaryGuard.decision');
      const path = `${objectPath(r.type, g.namespace, g.name)}/status`;
      const body = {
        apiVersion: raw.apiVersion,
        kind: 'CanaryGuard',
        metadata: { name: g.name, namespace: g.namespace },
        status,
      };
      const p = this.client
        .json('PATCH', path, {
          query: { fieldManager: CANARY_FIELD_MANAGER, force: true },
          body,
          contentType: 'application/apply-patch+yaml',
        })
        .then(() => undefined)
        .catch((err: unknown) => {
          // Written again at the guard's next change; a deleted guard needs nothing.
          this.guardWritten.delete(id);
          if (!(err instanceof KubeApiError && err.status === 404))
            this.log.warn('canary status write failed', { object: id, error: err });
        })
        .finally(() => this.writes.delete(p));
      this.writes.add(p);
    }
  }

  recordedGuards(): ReadonlyMap<string, RecordedGuard> {
    const out = new Map<string, RecordedGuard>();
    for (const [key, raw] of this.reflectors.get('CanaryGuard')?.store ?? []) {
      const g = recordedGuard(raw.status);
      if (g) out.set(key, g);
    }
    return out;
  }

  private pump(id: string): void {
    if (this.inFlight.has(id) || this.closed || !this.leads()) return;
    const job = this.wanted.get(id);
    if (!job) return;
    this.wanted.delete(id);
    this.inFlight.add(id);
    const p = job()
      .then(() => {
        this.retry.delayMs = 1000;
      })
      .catch((err: unknown) => {
        this.written.delete(id);
        if (err instanceof KubeApiError && err.status === 404) return; // deleted meanwhile
        this.log.debug('status write failed; retrying', { object: id, error: err });
        this.scheduleRetry();
      })
      .finally(() => {
        this.inFlight.delete(id);
        this.writes.delete(p);
        this.pump(id);
      });
    this.writes.add(p);
  }

  /** A failed write (conflict, outage) is retried from the newest verdicts, with backoff, never in a loop. */
  private scheduleRetry(): void {
    if (this.retry.timer || this.closed) return;
    this.retry.timer = setTimeout(() => {
      this.retry.timer = undefined;
      this.report(this.lastVerdicts);
    }, this.retry.delayMs);
    this.retry.delayMs = Math.min(this.retry.delayMs * 2, 30_000);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry.timer);
    await this.opts.leader?.stop();
    await Promise.all([...this.reflectors.values()].map((r) => r.stop()));
    await Promise.allSettled([...this.writes]);
    await this.client.close();
  }
}

const PHASES = new Set<unknown>(['Progressing', 'Promoted', 'RolledBack']);
const isInt = (v: unknown, min: number, max: number): v is number =>
  Number.isInteger(v) && (v as number) >= min && (v as number) <= max;

/** A CanaryGuard status as reportGuards writes it; anything else (older control planes, hand edits) is no record. */
function recordedGuard(status: unknown): RecordedGuard | undefined {
  if (typeof status !== 'object' || status === null) return undefined;
  const s = status as Record<string, unknown>;
  if (!PHASES.has(s.phase) || !isInt(s.weight, 0, 100) || !isInt(s.step, -1, 100)) return undefined;
  if (typeof s.fingerprint !== 'string' || s.fingerprint === '') return undefined;
  const out: RecordedGuard = {
    phase: s.phase as RecordedGuard['phase'],
    weight: s.weight,
    step: s.step,
    fingerprint: s.fingerprint,
  };
  const t = s.lastTransition as Record<string, unknown> | undefined;
  if (
    typeof t === 'object' &&
    t !== null &&
    isInt(t.from, 0, 100) &&
    isInt(t.to, 0, 100) &&
    typeof t.reason === 'string' &&
    typeof t.message === 'string' &&
    typeof t.time === 'string'
  )
    out.transition = { from: t.from, to: t.to, reason: t.reason, message: t.message, at: t.time };
  return out;
}

function stripTimes(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v), (k, val) => (k === 'lastTransitionTime' ? undefined : val));
}
