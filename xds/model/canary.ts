/**
 * CanaryGuard (sockmesh.io/v1alpha1): a guard next to an HTTPRoute or GRPCRoute, naming
 * which of its backendRefs is the canary and which the baseline, the bounds
 * the canary must keep, and optional promotion steps. Decoded and checked
 * here; the decision is canary-decision.ts; the control plane applies the
 * resulting weight through canaryWeights() without touching the route as written.
 */
import type { FieldPath } from '../sources/source.js';
import type { Meta } from './kinds.js';
import { type FieldReader, quote } from './reader.js';
import type { HttpRoute, HttpRouteKind, MeshModel, ServiceRef } from './types.js';
import { objectKey } from './types.js';

export const CANARY_GUARD_KIND = 'CanaryGuard';
export const DEFAULT_INTERVAL_MS = 10_000;

export interface CanaryGuard {
  namespace: string;
  name: string;
  route: ServiceRef;
  /** The kind of the guarded route: an HTTPRoute or a GRPCRoute (same split, same model). */
  routeKind: HttpRouteKind;
  canary: ServiceRef;
  baseline: ServiceRef;
  /** Percent, 0..100. */
  minSuccessRate: number;
  maxP99Ms: number | undefined;
  windowMs: number;
  minRequests: number;
  intervalMs: number;
  /** Ascending canary weights in percent; the last may be 100. */
  steps: number[];
  /** The canary's weight as the route is written, percent of canary + baseline. */
  writtenWeight: number;
}

