/** envoy.config.endpoint.v3.ClusterLoadAssignment into balancer endpoints. */
import type { Endpoint, EndpointMeta, Locality } from '../balancer/types.js';
import { ipToBigInt } from './cidr.js';
import {
  decodeError,
  list,
  obj,
  optEnum,
  optStr,
  optUint,
  optUintWrapper,
  sockmeshMetadata,
  str,
} from './wire.js';

const HEALTH = ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'] as const;
const META_KEYS: ReadonlyArray<keyof EndpointMeta> = [
  'pod',
  'namespace',
  'node',
  'podIp',
  'tunnelAddress',
  'spiffeId',
  'version',
  'serviceAccount',
];

export interface LoadAssignment {
  clusterName: string;
  endpoints: readonly Endpoint[];
}

/**
 * Endpoints of every locality and priority, flattened (sockmesh does not use
 * priorities). Duplicate addresses are an error, as the key must be unique.
 */
export function parseEndpoints(v: unknown, path = 'ClusterLoadAssignment'): LoadAssignment {
  const cla = obj(v, path);
  const clusterName = optStr(cla.cluster_name, `${path}.cluster_name`) ?? '';
  const at = clusterName ? `ClusterLoadAssignment ${JSON.stringify(clusterName)}` : path;
  const out: Endpoint[] = [];
  const seen = new Set<string>();
  list(cla.endpoints, `${at}.endpoints`).forEach((l, i) => {
    const lp = `${at}.endpoints[${i}]`;
    const lle = obj(l, lp);
    const locality: Locality = {};
    if (lle.locality != null) {
      const loc = obj(lle.locality, `${lp}.locality`);
      const region = optStr(loc.region, `${lp}.locality.region`);
      const zone = optStr(loc.zone, `${lp}.locality.zone`);
      const subZone = optStr(loc.sub_zone, `${lp}.locality.sub_zone`);
      if (region) locality.region = region;
      if (zone) locality.zone = zone;
      if (subZone) locality.subZone = subZone;
    }
    list(lle.lb_endpoints, `${lp}.lb_endpoints`).forEach((e, j) => {
      const ep = parseLbEndpoint(e, `${lp}.lb_endpoints[${j}]`, locality);
      if (seen.has(ep.key)) throw decodeError(`${lp}.lb_endpoints[${j}]`, `duplicate endpoint ${ep.key}`);
      seen.add(ep.key);
      out.push(ep);
    });
  });
  return { clusterName, endpoints: out };
}

function parseLbEndpoint(v: unknown, path: string, locality: Locality): Endpoint {
  const e = obj(v, path);
  const endpoint = obj(e.endpoint, `${path}.endpoint`);
  const addr = obj(endpoint.address, `${path}.endpoint.address`);
  if (addr.socket_address == null)
    throw decodeError(`${path}.endpoint.address`, 'only socket_address is supported');
  const sa = obj(addr.socket_address, `${path}.endpoint.address.socket_address`);
  const address = str(sa.address, `${path}.endpoint.address.socket_address.address`);
  const ip = ipToBigInt(address);
  if (!ip)
    throw decodeError(`${path}.endpoint.address.socket_address.address`, `not an IP address: ${address}`);
  const port = optUint(sa.port_value, `${path}.endpoint.address.socket_address.port_value`, 65535) ?? 0;
  if (port === 0) throw decodeError(`${path}.endpoint.address.socket_address.port_value`, 'must be 1..65535');
  const health = optEnum(e.health_status, `${path}.health_status`, HEALTH) ?? 'UNKNOWN';
  const weight = optUintWrapper(e.load_balancing_weight, `${path}.load_balancing_weight`) ?? 1;
  if (weight === 0) throw decodeError(`${path}.load_balancing_weight`, 'must be at least 1');
  return {
    key: ip.family === 6 ? `[${address}]:${port}` : `${address}:${port}`,
    address,
    port,
    locality,
    healthy: health === 'UNKNOWN' || health === 'HEALTHY' || health === 'DEGRADED',
    weight,
    meta: parseMeta(e.metadata, `${path}.metadata`),
  };
}

function parseMeta(v: unknown, path: string): EndpointMeta {
  const plain = sockmeshMetadata(v, path);
  const meta: EndpointMeta = {};
  for (const k of META_KEYS) {
    const val = plain[k];
    if (val === undefined || val === null) continue;
    if (typeof val !== 'string')
      throw decodeError(`${path}.filter_metadata.sockmesh.${k}`, 'expected a string');
    meta[k] = val;
  }
  return meta;
}
