/**
 * The canary guard's decision, pure: given what the callers' agents measured
 * for the canary and the baseline over the window, keep, promote or roll back.
 *
 * Noise: a rollback needs evidence, not a point estimate. The canary is
 * rolled back when even the optimistic end of its 95 % Wilson interval is
 * under the bound (a 1-in-20 blip under a 99 % bound is inconclusive, 30 %
 * errors in 20 requests is not). Promotion needs the point estimate within
 * every bound and at least minRequests at the current weight.
 * Ties: when the baseline breaks the same bound by the same evidence, the
 * cause is not the canary (a shared dependency fails): hold, do not roll back.
 * A rollback is final: only a change of the guard or of the route's written
 * weights (a new release) starts a new state.
 */

/** Requests to one backend as the agents counted them: `fast[i]` = how many took <= `bounds[i]` ms. */
export interface BackendCounts {
  requests: number;
  errors: number;
  /** Cumulative counts per duration bound (ms), as LRS reports them; same length as DURATION bounds. */
  fast: ReadonlyMap<number, number>;
}

export interface GuardBounds {
  /** Percent, 0..100. */
  minSuccessRate: number;
  /** Milliseconds; undefined = latency not guarded. */
  maxP99?: number;
  minRequests: number;
}

export type GuardPhase = 'Progressing' | 'Promoted' | 'RolledBack';

export interface GuardState {
  phase: GuardPhase;
  /** The canary's weight in percent (baseline gets the rest). */
  weight: number;
  /** Index in steps of the weight in force, or -1 while still at the written weight. */
  step: number;
}

export interface Measured {
  requests: number;
  successRate: number | null;
  p99: number | null;
}

export interface Decision {
  action: 'Hold' | 'Wait' | 'Promote' | 'RollBack' | 'Done';
  /** CamelCase, as a condition reason. */
  reason: string;
  message: string;
  next: GuardState;
  canary: Measured;
  baseline: Measured;
}

const Z = 1.96;

/** Wilson score interval of a proportion (successes of n), 95 %. */
export function wilson(successes: number, n: number): { low: number; high: number } {
  if (n <= 0) return { low: 0, high: 1 };
  const p = successes / n;
  const z2 = Z * Z;
  const centre = p + z2 / (2 * n);
  const spread = Z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  const d = 1 + z2 / n;
  return { low: Math.max(0, (centre - spread) / d), high: Math.min(1, (centre + spread) / d) };
}

/** p99 as the upper bound of the bucket holding it (histogram_quantile without interpolation); Infinity beyond the last bound. */
export function p99(c: BackendCounts): number | null {
  if (c.requests <= 0) return null;
  for (const le of [...c.fast.keys()].sort((a, b) => a - b)) {
    if ((c.fast.get(le) ?? 0) >= 0.99 * c.requests) return le;
  }
  return Number.POSITIVE_INFINITY;
}

/** Requests certainly slower than maxP99: beyond the smallest bound >= maxP99 (never over-counts). */
function slowCount(c: BackendCounts, maxP99: number): number {
  const les = [...c.fast.keys()].filter((le) => le >= maxP99).sort((a, b) => a - b);
  if (les.length === 0) return 0;
  return Math.max(0, c.requests - (c.fast.get(les[0]!) ?? 0));
}

export function measure(c: BackendCounts): Measured {
  return {
    requests: c.requests,
    successRate: c.requests > 0 ? (100 * (c.requests - c.errors)) / c.requests : null,
    p99: p99(c),
  };
}

/** Which bound the backend certainly breaks (by the Wilson evidence rule), or undefined. */
function broken(c: BackendCounts, b: GuardBounds): { reason: string; message: string } | undefined {
  if (c.requests < b.minRequests) return undefined;
  const ok = wilson(c.requests - c.errors, c.requests);
  if (100 * ok.high < b.minSuccessRate) {
    return {
      reason: 'SuccessRateBelowBound',
      message: `success rate ${fmt((100 * (c.requests - c.errors)) / c.requests)} % < ${b.minSuccessRate} %`,
    };
  }
  if (b.maxP99 !== undefined) {
    // p99 <= max means at most 1 % slower than max: broken when the slow share is certainly over 1 %.
    const slow = wilson(slowCount(c, b.maxP99), c.requests);
    if (slow.low > 0.01) {
      return {
        reason: 'LatencyAboveBound',
        message: `p99 ${fmt(p99(c) ?? 0)} ms > ${b.maxP99} ms`,
      };
    }
  }
  return undefined;
}

