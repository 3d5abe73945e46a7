/**
 * Per-type validation for the xDS client: the same parsers MeshState uses, so
 * whatever is ACKed can be applied. Returns the NACK error_detail, or
 * undefined to accept.
 */
import { parseRouteConfiguration } from '../routing/config.js';
import { parseCluster } from './cluster.js';
import { parseEndpoints } from './endpoints.js';
import { parseListener } from './listener.js';
import type { ResourceSet } from './mesh-state.js';
import { parseCached } from './parse-cache.js';

const PARSERS: Record<string, (v: unknown, path: string) => unknown> = {
  'envoy.config.listener.v3.Listener': parseListener,
  'envoy.config.route.v3.RouteConfiguration': parseRouteConfiguration,
  'envoy.config.cluster.v3.Cluster': parseCluster,
  'envoy.config.endpoint.v3.ClusterLoadAssignment': parseEndpoints,
};

export function validateResources(typeUrl: string, resources: ResourceSet): string | undefined {
  const parse = PARSERS[typeUrl.slice(typeUrl.lastIndexOf('/') + 1)];
  if (!parse) return `sockmesh does not use resources of type ${typeUrl}`;
  const values: unknown[] = Array.isArray(resources)
    ? [...resources]
    : resources instanceof Map
      ? [...resources.values()]
      : Object.values(resources);
  const errors: string[] = [];
  values.forEach((v, i) => {
    try {
      parseCached(parse, v, `resources[${i}]`);
    } catch (err) {
      errors.push(err instanceof Error ? err.message : String(err));
    }
  });
  return errors.length === 0 ? undefined : errors.join('; ');
}
