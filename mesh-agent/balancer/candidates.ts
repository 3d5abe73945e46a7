/** Which endpoints a pick may choose from: healthy, not ejected, local node first. */
import type { EjectionView, Endpoint } from './types.js';

/** The node an endpoint runs on: sockmesh metadata, else the most specific locality field. */
export function nodeOf(ep: Endpoint): string | undefined {
  return ep.meta.node ?? ep.locality.subZone ?? ep.locality.zone ?? ep.locality.region;
}

export interface CandidateOptions {
  /** This agent's node; undefined disables the same-node preference. */
  localNode: string | undefined;
  ejections: EjectionView;
}

/**
 * Healthy, non-ejected endpoints on the local node if there is at least one,
 * else all healthy, non-ejected endpoints. `avoid` is honoured only while it
 * leaves something to pick.
 */
export function candidates(
  endpoints: readonly Endpoint[],
  opts: CandidateOptions,
  avoid?: ReadonlySet<string>,
): Endpoint[] {
  let usable = endpoints.filter((e) => e.healthy && !opts.ejections.isEjected(e.key));
  if (avoid && avoid.size > 0) {
    const fresh = usable.filter((e) => !avoid.has(e.key));
    if (fresh.length > 0) usable = fresh;
  }
  if (opts.localNode !== undefined) {
    const local = usable.filter((e) => nodeOf(e) === opts.localNode);
    if (local.length > 0) return local;
  }
  return usable;
}
