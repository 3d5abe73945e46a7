/**
 * The canary guards at run time. Agents report what their callers' requests
 * to the guarded clusters did over Envoy's LoadReportingService (LRS), on the
 * same gRPC server (and credentials) as ADS; every report is a sample in the
 * guard's window. Each interval the pure decision (model/canary-decision.ts)
 * runs; a new weight is pushed by the control plane as an override of the
 * route's split (model/canary.ts canaryWeights), the HTTPRoute as written
 * stays untouched. A rollback is final until the guard or the route's
 * written weights change.
 */
import { createHash } from 'node:crypto';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../../lib/log.js';
import type { ClusterLoad } from '../client/lrs-client.js';
import type { CanaryGuard } from '../model/canary.js';
import {
  addAll,
  type BackendCounts,
  type Decision,
  decide,
  type GuardState,
  initialState,
  SampleWindow,
} from '../model/canary-decision.js';
import type { HttpRouteKind, MeshModel } from '../model/types.js';
import { objectKey } from '../model/types.js';
import type { ProtoObject } from '../protos.js';
import type { RecordedGuard } from '../sources/source.js';
import { clusterName } from '../translate/names.js';

/** How often agents report (LRS load_reporting_interval): the window's resolution. */
export const REPORT_INTERVAL_MS = 1000;
/** The LRS load metric carrying "requests that took <= N ms", one per duration bound. */
export const FAST_METRIC_PREFIX = 'sockmesh.request_duration_ms.le.';

export interface CanaryStatus {
  name: string;
  route: string;
  /** The guarded route's kind (absent from control planes before GRPCRoute: HTTPRoute). */
  routeKind?: HttpRouteKind;
  canary: string;
  baseline: string;
  phase: GuardState['phase'];
  weight: number;
  writtenWeight: number;
  steps: number[];
  step: number;
  intervalMs: number;
  /** What the state belongs to: a recorded state resumes only under the same fingerprint. */
  fingerprint: string;
  lastDecision?: {
    at: string;
    action: Decision['action'];
    reason: string;
    message: string;
    canary: Decision['canary'];
    baseline: Decision['baseline'];
  };
  lastTransition?: { at: string; reason: string; message: string; from: number; to: number };
}

interface Running {
  guard: CanaryGuard;
  fingerprint: string;
  state: GuardState;
  window: SampleWindow;
  clusters: { canary: Set<string>; baseline: Set<string> };
  timer: NodeJS.Timeout;
  status: CanaryStatus;
}

type LrsStream = ServerDuplexStream<ProtoObject, ProtoObject>;

export class CanaryController {
  private readonly guards = new Map<string, Running>();
  private readonly streams = new Set<LrsStream>();
  /** Decisions taken, by guard and action: the control plane's canary metric. */
  private readonly decisions = new Map<string, number>();
  private announced = '';
  /** Cumulative outcomes of every agent report received, by cluster: what a follower forwards. */
  private readonly received = new Map<
    string,
    { successes: number; errors: number; fast: Map<number, number> }
  >();
  /** A follower replica: the leader decides; this one serves the weights the leader recorded. */
  private following = false;

