/**
 * Model -> Envoy v3 resources. Pure functions: the same model and node always
 * give the same resources (golden-tested). The node-independent part is
 * computed once per model and shared by every node.
 */
import type { MeshModel, Workload } from '../model/types.js';
import { translateClusters } from './clusters.js';
import { PodIndex, translateEndpoints } from './endpoints.js';
import type { Json } from './envoy.js';
import { apiListener, attachedTcpRoutes, inboundListener, outboundListener } from './listeners.js';
import { resolveApiListenerName } from './names.js';
import { attachedRoutes, translateRoutes } from './routes.js';

export interface NodeResources {
  listeners: Json[];
  routes: Json[];
  clusters: Json[];
  endpoints: Json[];
}

/** What every node shares. */
export interface MeshTranslation {
  outboundListener: Json;
  routes: Json[];
  clusters: Json[];
  endpoints: Json[];
  /** Pods per node, for the per-node inbound listener. */
  podsByNode: ReadonlyMap<string, Workload[]>;
}

export function translateMesh(model: MeshModel): MeshTranslation {
  const pods = new PodIndex(model);
  const podsByNode = new Map<string, Workload[]>();
  for (const [, list] of pods.namespaces()) {
    for (const w of list) {
      if (w.node === undefined) continue;
      let l = podsByNode.get(w.node);
      if (!l) {
        l = [];
        podsByNode.set(w.node, l);
      }
      l.push(w);
    }
  }
  // Which Service ports TCPRoutes claim decides both the listener's chains and which ports get routes.
  const tcpRoutes = attachedTcpRoutes(model);
  return {
    outboundListener: outboundListener(model, tcpRoutes),
    routes: translateRoutes(model, attachedRoutes(model), tcpRoutes),
    clusters: translateClusters(model),
    endpoints: translateEndpoints(model, pods),
    podsByNode,
  };
}

export function translateInbound(model: MeshModel, shared: MeshTranslation, node: string): Json {
  return inboundListener(model, node, shared.podsByNode.get(node) ?? []);
}

/** The API listener for a gRPC target name, or undefined when it names no HTTP Service port. */
export function translateApiListener(model: MeshModel, name: string): Json | undefined {
  const hit = resolveApiListenerName(model, name);
  return hit ? apiListener(model, name, hit.service, hit.port) : undefined;
}

/** Everything one node receives on wildcard subscriptions. */
export function translateForNode(model: MeshModel, node: string): NodeResources {
  const shared = translateMesh(model);
  return {
    listeners: [shared.outboundListener, translateInbound(model, shared, node)],
    routes: shared.routes,
    clusters: shared.clusters,
    endpoints: shared.endpoints,
  };
}
