/**
 * What every agent needs to enforce L4 authorization in its kernel (the
 * caller's side decides at connect4): numeric identity ids for the mesh's
 * SPIFFE IDs, and the RBAC of every meshed pod mesh-wide, deduplicated into
 * policy sets. Carried as metadata of the outbound listener (identical on every
 * node), which Envoy and gRPC clients ignore.
 */
import type { MeshModel } from '../model/types.js';
import { isMeshed } from './endpoints.js';
import type { Json } from './envoy.js';
import { spiffeId } from './names.js';
import { rbacFilters } from './rbac.js';

/** The key under the outbound listener's `filter_metadata.sockmesh`. */
export const KERNEL_POLICY_KEY = 'kernelPolicy';

/** Identity ids: the meshed workloads' SPIFFE IDs in sorted order, from 1 (0 is the plaintext caller). */
export function identityIds(model: MeshModel): Map<string, number> {
  const ids = new Set<string>();
  for (const w of model.workloads.values()) {
    if (isMeshed(model, w)) ids.add(spiffeId(model.trustDomain, w.namespace, w.serviceAccount));
  }
  return new Map([...ids].sort().map((id, i) => [id, i + 1]));
}

/**
 * `{ identities: {spiffeId: id}, policySets: [{rbac: [RBAC...]}], destinations: {podIp: set} }`.
 * Pods no policy selects are left out: nothing to enforce there.
 */
export function kernelPolicyMetadata(model: MeshModel): Json {
  const sets: Json[] = [];
  const setOf = new Map<string, number>();
  const destinations: Json = {};
  for (const w of [...model.workloads.values()].sort((a, b) =>
    `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
  )) {
    if (w.ip === undefined || !isMeshed(model, w)) continue;
    // The RBAC messages themselves: the same the pod's inbound chain enforces, minus per-pod stat prefixes.
    const rbac = rbacFilters(model, w, '').map((f) => (f.typed_config as Json).rules as Json);
    if (rbac.length === 0) continue;
    const text = JSON.stringify(rbac);
    let set = setOf.get(text);
    if (set === undefined) {
      set = sets.length;
      sets.push({ rbac });
      setOf.set(text, set);
    }
    destinations[w.ip] = set;
  }
  return { identities: Object.fromEntries(identityIds(model)), policySets: sets, destinations };
}
