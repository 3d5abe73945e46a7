/** Clusters: one EDS cluster per Service port, shaped by the Service's TrafficPolicy. */
import type { MeshModel, Service, ServicePort, TrafficPolicy } from '../model/types.js';
import { objectKey } from '../model/types.js';
import { CLUSTER_TYPE } from '../protos.js';
import { adsConfigSource, duration, type Json, sockmeshMetadata, u32 } from './envoy.js';
import { clusterName, PASSTHROUGH_CLUSTER } from './names.js';

export function translateClusters(model: MeshModel): Json[] {
  const out: Json[] = [passthroughCluster()];
  for (const svc of model.services.values()) {
    const policy = model.trafficPolicies.get(objectKey(svc.namespace, svc.name));
    for (const port of svc.ports) out.push(serviceCluster(model, svc, port, policy));
  }
  return out;
}

function passthroughCluster(): Json {
  return {
    '@type': CLUSTER_TYPE,
    name: PASSTHROUGH_CLUSTER,
    type: 'ORIGINAL_DST',
    lb_policy: 'CLUSTER_PROVIDED',
  };
}

export function serviceCluster(
  model: MeshModel,
  svc: Service,
  port: ServicePort,
  policy: TrafficPolicy | undefined,
): Json {
  const name = clusterName(model, svc, port.port);
  const cluster: Json = {
    '@type': CLUSTER_TYPE,
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: adsConfigSource(), service_name: name },
    lb_policy: policy?.loadBalancer?.type ?? 'ROUND_ROBIN',
    common_lb_config: { locality_weighted_lb_config: {} },
    metadata: sockmeshMetadata({
      service: svc.name,
      namespace: svc.namespace,
      port: port.port,
      portName: port.name,
      protocol: port.protocol,
    }),
  };
  if (policy?.loadBalancer?.type === 'RING_HASH') cluster.ring_hash_lb_config = { hash_function: 'XX_HASH' };
  const cp = policy?.connectionPool;
  if (cp) {
    const t: Json = { priority: 'DEFAULT' };
    if (cp.maxConnections !== undefined) t.max_connections = u32(cp.maxConnections);
    if (cp.maxPendingRequests !== undefined) t.max_pending_requests = u32(cp.maxPendingRequests);
    if (cp.maxRequests !== undefined) t.max_requests = u32(cp.maxRequests);
    if (cp.maxRetries !== undefined) t.max_retries = u32(cp.maxRetries);
    cluster.circuit_breakers = { thresholds: [t] };
  }
  const od = policy?.outlierDetection;
  if (od) {
    const o: Json = {};
    if (od.consecutive5xx !== undefined) o.consecutive_5xx = u32(od.consecutive5xx);
    if (od.consecutiveGatewayErrors !== undefined) {
      o.consecutive_gateway_failure = u32(od.consecutiveGatewayErrors);
      // Envoy enforces gateway-failure ejection at 0% unless told otherwise.
      o.enforcing_consecutive_gateway_failure = u32(100);
    }
    if (od.interval !== undefined) o.interval = duration(od.interval);
    if (od.baseEjectionTime !== undefined) o.base_ejection_time = duration(od.baseEjectionTime);
    if (od.maxEjectionPercent !== undefined) o.max_ejection_percent = u32(od.maxEjectionPercent);
    cluster.outlier_detection = o;
  }
  return cluster;
}