  constructor(
    private readonly log: Logger,
    /** Called when a guard moved a weight: the control plane serves a new snapshot. */
    private readonly onWeights: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The guards of a newly built model. Unchanged guards keep their state (and a rollback); a guard
   * new to this process resumes from its recorded state when that was recorded for the same guard
   * and written weights (a restart), else it starts from the written weight (a new release).
   */
  setModel(model: MeshModel, recorded: ReadonlyMap<string, RecordedGuard> = new Map()): void {
    const seen = new Set<string>();
    for (const g of model.canaryGuards ?? []) {
      const key = objectKey(g.namespace, g.name);
      seen.add(key);
      const fingerprint = guardFingerprint(g);
      const clusters = clustersOf(model, g);
      const old = this.guards.get(key);
      if (old && old.fingerprint === fingerprint) {
        old.guard = g;
        old.clusters = clusters;
        continue;
      }
      if (old) clearInterval(old.timer);
      const resumed = old ? undefined : resumable(recorded.get(key), fingerprint, g);
      const state = resumed
        ? { phase: resumed.phase, weight: resumed.weight, step: resumed.step }
        : initialState(g.writtenWeight, g.steps);
      const running: Running = {
        guard: g,
        fingerprint,
        state,
        window: new SampleWindow(),
        clusters,
        timer: setInterval(() => this.tick(key), g.intervalMs),
        status: {
          name: key,
          route: objectKey(g.route.namespace, g.route.name),
          routeKind: g.routeKind,
          canary: objectKey(g.canary.namespace, g.canary.name),
          baseline: objectKey(g.baseline.namespace, g.baseline.name),
          phase: state.phase,
          weight: state.weight,
          writtenWeight: g.writtenWeight,
          steps: g.steps,
          step: state.step,
          intervalMs: g.intervalMs,
          fingerprint,
          ...(resumed?.transition ? { lastTransition: resumed.transition } : {}),
        },
      };
      running.timer.unref();
      this.guards.set(key, running);
      if (resumed)
        this.log.info('canary guard resumed', { guard: key, phase: state.phase, weight: state.weight });
      else this.log.info('canary guard started', { guard: key, weight: state.weight, steps: g.steps });
    }
    for (const [key, r] of this.guards) {
      if (seen.has(key)) continue;
      clearInterval(r.timer);
      this.guards.delete(key);
      this.log.info('canary guard removed', { guard: key });
    }
    this.announce();
  }

  /**
   * Leading: this replica decides. Following: it takes every guard's state from what the leader
   * recorded (follow()); its own window keeps filling, so a new leader decides on fresh numbers.
   */
  setFollowing(following: boolean): void {
    this.following = following;
  }

  /** A follower takes the recorded states of the guards it runs (same fingerprint, a reachable state). */
  follow(recorded: ReadonlyMap<string, RecordedGuard>): void {
    if (!this.following) return;
    let moved = false;
    for (const [key, r] of this.guards) {
      const rec = resumable(recorded.get(key), r.fingerprint, r.guard);
      if (!rec) continue;
      if (rec.weight !== r.state.weight) {
        moved = true;
        r.window.restart(this.now());
      }
      r.state = { phase: rec.phase, weight: rec.weight, step: rec.step };
      r.status.phase = rec.phase;
      r.status.weight = rec.weight;
      r.status.step = rec.step;
      if (rec.transition) r.status.lastTransition = rec.transition;
    }
    if (moved) this.onWeights();
  }

  /** guard key -> canary weight (percent) to serve. */
  weights(): Map<string, number> {
    return new Map([...this.guards].map(([k, r]) => [k, r.state.weight]));
  }

  status(): CanaryStatus[] {
    return [...this.guards.values()].map((r) => r.status);
  }

  /** Prometheus text: each guard's weight and phase, and the decisions taken. */
  metrics(): string {
    const lines = [
      '# HELP sockmesh_canary_weight The canary weight (percent) the control plane serves for a guard.',
      '# TYPE sockmesh_canary_weight gauge',
    ];
    for (const r of this.guards.values())
      lines.push(
        `sockmesh_canary_weight{guard="${r.status.name}",phase="${r.state.phase}"} ${r.state.weight}`,
      );
    lines.push(
      '# HELP sockmesh_canary_decisions_total Canary guard decisions, by action and reason.',
      '# TYPE sockmesh_canary_decisions_total counter',
    );
    for (const [k, n] of this.decisions) lines.push(`sockmesh_canary_decisions_total{${k}} ${n}`);
    return `${lines.join('\n')}\n`;
  }

  /** One interval of one guard. */
  tick(key: string): void {
    const r = this.guards.get(key);
    if (!r || this.following) return;
    const now = this.now();
    const { canary, baseline } = r.window.sum(now, r.guard.windowMs);
    const d = decide(
      r.state,
      canary,
      baseline,
      { minSuccessRate: r.guard.minSuccessRate, maxP99: r.guard.maxP99Ms, minRequests: r.guard.minRequests },
      r.guard.steps,
    );
    const label = `guard="${key}",action="${d.action}",reason="${d.reason}"`;
    this.decisions.set(label, (this.decisions.get(label) ?? 0) + 1);
    const at = new Date(now).toISOString();
    r.status.lastDecision = {
      at,
      action: d.action,
      reason: d.reason,
      message: d.message,
      canary: d.canary,
      baseline: d.baseline,
    };
    const from = r.state.weight;
    r.state = d.next;
    r.status.phase = d.next.phase;
    r.status.weight = d.next.weight;
    r.status.step = d.next.step;
    if (d.next.weight !== from) {
      r.status.lastTransition = { at, reason: d.reason, message: d.message, from, to: d.next.weight };
      r.window.restart(now);
      const fields = {
        guard: key,
        from,
        to: d.next.weight,
        reason: d.reason,
        canary: d.canary,
        baseline: d.baseline,
      };
      if (d.action === 'RollBack') this.log.warn('canary rolled back', { ...fields, message: d.message });
      else this.log.info('canary promoted', { ...fields, message: d.message });
      this.onWeights();
    }
  }

  /** gRPC handler of LoadReportingService.StreamLoadStats. */
  readonly handleLrs = (stream: LrsStream): void => {
    let node = '';
    stream.on('data', (req: ProtoObject) => {
      if (!node) {
        node = String((req.node as ProtoObject | undefined)?.id ?? '?');
        this.streams.add(stream);
        stream.write(this.response());
      }
      this.record((req.cluster_stats as ProtoObject[] | undefined) ?? []);
    });
    const done = () => {
      this.streams.delete(stream);
    };
    stream.on('error', done);
    stream.on('end', () => {
      done();
      stream.end();
    });
    stream.on('cancelled', done);
  };

  close(): void {
    for (const r of this.guards.values()) clearInterval(r.timer);
    for (const s of this.streams) s.end();
    this.streams.clear();
  }

  private response(): ProtoObject {
    const clusters = new Set<string>();
    for (const r of this.guards.values())
      for (const c of [...r.clusters.canary, ...r.clusters.baseline]) clusters.add(c);
    return {
      clusters: [...clusters].sort(),
      load_reporting_interval: {
        seconds: Math.floor(REPORT_INTERVAL_MS / 1000),
        nanos: (REPORT_INTERVAL_MS % 1000) * 1e6,
      },
    };
  }

  /**
   * Tells every reporting agent the clusters now guarded (LRS: a new response replaces the list),
   * only when the list changed: an agent starts counting again from each response.
   */
  private announce(): void {
    const res = this.response();
    const text = JSON.stringify(res.clusters);
    if (text === this.announced) return;
    this.announced = text;
    for (const s of this.streams) s.write(res);
  }

  /** What the agents reported here, cumulative (an LRS client of the leader reports its deltas). */
  receivedLoads(): ClusterLoad[] {
    return [...this.received].map(([cluster, c]) => ({ cluster, ...c, fast: new Map(c.fast) }));
  }

  private record(stats: readonly ProtoObject[]): void {
    if (stats.length === 0) return;
    const now = this.now();
    const byCluster = new Map<string, BackendCounts>();
    for (const cs of stats) {
      const name = String(cs.cluster_name);
      const c = countsOf(cs);
      byCluster.set(name, c);
      const total = this.received.get(name) ?? { successes: 0, errors: 0, fast: new Map<number, number>() };
      total.successes += c.requests - c.errors;
      total.errors += c.errors;
      for (const [le, n] of c.fast) total.fast.set(le, (total.fast.get(le) ?? 0) + n);
      this.received.set(name, total);
    }
    for (const r of this.guards.values()) {
      const sum = (names: Set<string>) => addAll([...names].flatMap((n) => byCluster.get(n) ?? []));
      const canary = sum(r.clusters.canary);
      const baseline = sum(r.clusters.baseline);
      if (canary.requests + baseline.requests > 0) r.window.add(now, canary, baseline);
    }
  }
}

/** Stable across processes of the same version: the guard as resolved, written weight included. */
export function guardFingerprint(g: CanaryGuard): string {
  return createHash('sha256').update(JSON.stringify(g)).digest('hex').slice(0, 32);
}

/** A recorded state this guard can resume from: the same guard and written weights, a state it can reach. */
function resumable(
  r: RecordedGuard | undefined,
  fingerprint: string,
  g: CanaryGuard,
): RecordedGuard | undefined {
  if (!r || r.fingerprint !== fingerprint) return undefined;
  if (r.step < -1 || r.step >= g.steps.length) return undefined;
  const expected = r.phase === 'RolledBack' ? 0 : r.step === -1 ? g.writtenWeight : g.steps[r.step];
  return r.weight === expected ? r : undefined;
}

function clustersOf(model: MeshModel, g: CanaryGuard): { canary: Set<string>; baseline: Set<string> } {
  const out = { canary: new Set<string>(), baseline: new Set<string>() };
  const route = model.httpRoutes.find((x) => x.namespace === g.route.namespace && x.name === g.route.name);
  for (const rule of route?.rules ?? []) {
    for (const b of rule.backends) {
      const svc = model.services.get(objectKey(b.service.namespace, b.service.name));
      if (!svc) continue;
      if (b.service.namespace === g.canary.namespace && b.service.name === g.canary.name)
        out.canary.add(clusterName(model, svc, b.port));
      if (b.service.namespace === g.baseline.namespace && b.service.name === g.baseline.name)
        out.baseline.add(clusterName(model, svc, b.port));
    }
  }
  return out;
}

/** One LRS ClusterStats -> counts (summed over localities). */
export function countsOf(cs: ProtoObject): BackendCounts {
  let requests = 0;
  let errors = 0;
  const fast = new Map<number, number>();
  for (const l of (cs.upstream_locality_stats as ProtoObject[] | undefined) ?? []) {
    const ok = Number(l.total_successful_requests ?? 0);
    const bad = Number(l.total_error_requests ?? 0);
    requests += ok + bad;
    errors += bad;
    for (const m of (l.load_metric_stats as ProtoObject[] | undefined) ?? []) {
      const name = String(m.metric_name ?? '');
      if (!name.startsWith(FAST_METRIC_PREFIX)) continue;
      const le = Number(name.slice(FAST_METRIC_PREFIX.length));
      if (!Number.isFinite(le)) continue;
      fast.set(le, (fast.get(le) ?? 0) + Number(m.num_requests_finished_with_metric ?? 0));
    }
  }
  return { requests, errors, fast };
}