export interface DeclaredCanaryGuard
  extends Omit<CanaryGuard, 'route' | 'canary' | 'baseline' | 'writtenWeight' | 'routeKind'> {
  route: ServiceRef & { path: FieldPath; kind: HttpRouteKind };
  canary: ServiceRef & { path: FieldPath };
  baseline: ServiceRef & { path: FieldPath };
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NS = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function readRef(
  r: FieldReader,
  path: FieldPath,
  ns: string,
  want: { group: string; kinds: readonly string[] },
): (ServiceRef & { path: FieldPath; kind: string }) | undefined {
  if (!r.has(path)) {
    r.fail(path, 'required field is missing');
    return undefined;
  }
  r.onlyKnown(path, ['group', 'kind', 'name', 'namespace']);
  const group = r.string([...path, 'group']) ?? want.group;
  if (group !== want.group && !(want.group === '' && group === 'core'))
    r.fail([...path, 'group'], `must be ${quote(want.group)}, got ${quote(group)}`);
  const kind = r.string([...path, 'kind']) ?? want.kinds[0]!;
  if (!want.kinds.includes(kind)) {
    r.fail([...path, 'kind'], `must be ${want.kinds.join(' or ')}, got ${quote(kind)}`);
    return undefined;
  }
  const name = r.string([...path, 'name'], { required: true, pattern: NAME, maxLength: 253 });
  const namespace = r.string([...path, 'namespace'], { pattern: NS, maxLength: 63 }) ?? ns;
  return name === undefined ? undefined : { namespace, name, path, kind };
}

export function decodeCanaryGuard(r: FieldReader, meta: Meta): DeclaredCanaryGuard | undefined {
  const spec = ['spec'];
  r.onlyKnown(spec, [
    'targetRef',
    'canaryRef',
    'baselineRef',
    'bounds',
    'window',
    'minRequests',
    'interval',
    'steps',
  ]);
  r.onlyKnown(['spec', 'bounds'], ['minSuccessRate', 'maxP99']);
  const target = readRef(r, ['spec', 'targetRef'], meta.namespace, {
    group: 'gateway.networking.k8s.io',
    kinds: ['HTTPRoute', 'GRPCRoute'],
  });
  const route = target && { ...target, kind: target.kind as HttpRouteKind };
  const canary = readRef(r, ['spec', 'canaryRef'], meta.namespace, { group: '', kinds: ['Service'] });
  const baseline = readRef(r, ['spec', 'baselineRef'], meta.namespace, { group: '', kinds: ['Service'] });
  const ratePath = ['spec', 'bounds', 'minSuccessRate'];
  const rate = r.get(ratePath);
  let minSuccessRate: number | undefined;
  if (rate === undefined) r.fail(ratePath, 'required field is missing (percent, e.g. 99)');
  else if (typeof rate !== 'number' || !(rate >= 0 && rate <= 100))
    r.fail(ratePath, `must be a number of percent from 0 to 100, got ${JSON.stringify(rate)}`);
  else minSuccessRate = rate;
  const maxP99Ms = r.duration(['spec', 'bounds', 'maxP99']);
  if (maxP99Ms !== undefined && maxP99Ms <= 0) r.fail(['spec', 'bounds', 'maxP99'], 'must be above 0');
  const intervalMs = r.duration(['spec', 'interval']) ?? DEFAULT_INTERVAL_MS;
  if (intervalMs < 1000) r.fail(['spec', 'interval'], `must be at least 1s (agents report every second)`);
  const windowMs = r.duration(['spec', 'window']) ?? intervalMs;
  if (windowMs < intervalMs)
    r.fail(
      ['spec', 'window'],
      `must be at least the interval (${intervalMs} ms): a decision needs a full window`,
    );
  const minRequests = r.integer(['spec', 'minRequests'], { min: 1, max: 1_000_000_000 }) ?? 20;
  const steps: number[] = [];
  const n = r.list(['spec', 'steps']);
  for (let i = 0; i < n; i++) {
    const s = r.integer(['spec', 'steps', i], { min: 1, max: 100 });
    if (s === undefined) continue;
    if (steps.length > 0 && s <= steps[steps.length - 1]!)
      r.fail(['spec', 'steps', i], `steps must rise: ${s} after ${steps[steps.length - 1]}`);
    steps.push(s);
  }
  if (canary && baseline && canary.namespace === baseline.namespace && canary.name === baseline.name)
    r.fail(['spec', 'baselineRef', 'name'], `the baseline must differ from the canary (${canary.name})`);
  if (!route || !canary || !baseline || minSuccessRate === undefined) return undefined;
  return {
    namespace: meta.namespace,
    name: meta.name,
    route,
    canary,
    baseline,
    minSuccessRate,
    maxP99Ms,
    windowMs,
    minRequests,
    intervalMs,
    steps,
  };
}

const same = (a: ServiceRef, b: ServiceRef) => a.namespace === b.namespace && a.name === b.name;

/** Checks the guard against the routes; one guard per route. */
export function resolveCanaryGuards(
  declared: ReadonlyArray<{ value: DeclaredCanaryGuard; reader: FieldReader }>,
  routes: readonly HttpRoute[],
): CanaryGuard[] {
  const out: CanaryGuard[] = [];
  const taken = new Map<string, string>();
  for (const { value: g, reader: r } of declared) {
    const route = routes.find((x) => same(x, g.route) && x.kind === g.route.kind);
    if (!route) {
      const other = routes.find((x) => same(x, g.route));
      r.fail(
        [...g.route.path, other ? 'kind' : 'name'],
        other
          ? `${g.route.namespace}/${g.route.name} is a ${other.kind}, not a ${g.route.kind}: set kind: ${other.kind}`
          : `${g.route.kind} ${g.route.namespace}/${g.route.name} does not exist`,
      );
      continue;
    }
    // Rules that name both are the split; a rule that pins the canary alone (a tester's header) is left as written.
    const both = (rule: HttpRoute['rules'][number]) =>
      rule.backends.some((x) => same(x.service, g.canary)) &&
      rule.backends.some((x) => same(x.service, g.baseline));
    const rules = route.rules.filter(both);
    if (rules.length === 0) {
      r.fail(
        [...g.canary.path, 'name'],
        `no rule of ${route.kind} ${route.namespace}/${route.name} splits between Service ${g.canary.namespace}/${g.canary.name} (canary) and Service ${g.baseline.namespace}/${g.baseline.name} (baseline)`,
      );
      continue;
    }
    const key = objectKey(route.namespace, route.name);
    const other = taken.get(key);
    if (other) {
      r.fail([...g.route.path, 'name'], `${route.kind} ${key} already has CanaryGuard ${other}`);
      continue;
    }
    taken.set(key, objectKey(g.namespace, g.name));
    const first = rules[0]!;
    const c = first.backends.filter((b) => same(b.service, g.canary)).reduce((s, b) => s + b.weight, 0);
    const b = first.backends.filter((x) => same(x.service, g.baseline)).reduce((s, x) => s + x.weight, 0);
    out.push({
      ...g,
      route: { namespace: g.route.namespace, name: g.route.name },
      routeKind: route.kind,
      canary: { namespace: g.canary.namespace, name: g.canary.name },
      baseline: { namespace: g.baseline.namespace, name: g.baseline.name },
      writtenWeight: c + b === 0 ? 0 : Math.round((100 * c) / (c + b)),
    });
  }
  return out;
}

/**
 * The model the agents receive: in every rule of a guarded route that names
 * both canary and baseline, their weights become `weight` and `100 - weight`
 * (other backends keep theirs); a rule naming only one of them stays as written.
 * The model's own routes are not changed.
 */
export function canaryWeights(model: MeshModel, weights: ReadonlyMap<string, number>): MeshModel {
  const guards = (model.canaryGuards ?? []).filter((g) => weights.has(objectKey(g.namespace, g.name)));
  if (guards.length === 0) return model;
  return {
    ...model,
    httpRoutes: model.httpRoutes.map((route) => {
      const g = guards.find((x) => same(x.route, route) && x.routeKind === route.kind);
      if (!g) return route;
      const w = weights.get(objectKey(g.namespace, g.name))!;
      return {
        ...route,
        rules: route.rules.map((rule) =>
          rule.backends.some((b) => same(b.service, g.canary)) &&
          rule.backends.some((b) => same(b.service, g.baseline))
            ? {
                ...rule,
                backends: rule.backends.map((b) =>
                  same(b.service, g.canary)
                    ? { ...b, weight: w }
                    : same(b.service, g.baseline)
                      ? { ...b, weight: 100 - w }
                      : b,
                ),
              }
            : rule,
        ),
      };
    }),
  };
}
