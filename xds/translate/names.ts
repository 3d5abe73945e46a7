/**
 * Resource naming: one scheme shared by translation, the ADS server (which
 * resolves on-demand listener names) and the docs.
 */
import type { MeshModel, Service, ServicePort, ServiceRef } from '../model/types.js';
import { objectKey } from '../model/types.js';

export const OUTBOUND_LISTENER = 'sockmesh-outbound';
export const INBOUND_LISTENER = 'sockmesh-inbound';
export const OUTBOUND_PORT = 15001;
export const TUNNEL_PORT = 15008;
/** ORIGINAL_DST cluster: traffic to unknown destinations and inbound delivery to local pods. */
export const PASSTHROUGH_CLUSTER = 'sockmesh-passthrough';

export function serviceFqdn(model: Pick<MeshModel, 'clusterDomain'>, ref: ServiceRef): string {
  return `${ref.name}.${ref.namespace}.svc.${model.clusterDomain}`;
}

/** Istio-style `outbound|<port>||<fqdn>`; also the EDS service name. */
export function clusterName(model: Pick<MeshModel, 'clusterDomain'>, ref: ServiceRef, port: number): string {
  return `outbound|${port}||${serviceFqdn(model, ref)}`;
}

/** `<fqdn>:<port>`: the RouteConfiguration of an HTTP Service port, and its gRPC API listener. */
export function routeConfigName(
  model: Pick<MeshModel, 'clusterDomain'>,
  ref: ServiceRef,
  port: number,
): string {
  return `${serviceFqdn(model, ref)}:${port}`;
}

export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

export function isHttpPort(p: ServicePort): boolean {
  return p.protocol !== 'tcp';
}

/**
 * Resolves a listener name a proxyless gRPC client asks for (`xds:///<name>`):
 * `<svc>.<ns>.svc.<clusterDomain>:<port>` (canonical), `<svc>.<ns>.svc:<port>`,
 * `<svc>.<ns>:<port>`, `<svc>:<port>` (namespace `default`); the port may be
 * left out when the Service has exactly one HTTP port.
 */
export function resolveApiListenerName(
  model: MeshModel,
  name: string,
): { service: Service; port: ServicePort } | undefined {
  const m = /^([^:]+?)(?::(\d+))?$/.exec(name);
  if (!m) return undefined;
  const host = m[1]!;
  const portNum = m[2] === undefined ? undefined : Number(m[2]);
  const parts = host.split('.');
  let svcName: string | undefined;
  let ns = 'default';
  const suffix = `svc.${model.clusterDomain}`.split('.');
  if (parts.length === 1) svcName = parts[0];
  else if (parts.length === 2) [svcName, ns] = parts as [string, string];
  else if (parts.length === 3 && parts[2] === 'svc') [svcName, ns] = parts as [string, string];
  else if (parts.length === 2 + suffix.length && parts.slice(2).join('.') === suffix.join('.')) {
    [svcName, ns] = parts as [string, string];
  } else return undefined;
  const service = model.services.get(objectKey(ns, svcName!));
  if (!service) return undefined;
  const http = service.ports.filter(isHttpPort);
  const port =
    portNum === undefined ? (http.length === 1 ? http[0] : undefined) : http.find((p) => p.port === portNum);
  return port ? { service, port } : undefined;
}
