/** Request header mutations from route config (request_headers_to_add / _remove). */
import type { RouteDecision } from './select.js';
import type { ClusterWeight, HeaderMutations, RequestHeaders, RouteConfig } from './types.js';

export type MutableHeaders = Record<string, string | string[]>;

/**
 * The mutation levels for a forwarded request, in the order Envoy applies them
 * by default: weighted cluster, route, virtual host, route configuration (so
 * the broadest level has the last word on an overwrite).
 */
export function requestMutationLevels(
  rc: RouteConfig,
  decision: Extract<RouteDecision, { kind: 'forward' }>,
  weighted?: ClusterWeight,
): HeaderMutations[] {
  const levels: HeaderMutations[] = [];
  if (weighted) levels.push(weighted.headers);
  levels.push(decision.route.headers, decision.virtualHost.headers, rc.headers);
  return levels;
}

/** Returns a new header record; each level removes first, then adds. */
export function applyHeaderMutations(
  headers: RequestHeaders,
  levels: readonly HeaderMutations[],
): MutableHeaders {
  const out: MutableHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    out[k] = typeof v === 'string' ? v : [...v];
  }
  for (const level of levels) {
    for (const name of level.remove) delete out[name];
    for (const h of level.add) {
      if (h.value === '' && !h.keepEmptyValue) continue;
      const existing = out[h.key];
      switch (h.action) {
        case 'APPEND_IF_EXISTS_OR_ADD':
          out[h.key] =
            existing === undefined
              ? h.value
              : [...(typeof existing === 'string' ? [existing] : existing), h.value];
          break;
        case 'ADD_IF_ABSENT':
          if (existing === undefined) out[h.key] = h.value;
          break;
        case 'OVERWRITE_IF_EXISTS_OR_ADD':
          out[h.key] = h.value;
          break;
        case 'OVERWRITE_IF_EXISTS':
          if (existing !== undefined) out[h.key] = h.value;
          break;
      }
    }
  }
  return out;
}
