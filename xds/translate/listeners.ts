/**
 * Listeners:
 * - `sockmesh-outbound` (same for every node): a filter chain per Service
 *   VIP:port; HTTP ports use an HttpConnectionManager with RDS, TCP ports a
 *   tcp_proxy (weighted when a TCPRoute splits it); a port that does not
 *   declare its protocol gets both, the HTTP chain matching the detected
 *   application protocols (Istio's layout); anything else passes through.
 * - `sockmesh-inbound` (per node): a filter chain per meshed pod on that node
 *   (this is how the agent learns mesh membership), with the pod's RBAC.
 * - API listeners named `<fqdn>:<port>`, for proxyless gRPC clients.
 */
import type { MeshModel, Service, ServicePort, TcpRoute, Workload } from '../model/types.js';
import { objectKey, portMode } from '../model/types.js';
import { HCM_TYPE, LISTENER_TYPE, ROUTER_TYPE, TCP_PROXY_TYPE } from '../protos.js';
import { isMeshed, workloadMetadata } from './endpoints.js';
import { adsConfigSource, cidr, duration, type Json, socketAddress, sockmeshMetadata } from './envoy.js';
import { KERNEL_POLICY_KEY, kernelPolicyMetadata } from './kernel-policy.js';
import {
  clusterName,
  INBOUND_LISTENER,
  isHttpPort,
  OUTBOUND_LISTENER,
  OUTBOUND_PORT,
  PASSTHROUGH_CLUSTER,
  routeConfigName,
  TUNNEL_PORT,
} from './names.js';
import { rbacFilter, rbacFilters } from './rbac.js';

function httpConnectionManager(statPrefix: string, routeName: string): Json {
  return {
    '@type': HCM_TYPE,
    stat_prefix: statPrefix,
    rds: { config_source: adsConfigSource(), route_config_name: routeName },
    // The router must be the last HTTP filter (grpc-js-xds rejects anything else).
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER_TYPE } }],
  };
}

function tcpProxy(statPrefix: string, target: Json, idleMs: number | undefined): Json {
  const cfg: Json = { '@type': TCP_PROXY_TYPE, stat_prefix: statPrefix, ...target };
  if (idleMs !== undefined) cfg.idle_timeout = duration(idleMs);
  return { name: 'envoy.filters.network.tcp_proxy', typed_config: cfg };
}

/** The application protocols the agent detects on a port that does not declare one (Istio's list). */
const DETECTED_HTTP_PROTOCOLS = ['http/1.0', 'http/1.1', 'h2c'];

/** A port whose protocol is detected: undeclared, and no TCPRoute claims it as TCP. */
export function detectsProtocol(
  svc: Service,
  port: ServicePort,
  tcpRoutes: ReadonlyMap<string, TcpRoute>,
): boolean {
  return portMode(port) === 'detect' && !tcpRoutes.has(`${objectKey(svc.namespace, svc.name)}:${port.port}`);
}

/** TCPRoutes claiming each TCP Service port. */
export function attachedTcpRoutes(model: MeshModel): Map<string, TcpRoute> {
  const out = new Map<string, TcpRoute>();
  for (const route of model.tcpRoutes) {
    for (const parent of route.parents) {
      const svc = model.services.get(objectKey(parent.service.namespace, parent.service.name));
      for (const port of svc?.ports ?? []) {
        if (isHttpPort(port) || (parent.port !== undefined && parent.port !== port.port)) continue;
        out.set(`${objectKey(parent.service.namespace, parent.service.name)}:${port.port}`, route);
      }
    }
  }
  return out;
}

