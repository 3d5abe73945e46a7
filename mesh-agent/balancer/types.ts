/** What every load balancer picks from and how it is asked. */

/** The `filter_metadata.sockmesh` fields the control plane attaches to an endpoint. */
export interface EndpointMeta {
  pod?: string;
  namespace?: string;
  node?: string;
  podIp?: string;
  /** `ip:port` of the destination node's tunnel listener (15008). */
  tunnelAddress?: string;
  spiffeId?: string;
  version?: string;
  serviceAccount?: string;
}

export interface Locality {
  region?: string;
  zone?: string;
  subZone?: string;
}

export interface Endpoint {
  /** `ip:port` (IPv6 as `[ip]:port`); stable identity across snapshots. */
  key: string;
  address: string;
  port: number;
  locality: Locality;
  /** From health_status: HEALTHY or UNKNOWN count as healthy, as in Envoy. */
  healthy: boolean;
  /** load_balancing_weight, default 1. */
  weight: number;
  meta: EndpointMeta;
}

export interface PickContext {
  /** Ring hash key (from the route's hash policy); ignored by other policies. */
  hashKey?: string | undefined;
  /** Endpoints to avoid if possible (e.g. the hosts a retry already tried). */
  avoid?: ReadonlySet<string> | undefined;
}

export interface LoadBalancer {
  readonly policy: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RING_HASH';
  /** An endpoint, or null when none is healthy and not ejected. */
  pick(ctx?: PickContext): Endpoint | null;
}

/** Outlier ejection state as the balancers see it. */
export interface EjectionView {
  isEjected(endpointKey: string): boolean;
}

export const NO_EJECTIONS: EjectionView = { isEjected: () => false };
