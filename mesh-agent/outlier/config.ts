/** envoy.config.cluster.v3.OutlierDetection (the consecutive-error part) with Envoy's defaults. */
import { decodeError, obj, optBoolWrapper, optDurationMs, optUintWrapper } from '../state/wire.js';

export interface OutlierConfig {
  consecutive5xx: number;
  consecutiveGatewayFailure: number;
  /** Percent chance that a detected outlier is actually ejected. */
  enforcingConsecutive5xx: number;
  enforcingConsecutiveGatewayFailure: number;
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionTimeMs: number;
  maxEjectionPercent: number;
}

/**
 * Envoy's documented defaults. Note enforcing_consecutive_gateway_failure
 * defaults to 0: gateway failures are only counted, not ejected on, unless the
 * control plane sets it (they still count as 5xx for consecutive_5xx).
 */
export const DEFAULT_OUTLIER: Readonly<OutlierConfig> = Object.freeze({
  consecutive5xx: 5,
  consecutiveGatewayFailure: 5,
  enforcingConsecutive5xx: 100,
  enforcingConsecutiveGatewayFailure: 0,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 10,
});

function percent(v: unknown, path: string): number | undefined {
  const n = optUintWrapper(v, path);
  if (n !== undefined && n > 100) throw decodeError(path, `must be 0..100, got ${n}`);
  return n;
}

function positiveMs(v: unknown, path: string): number | undefined {
  const ms = optDurationMs(v, path);
  if (ms !== undefined && ms <= 0) throw decodeError(path, 'must be greater than zero');
  return ms;
}

/** Undefined when the cluster has no outlier_detection (detection off, as in Envoy). */
export function parseOutlierDetection(v: unknown, path: string): OutlierConfig | undefined {
  if (v === undefined || v === null) return undefined;
  const o = obj(v, path);
  if (
    optBoolWrapper(o.split_external_local_origin_errors, `${path}.split_external_local_origin_errors`) ===
    true
  ) {
    throw decodeError(`${path}.split_external_local_origin_errors`, 'is not supported by sockmesh');
  }
  const d = DEFAULT_OUTLIER;
  const cfg: OutlierConfig = {
    consecutive5xx: optUintWrapper(o.consecutive_5xx, `${path}.consecutive_5xx`) ?? d.consecutive5xx,
    consecutiveGatewayFailure:
      optUintWrapper(o.consecutive_gateway_failure, `${path}.consecutive_gateway_failure`) ??
      d.consecutiveGatewayFailure,
    enforcingConsecutive5xx:
      percent(o.enforcing_consecutive_5xx, `${path}.enforcing_consecutive_5xx`) ?? d.enforcingConsecutive5xx,
    enforcingConsecutiveGatewayFailure:
      percent(o.enforcing_consecutive_gateway_failure, `${path}.enforcing_consecutive_gateway_failure`) ??
      d.enforcingConsecutiveGatewayFailure,
    intervalMs: positiveMs(o.interval, `${path}.interval`) ?? d.intervalMs,
    baseEjectionTimeMs:
      positiveMs(o.base_ejection_time, `${path}.base_ejection_time`) ?? d.baseEjectionTimeMs,
    maxEjectionTimeMs: positiveMs(o.max_ejection_time, `${path}.max_ejection_time`) ?? d.maxEjectionTimeMs,
    maxEjectionPercent:
      percent(o.max_ejection_percent, `${path}.max_ejection_percent`) ?? d.maxEjectionPercent,
  };
  return cfg;
}
