/** envoy.config.cluster.v3.CircuitBreakers: the DEFAULT-priority thresholds, with Envoy's defaults. */
import { list, obj, optEnum, optUintWrapper } from '../state/wire.js';

export interface BreakerThresholds {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
}

export const DEFAULT_THRESHOLDS: Readonly<BreakerThresholds> = Object.freeze({
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  maxRetries: 3,
});

/** Reads the thresholds entry whose priority is DEFAULT (or unset); HIGH is ignored. */
export function parseCircuitBreakers(v: unknown, path: string): BreakerThresholds {
  if (v === undefined || v === null) return { ...DEFAULT_THRESHOLDS };
  const cb = obj(v, path);
  const entries = list(cb.thresholds, `${path}.thresholds`);
  for (let i = 0; i < entries.length; i++) {
    const at = `${path}.thresholds[${i}]`;
    const t = obj(entries[i], at);
    const priority = optEnum(t.priority, `${at}.priority`, ['DEFAULT', 'HIGH'] as const) ?? 'DEFAULT';
    if (priority !== 'DEFAULT') continue;
    return {
      maxConnections:
        optUintWrapper(t.max_connections, `${at}.max_connections`) ?? DEFAULT_THRESHOLDS.maxConnections,
      maxPendingRequests:
        optUintWrapper(t.max_pending_requests, `${at}.max_pending_requests`) ??
        DEFAULT_THRESHOLDS.maxPendingRequests,
      maxRequests: optUintWrapper(t.max_requests, `${at}.max_requests`) ?? DEFAULT_THRESHOLDS.maxRequests,
      maxRetries: optUintWrapper(t.max_retries, `${at}.max_retries`) ?? DEFAULT_THRESHOLDS.maxRetries,
    };
  }
  return { ...DEFAULT_THRESHOLDS };
}