function healthy(c: BackendCounts, b: GuardBounds): boolean {
  const m = measure(c);
  return (
    c.requests >= b.minRequests &&
    (m.successRate ?? 0) >= b.minSuccessRate &&
    (b.maxP99 === undefined || (m.p99 ?? Number.POSITIVE_INFINITY) <= b.maxP99)
  );
}

function fmt(n: number): string {
  return Number.isFinite(n) ? String(Math.round(n * 10) / 10) : '>max';
}

/** The state a guard starts in: the route's written weight. */
export function initialState(writtenWeight: number, steps: readonly number[]): GuardState {
  const done = writtenWeight >= 100 || (steps.length > 0 && writtenWeight >= steps[steps.length - 1]!);
  return { phase: done && steps.length > 0 ? 'Promoted' : 'Progressing', weight: writtenWeight, step: -1 };
}

/** One interval's decision. `steps` ascending percents (validated by the model). */
export function decide(
  state: GuardState,
  canary: BackendCounts,
  baseline: BackendCounts,
  bounds: GuardBounds,
  steps: readonly number[],
): Decision {
  const measured = { canary: measure(canary), baseline: measure(baseline) };
  const out = (action: Decision['action'], reason: string, message: string, next = state): Decision => ({
    action,
    reason,
    message,
    next,
    ...measured,
  });
  if (state.phase === 'RolledBack')
    return out('Done', 'RolledBack', 'rolled back; change the guard or the route to try again');
  const bad = broken(canary, bounds);
  if (bad) {
    const alsoBaseline = broken(baseline, bounds);
    if (alsoBaseline?.reason === bad.reason) {
      return out(
        'Hold',
        'BaselineFailsToo',
        `canary ${bad.message}, but the baseline breaks the same bound (${alsoBaseline.message}): not the canary's fault`,
      );
    }
    return out('RollBack', bad.reason, `canary ${bad.message}: weight ${state.weight} -> 0`, {
      phase: 'RolledBack',
      weight: 0,
      step: state.step,
    });
  }
  if (canary.requests < bounds.minRequests) {
    return out(
      'Wait',
      'NotEnoughRequests',
      `canary has ${canary.requests} of ${bounds.minRequests} requests in the window`,
    );
  }
  if (!healthy(canary, bounds)) {
    return out('Hold', 'Inconclusive', 'canary is near a bound: not promoted, not rolled back');
  }
  const nextStep = steps.findIndex((s) => s > state.weight);
  if (state.phase === 'Promoted' || nextStep < 0) {
    return out('Hold', 'Healthy', 'canary within bounds', {
      ...state,
      phase: steps.length > 0 ? 'Promoted' : state.phase,
    });
  }
  const weight = steps[nextStep]!;
  const last = nextStep === steps.length - 1;
  return out('Promote', 'Healthy', `canary within bounds: weight ${state.weight} -> ${weight}`, {
    phase: last ? 'Promoted' : 'Progressing',
    weight,
    step: nextStep,
  });
}

/**
 * The window: reports kept with their arrival time, summed over the last
 * `windowMs` but never across a weight change (a step is judged on its own traffic).
 */
export class SampleWindow {
  private samples: Array<{ at: number; canary: BackendCounts; baseline: BackendCounts }> = [];
  private since = 0;

  add(at: number, canary: BackendCounts, baseline: BackendCounts): void {
    this.samples.push({ at, canary, baseline });
  }

  /** Forget what was measured before `at` (the weight changed then). */
  restart(at: number): void {
    this.since = at;
    this.samples = this.samples.filter((s) => s.at >= at);
  }

  sum(now: number, windowMs: number): { canary: BackendCounts; baseline: BackendCounts } {
    const from = Math.max(this.since, now - windowMs);
    this.samples = this.samples.filter((s) => s.at > from);
    return {
      canary: addAll(this.samples.map((s) => s.canary)),
      baseline: addAll(this.samples.map((s) => s.baseline)),
    };
  }
}

export function addAll(list: readonly BackendCounts[]): BackendCounts {
  const fast = new Map<number, number>();
  let requests = 0;
  let errors = 0;
  for (const c of list) {
    requests += c.requests;
    errors += c.errors;
    for (const [le, n] of c.fast) fast.set(le, (fast.get(le) ?? 0) + n);
  }
  return { requests, errors, fast };
}