function outboundChain(
  model: MeshModel,
  svc: Service,
  port: ServicePort,
  tcpRoutes: ReadonlyMap<string, TcpRoute>,
  /** The port's protocol is detected: this chain is the TCP or (as 'http') the HTTP one of a pair. */
  detect: boolean,
  as: 'http' | 'tcp' = isHttpPort(port) ? 'http' : 'tcp',
): Json {
  const name = clusterName(model, svc, port.port);
  const statPrefix = `outbound_${svc.namespace}_${svc.name}_${port.port}`;
  let filter: Json;
  if (as === 'http') {
    filter = {
      name: 'envoy.filters.network.http_connection_manager',
      typed_config: httpConnectionManager(statPrefix, routeConfigName(model, svc, port.port)),
    };
  } else {
    const route = tcpRoutes.get(`${objectKey(svc.namespace, svc.name)}:${port.port}`);
    const live = route?.backends.filter((b) => b.weight > 0) ?? [];
    let target: Json;
    if (!route) target = { cluster: name };
    else if (live.length === 1) target = { cluster: clusterName(model, live[0]!.service, live[0]!.port) };
    else if (live.length > 1) {
      target = {
        weighted_clusters: {
          clusters: live.map((b) => ({ name: clusterName(model, b.service, b.port), weight: b.weight })),
        },
      };
    } else target = { cluster: name }; // every backend at weight 0: tcp_proxy cannot express "reject", keep the Service
    const idle = model.trafficPolicies.get(objectKey(svc.namespace, svc.name))?.timeouts?.idle;
    filter = tcpProxy(statPrefix, target, idle);
  }
  return {
    name: detect && as === 'http' ? `${name}|http` : name,
    filter_chain_match: {
      destination_port: { value: port.port },
      prefix_ranges: [cidr(svc.clusterIP!)],
      ...(detect && as === 'http' ? { application_protocols: DETECTED_HTTP_PROTOCOLS } : {}),
    },
    filters: [filter],
    metadata: sockmeshMetadata({
      service: svc.name,
      namespace: svc.namespace,
      port: port.port,
      // `auto`: not declared, detected per connection (Istio's term).
      protocol: detect ? 'auto' : port.protocol,
    }),
  };
}

export function outboundListener(model: MeshModel, tcpRoutes: ReadonlyMap<string, TcpRoute>): Json {
  const chains: Json[] = [];
  for (const svc of model.services.values()) {
    if (svc.clusterIP === undefined) continue; // headless: nothing to capture
    for (const port of svc.ports) {
      const detect = detectsProtocol(svc, port, tcpRoutes);
      chains.push(outboundChain(model, svc, port, tcpRoutes, detect));
      if (detect) chains.push(outboundChain(model, svc, port, tcpRoutes, detect, 'http'));
    }
  }
  return {
    '@type': LISTENER_TYPE,
    name: OUTBOUND_LISTENER,
    address: socketAddress('0.0.0.0', OUTBOUND_PORT),
    traffic_direction: 'OUTBOUND',
    filter_chains: chains,
    default_filter_chain: {
      name: 'passthrough',
      filters: [tcpProxy('outbound_passthrough', { cluster: PASSTHROUGH_CLUSTER }, undefined)],
    },
    // The L4 authorization each caller's kernel enforces at connect (kernel-policy.ts).
    metadata: sockmeshMetadata({ [KERNEL_POLICY_KEY]: kernelPolicyMetadata(model) }),
  };
}

export function inboundListener(model: MeshModel, node: string, localPods: readonly Workload[]): Json {
  const chains: Json[] = [];
  for (const w of localPods) {
    if (!isMeshed(model, w) || w.ip === undefined) continue;
    const statPrefix = `inbound_${w.namespace}_${w.name}_`;
    chains.push({
      name: `inbound|${objectKey(w.namespace, w.name)}`,
      filter_chain_match: { prefix_ranges: [cidr(w.ip)] },
      filters: [
        ...rbacFilters(model, w, statPrefix),
        tcpProxy(statPrefix, { cluster: PASSTHROUGH_CLUSTER }, undefined),
      ],
      // uid and QoS class only on the node's own pods: its agent finds their kubelet cgroups by them.
      metadata: sockmeshMetadata({ ...workloadMetadata(model, w), uid: w.uid, qosClass: w.qosClass }),
    });
  }
  const address = model.nodes.get(node)?.address;
  return {
    '@type': LISTENER_TYPE,
    name: INBOUND_LISTENER,
    address: socketAddress(address ?? '0.0.0.0', TUNNEL_PORT),
    traffic_direction: 'INBOUND',
    filter_chains: chains,
    // A destination that is not a meshed pod of this node is refused (ALLOW with no policy denies all).
    default_filter_chain: {
      name: 'unknown-destination',
      filters: [
        rbacFilter('ALLOW', {}, 'inbound_unknown_'),
        tcpProxy('inbound_unknown', { cluster: PASSTHROUGH_CLUSTER }, undefined),
      ],
    },
    metadata: sockmeshMetadata({ node, address }),
  };
}

/** The listener a proxyless gRPC client resolves for `xds:///<name>`. */
export function apiListener(model: MeshModel, name: string, svc: Service, port: ServicePort): Json {
  return {
    '@type': LISTENER_TYPE,
    name,
    api_listener: {
      api_listener: httpConnectionManager(
        `api_${svc.namespace}_${svc.name}_${port.port}`,
        routeConfigName(model, svc, port.port),
      ),
    },
  };
}
