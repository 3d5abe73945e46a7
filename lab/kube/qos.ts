/**
 * A pod's QoS class computed from its resources the way kubelet does
 * (pkg/apis/core/helper/qos): only cpu and memory count; every container with
 * both limits and requests equal to them is Guaranteed; no request or limit at
 * all is BestEffort; anything else Burstable. Init containers count too.
 * Pod-level `spec.resources`, when present, decides instead of the containers.
 */
import type { QosClass } from '../../mesh-agent/agent/pod-cgroups.js';

type ResourceList = Record<string, unknown>;
interface Resources {
  requests?: ResourceList;
  limits?: ResourceList;
}

const COMPUTE = ['cpu', 'memory'] as const;

const SUFFIX: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A resource.Quantity as a number (`500m` = 0.5, `1Gi` = 2^30, `1e3` = 1000); undefined if malformed. */
export function parseQuantity(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return undefined;
  const m = v.trim().match(/^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/);
  if (!m) return undefined;
  const n = Number(m[1]);
  const f = SUFFIX[m[2] ?? ''];
  return Number.isFinite(n) && f !== undefined ? n * f : undefined;
}

function positive(list: ResourceList | undefined, name: string): number | undefined {
  const q = parseQuantity(list?.[name]);
  return q !== undefined && q > 0 ? q : undefined;
}

function containersOf(spec: Record<string, unknown>): Resources[] {
  const out: Resources[] = [];
  for (const key of ['initContainers', 'containers']) {
    const list = spec[key];
    if (!Array.isArray(list)) continue;
    for (const c of list) out.push(((c as { resources?: Resources }).resources ?? {}) as Resources);
  }
  return out;
}

export function podQosClass(spec: Record<string, unknown>): QosClass {
  const podLevel = spec.resources as Resources | undefined;
  const all =
    podLevel &&
    (Object.keys(podLevel.requests ?? {}).length > 0 || Object.keys(podLevel.limits ?? {}).length > 0)
      ? [podLevel]
      : containersOf(spec);
  let anyRequestOrLimit = false;
  let guaranteed = true;
  for (const r of all) {
    for (const name of COMPUTE) {
      const req = positive(r.requests, name);
      const lim = positive(r.limits, name);
      if (req !== undefined || lim !== undefined) anyRequestOrLimit = true;
      // A request defaults to its limit; Guaranteed needs both limits, each equal to its request.
      if (lim === undefined || (req !== undefined && req !== lim)) guaranteed = false;
    }
  }
  if (!anyRequestOrLimit) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}
