/**
 * Consistent hashing (Envoy's RING_HASH, ketama-style MD5 points). The ring holds
 * every endpoint, healthy or not, and a pick walks clockwise past unusable
 * ones, so health changes and ejections move only the keys of the affected
 * endpoint and adding or removing one endpoint moves about 1/n of the keys.
 * Same-node preference is deliberately not applied: it would send the same key
 * to different endpoints from different nodes (Envoy does not apply zone-aware
 * routing to ring hash either).
 */
import { createHash } from 'node:crypto';
import type { EjectionView, Endpoint, LoadBalancer, PickContext } from './types.js';

export interface RingHashOptions {
  /** Envoy defaults: 1024 and 8M. */
  minRingSize?: number;
  maxRingSize?: number;
}

export const DEFAULT_MIN_RING_SIZE = 1024;
export const DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024;

/** 32-bit hash of a request key (first 4 bytes of MD5, little-endian, as ketama). */
export function hashKey(key: string): number {
  return createHash('md5').update(key).digest().readUInt32LE(0);
}

export class RingHash implements LoadBalancer {
  readonly policy = 'RING_HASH';
  private readonly points: Uint32Array;
  /** Index into `endpoints` for each point. */
  private readonly owners: Uint32Array;

  constructor(
    private readonly endpoints: readonly Endpoint[],
    private readonly ejections: EjectionView,
    opts: RingHashOptions = {},
    private readonly rand: () => number = Math.random,
  ) {
    const minRing = opts.minRingSize ?? DEFAULT_MIN_RING_SIZE;
    const maxRing = opts.maxRingSize ?? DEFAULT_MAX_RING_SIZE;
    const built: Array<[number, number]> = [];
    pointCounts(endpoints, minRing, maxRing).forEach((count, idx) => {
      const ep = endpoints[idx];
      if (!ep) return;
      for (let block = 0; block * 4 < count; block++) {
        const digest = createHash('md5').update(`${ep.key}_${block}`).digest();
        for (let j = 0; j < 4 && block * 4 + j < count; j++) built.push([digest.readUInt32LE(j * 4), idx]);
      }
    });
    // Ties broken by endpoint key so the ring does not depend on endpoint order.
    built.sort((a, b) => a[0] - b[0] || cmp(endpoints[a[1]]?.key ?? '', endpoints[b[1]]?.key ?? ''));
    this.points = Uint32Array.from(built, (p) => p[0]);
    this.owners = Uint32Array.from(built, (p) => p[1]);
  }

  get ringSize(): number {
    return this.points.length;
  }

  pick(ctx: PickContext = {}): Endpoint | null {
    const n = this.points.length;
    if (n === 0) return null;
    const h = ctx.hashKey === undefined ? Math.floor(this.rand() * 0x1_0000_0000) : hashKey(ctx.hashKey);
    let start = lowerBound(this.points, h);
    if (start === n) start = 0;
    const tried = new Set<number>();
    let fallback: Endpoint | null = null;
    for (let i = 0; i < n && tried.size < this.endpoints.length; i++) {
      const owner = this.owners[(start + i) % n] ?? 0;
      if (tried.has(owner)) continue;
      tried.add(owner);
      const ep = this.endpoints[owner];
      if (!ep?.healthy || this.ejections.isEjected(ep.key)) continue;
      if (ctx.avoid?.has(ep.key)) {
        fallback ??= ep;
        continue;
      }
      return ep;
    }
    return fallback;
  }
}

/**
 * Points per endpoint. Like Envoy, the lightest endpoint gets its share of
 * minimum_ring_size and heavier ones proportionally more; unlike Envoy, that
 * base count is rounded up to a power of two, so adding or removing an
 * endpoint seldom changes how many points the others have (which would move
 * keys between endpoints that did not change).
 */
function pointCounts(endpoints: readonly Endpoint[], minRing: number, maxRing: number): number[] {
  if (endpoints.length === 0) return [];
  const weights = endpoints.map((e) => Math.max(1, e.weight));
  const total = weights.reduce((s, w) => s + w, 0);
  const minWeight = Math.min(...weights);
  const base = 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil((minRing * minWeight) / total))));
  let counts = weights.map((w) => Math.max(1, Math.round((w / minWeight) * base)));
  const size = counts.reduce((s, c) => s + c, 0);
  if (size > maxRing) counts = counts.map((c) => Math.max(1, Math.floor((c * maxRing) / size)));
  return counts;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function lowerBound(arr: Uint32Array, x: number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((arr[mid] ?? 0) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
