/** envoy.config.cluster.v3.Cluster: the per-cluster settings the proxy applies. */
import type { BalancerSettings, LbPolicy } from '../balancer/create.js';
import type { Endpoint } from '../balancer/types.js';
import { type BreakerThresholds, parseCircuitBreakers } from '../breaker/thresholds.js';
import { type OutlierConfig, parseOutlierDetection } from '../outlier/config.js';
import { parseEndpoints } from './endpoints.js';
import {
  decodeError,
  obj,
  optDurationMs,
  optEnum,
  optStr,
  optUintWrapper,
  type PlainValue,
  sockmeshMetadata,
  str,
} from './wire.js';

export type DiscoveryType = 'STATIC' | 'STRICT_DNS' | 'LOGICAL_DNS' | 'EDS' | 'ORIGINAL_DST';

/** Envoy's connect_timeout default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

export interface ClusterSettings {
  name: string;
  discovery: DiscoveryType;
  /** The ClusterLoadAssignment name for EDS clusters. */
  edsServiceName: string;
  balancer: BalancerSettings;
  connectTimeoutMs: number;
  breaker: BreakerThresholds;
  /** Undefined: outlier detection is off for this cluster. */
  outlier: OutlierConfig | undefined;
  /** Endpoints given inline (load_assignment) for non-EDS clusters. */
  inlineEndpoints: readonly Endpoint[] | undefined;
  /** The cluster's `filter_metadata.sockmesh` (e.g. service, namespace, port, protocol). */
  meta: Readonly<Record<string, PlainValue>>;
}

const DISCOVERY: readonly DiscoveryType[] = ['STATIC', 'STRICT_DNS', 'LOGICAL_DNS', 'EDS', 'ORIGINAL_DST'];
const LB_POLICIES = [
  'ROUND_ROBIN',
  'LEAST_REQUEST',
  'RING_HASH',
  'RANDOM',
  'MAGLEV',
  'CLUSTER_PROVIDED',
  'LOAD_BALANCING_POLICY_CONFIG',
] as const;

export function parseCluster(v: unknown, path = 'Cluster'): ClusterSettings {
  const c = obj(v, path);
  const name = str(c.name, `${path}.name`);
  const at = `Cluster ${JSON.stringify(name)}`;
  if (c.cluster_type != null)
    throw decodeError(`${at}.cluster_type`, 'custom cluster types are not supported');
  if (c.load_balancing_policy != null) {
    throw decodeError(`${at}.load_balancing_policy`, 'is not supported by sockmesh; set lb_policy instead');
  }
  const discovery = optEnum(c.type, `${at}.type`, DISCOVERY) ?? 'STATIC';
  const lb = optEnum(c.lb_policy, `${at}.lb_policy`, LB_POLICIES) ?? 'ROUND_ROBIN';
  if (lb !== 'ROUND_ROBIN' && lb !== 'LEAST_REQUEST' && lb !== 'RING_HASH' && discovery !== 'ORIGINAL_DST') {
    throw decodeError(
      `${at}.lb_policy`,
      `${lb} is not supported (use ROUND_ROBIN, LEAST_REQUEST or RING_HASH)`,
    );
  }
  const balancer: BalancerSettings = {
    policy: lb === 'LEAST_REQUEST' || lb === 'RING_HASH' ? (lb as LbPolicy) : 'ROUND_ROBIN',
  };
  if (c.ring_hash_lb_config != null) {
    const r = obj(c.ring_hash_lb_config, `${at}.ring_hash_lb_config`);
    const minRingSize = optUintWrapper(
      r.minimum_ring_size,
      `${at}.ring_hash_lb_config.minimum_ring_size`,
      8_388_608,
    );
    const maxRingSize = optUintWrapper(
      r.maximum_ring_size,
      `${at}.ring_hash_lb_config.maximum_ring_size`,
      8_388_608,
    );
    if (minRingSize !== undefined && maxRingSize !== undefined && minRingSize > maxRingSize) {
      throw decodeError(`${at}.ring_hash_lb_config`, 'minimum_ring_size is above maximum_ring_size');
    }
    balancer.ringHash = {
      ...(minRingSize ? { minRingSize } : {}),
      ...(maxRingSize ? { maxRingSize } : {}),
    };
  }
  if (c.least_request_lb_config != null) {
    const l = obj(c.least_request_lb_config, `${at}.least_request_lb_config`);
    const choiceCount = optUintWrapper(l.choice_count, `${at}.least_request_lb_config.choice_count`);
    if (choiceCount !== undefined) {
      if (choiceCount < 2)
        throw decodeError(`${at}.least_request_lb_config.choice_count`, 'must be at least 2');
      balancer.choiceCount = choiceCount;
    }
  }
  let edsServiceName = name;
  if (c.eds_cluster_config != null) {
    const e = obj(c.eds_cluster_config, `${at}.eds_cluster_config`);
    edsServiceName = optStr(e.service_name, `${at}.eds_cluster_config.service_name`) || name;
  }
  return {
    name,
    discovery,
    edsServiceName,
    balancer,
    connectTimeoutMs: optDurationMs(c.connect_timeout, `${at}.connect_timeout`) ?? DEFAULT_CONNECT_TIMEOUT_MS,
    breaker: parseCircuitBreakers(c.circuit_breakers, `${at}.circuit_breakers`),
    outlier: parseOutlierDetection(c.outlier_detection, `${at}.outlier_detection`),
    inlineEndpoints:
      c.load_assignment == null
        ? undefined
        : parseEndpoints(c.load_assignment, `${at}.load_assignment`).endpoints,
    meta: sockmeshMetadata(c.metadata, `${at}.metadata`),
  };
}
