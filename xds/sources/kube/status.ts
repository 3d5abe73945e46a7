/**
 * What the control plane says back about an object, as API conventions and
 * Gateway API have it: `metav1.Condition`s `Accepted` and `ResolvedRefs` with
 * `observedGeneration`, and for routes one `status.parents[]` entry per
 * Service parent (GAMMA) under sockmesh's controllerName. Pure: verdicts in,
 * desired status out; writing it is the source's job.
 */
import type { ConfigError, ObjectVerdict } from '../source.js';
import type { KubeObject } from './client.js';

export const CONTROLLER_NAME = 'sockmesh.io/controlplane';
export const FIELD_MANAGER = 'sockmesh-controlplane';

export interface Condition {
  type: 'Accepted' | 'ResolvedRefs';
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface RouteParentStatus {
  parentRef: Record<string, unknown>;
  controllerName: string;
  conditions: Condition[];
}

type Problem = { kind: 'parent' | 'backend' | 'target' | 'conflict' | 'other'; reason: string; text: string };

const MAX_MESSAGE = 1024;

function errorText(e: ConfigError): string {
  return `${e.path === '' ? '' : `${e.path}: `}${e.reason}`;
}

function message(problems: Problem[], state: ObjectVerdict['state']): string {
  const text = problems.map((p) => p.text).join('; ');
  const tail = state === 'kept-previous' ? ' (the last accepted version stays in force)' : '';
  const out = `${text}${tail}`;
  return out.length > MAX_MESSAGE ? `${out.slice(0, MAX_MESSAGE - 3)}...` : out;
}

/** Gateway API's reasons for what the model found wrong with a route. */
function classifyRouteError(e: ConfigError): Problem & { parent?: number } {
  const text = errorText(e);
  const parent = /^spec\.parentRefs\[(\d+)\]/.exec(e.path);
  if (parent) {
    const i = Number(parent[1]);
    if (/does not exist|has no port \d+$|only core Services|must be Service/.test(e.reason))
      return { kind: 'parent', reason: 'NoMatchingParent', text, parent: i };
    return { kind: 'parent', reason: 'NotAllowedByListeners', text, parent: i };
  }
  if (/backendRefs\[\d+\]/.test(e.path)) {
    if (/\.(kind|group)$/.test(e.path)) return { kind: 'backend', reason: 'InvalidKind', text };
    if (/does not exist|has no port/.test(e.reason))
      return { kind: 'backend', reason: 'BackendNotFound', text };
  }
  return { kind: 'other', reason: 'UnsupportedValue', text };
}

function condition(
  type: Condition['type'],
  ok: boolean,
  reason: string,
  msg: string,
  generation: number | undefined,
  now: string,
): Condition {
  const c: Condition = {
    type,
    status: ok ? 'True' : 'False',
    reason,
    message: msg,
    lastTransitionTime: now,
  };
  if (generation !== undefined) c.observedGeneration = generation;
  return c;
}

/** The Service parents of a route, as written (defaults applied by the server), in order. */
export function serviceParents(raw: KubeObject): Record<string, unknown>[] {
  const spec = raw.spec as { parentRefs?: unknown[] } | undefined;
  return (spec?.parentRefs ?? []).filter(
    (p): p is Record<string, unknown> =>
      typeof p === 'object' && p !== null && (p as { kind?: unknown }).kind === 'Service',
  );
}

/**
 * One status.parents entry per Service parent. The model takes a route whole
 * or not at all, so an unresolved backend makes it not Accepted (its last
 * accepted version, if any, stays in force) rather than served with a 500
 * share: Accepted=False carries the ResolvedRefs reason then.
 */
export function routeParentStatuses(
  verdict: ObjectVerdict,
  raw: KubeObject,
  now: string,
): RouteParentStatus[] {
  const generation = raw.metadata?.generation;
  const problems = verdict.errors.map(classifyRouteError);
  return serviceParents(raw).map((parentRef, i) => {
    const mine = problems.filter((p) => p.parent === undefined || p.parent === i);
    const parentProblem = mine.find((p) => p.kind === 'parent');
    const refProblem = mine.find((p) => p.kind === 'backend');
    const accepted =
      verdict.state === 'accepted'
        ? condition('Accepted', true, 'Accepted', 'accepted by sockmesh', generation, now)
        : condition(
            'Accepted',
            false,
            parentProblem?.reason ?? refProblem?.reason ?? mine[0]?.reason ?? 'UnsupportedValue',
            message(mine.length > 0 ? mine : problems, verdict.state),
            generation,
            now,
          );
    const resolved = refProblem
      ? condition(
          'ResolvedRefs',
          false,
          refProblem.reason,
          message(
            mine.filter((p) => p.kind === 'backend'),
            verdict.state,
          ),
          generation,
          now,
        )
      : condition('ResolvedRefs', true, 'ResolvedRefs', 'all references resolved', generation, now);
    return { parentRef, controllerName: CONTROLLER_NAME, conditions: [accepted, resolved] };
  });
}

function classifyPolicyError(e: ConfigError): Problem {
  const text = errorText(e);
  if (/^spec\.targetRef/.test(e.path) && /already has TrafficPolicy/.test(e.reason))
    return { kind: 'conflict', reason: 'Conflicted', text };
  if (/^spec\.targetRef/.test(e.path) && /does not exist/.test(e.reason))
    return { kind: 'target', reason: 'TargetNotFound', text };
  return { kind: 'other', reason: 'Invalid', text };
}

/** TrafficPolicy / AuthorizationPolicy conditions, with Policy Attachment (GEP-713) reasons. */
export function policyConditions(verdict: ObjectVerdict, raw: KubeObject, now: string): Condition[] {
  const generation = raw.metadata?.generation;
  const problems = verdict.errors.map(classifyPolicyError);
  const target = problems.find((p) => p.kind === 'target');
  const accepted =
    verdict.state === 'accepted'
      ? condition('Accepted', true, 'Accepted', 'accepted by sockmesh', generation, now)
      : condition(
          'Accepted',
          false,
          problems[0]?.reason ?? 'Invalid',
          message(problems, verdict.state),
          generation,
          now,
        );
  const resolved = target
    ? condition('ResolvedRefs', false, 'TargetNotFound', message([target], verdict.state), generation, now)
    : condition('ResolvedRefs', true, 'ResolvedRefs', 'all references resolved', generation, now);
  return [accepted, resolved];
}

/** Keeps a condition's lastTransitionTime while its status stays the same (API conventions). */
export function carryTransitionTimes(next: Condition[], previous: unknown): Condition[] {
  const prev = Array.isArray(previous) ? (previous as Partial<Condition>[]) : [];
  return next.map((c) => {
    const old = prev.find((p) => p.type === c.type);
    return old?.status === c.status && typeof old.lastTransitionTime === 'string'
      ? { ...c, lastTransitionTime: old.lastTransitionTime }
      : c;
  });
}

/** Equal apart from lastTransitionTime. */
export function sameConditions(a: readonly Condition[], b: unknown): boolean {
  if (!Array.isArray(b) || a.length !== b.length) return false;
  return a.every((c) => {
    const o = (b as Partial<Condition>[]).find((x) => x.type === c.type);
    return (
      o !== undefined &&
      o.status === c.status &&
      o.reason === c.reason &&
      o.message === c.message &&
      o.observedGeneration === c.observedGeneration
    );
  });
}

/** Other controllers' entries stay as they are; ours are replaced (and carry their transition times). */
export function mergeRouteParents(
  existing: unknown,
  ours: RouteParentStatus[],
): {
  parents: unknown[];
  changed: boolean;
} {
  const list = Array.isArray(existing) ? (existing as Partial<RouteParentStatus>[]) : [];
  const others = list.filter((p) => p.controllerName !== CONTROLLER_NAME);
  const previous = list.filter((p) => p.controllerName === CONTROLLER_NAME);
  const key = (ref: unknown) => canonical(ref);
  const merged = ours.map((o) => {
    const old = previous.find((p) => key(p.parentRef) === key(o.parentRef));
    return { ...o, conditions: carryTransitionTimes(o.conditions, old?.conditions) };
  });
  const changed =
    previous.length !== merged.length ||
    merged.some((m) => {
      const old = previous.find((p) => key(p.parentRef) === key(m.parentRef));
      return !old || !sameConditions(m.conditions, old.conditions);
    });
  return { parents: [...others, ...merged], changed };
}

/** JSON with sorted keys: the server hands maps back in its own key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object' && v !== null)
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}
