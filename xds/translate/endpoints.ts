/**
 * ClusterLoadAssignments: the pods behind each Service port, grouped by node
 * (locality zone = node name), each carrying what the agent needs to reach it
 * (pod IP, the node's tunnel address, the workload's SPIFFE ID).
 */
import type { MeshModel, Service, ServicePort, SliceEndpoint, Workload } from '../model/types.js';
import { ENDPOINT_TYPE } from '../protos.js';
import { type Json, socketAddress, sockmeshMetadata, u32 } from './envoy.js';
import { clusterName, spiffeId, TUNNEL_PORT } from './names.js';

export function selects(
  selector: Readonly<Record<string, string>>,
  labels: Readonly<Record<string, string>>,
): boolean {
  const keys = Object.keys(selector);
  if (keys.length === 0) return false; // Kubernetes: a Service without selector has no managed endpoints
  return keys.every((k) => labels[k] === selector[k]);
}

/**
 * Pods per namespace with a label index, so selecting the pods of N Services
 * costs about the number of matches rather than N x pods.
 */
export class PodIndex {
  private readonly byNs = new Map<string, Workload[]>();
  private readonly byLabel = new Map<string, Workload[]>();

  constructor(model: MeshModel) {
    const sorted = [...model.workloads.values()].sort((a, b) =>
      a.namespace === b.namespace ? (a.name < b.name ? -1 : 1) : a.namespace < b.namespace ? -1 : 1,
    );
    for (const w of sorted) {
      push(this.byNs, w.namespace, w);
      for (const [k, v] of Object.entries(w.labels)) push(this.byLabel, `${w.namespace}\0${k}\0${v}`, w);
    }
  }

  namespaces(): IterableIterator<[string, Workload[]]> {
    return this.byNs.entries();
  }

  /** Pods in `namespace` matching every selector label, in name order; none for an empty selector. */
  select(namespace: string, selector: Readonly<Record<string, string>>): Workload[] {
    let best: Workload[] | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const list = this.byLabel.get(`${namespace}\0${k}\0${v}`) ?? [];
      if (!best || list.length < best.length) best = list;
    }
    return best ? best.filter((w) => selects(selector, w.labels)) : [];
  }
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

export function isMeshed(model: MeshModel, w: Workload): boolean {
  return model.namespaces.get(w.namespace)?.meshed === true;
}

function targetPortOf(port: ServicePort, w: Workload): number | undefined {
  return typeof port.targetPort === 'number' ? port.targetPort : w.namedPorts[port.targetPort];
}

export function workloadMetadata(model: MeshModel, w: Workload): Record<string, unknown> {
  const node = w.node === undefined ? undefined : model.nodes.get(w.node);
  return {
    pod: w.name,
    namespace: w.namespace,
    node: w.node,
    podIp: w.ip,
    tunnelAddress: node?.address === undefined ? undefined : `${node.address}:${TUNNEL_PORT}`,
    spiffeId: spiffeId(model.trustDomain, w.namespace, w.serviceAccount),
    serviceAccount: w.serviceAccount,
    version: w.labels.version,
    meshed: isMeshed(model, w),
    // Only said when it differs from the default, so strict meshes translate as before.
    mtlsMode: model.namespaces.get(w.namespace)?.mtlsMode === 'permissive' ? 'permissive' : undefined,
  };
}

export function translateEndpoints(model: MeshModel, pods: PodIndex): Json[] {
  const out: Json[] = [];
  for (const svc of model.services.values()) {
    if (svc.endpoints) {
      for (const port of svc.ports)
        out.push(loadAssignment(model, svc, port, sliceTargets(model, svc, port)));
      continue;
    }
    const selected = pods.select(svc.namespace, svc.selector).filter((w) => w.ip !== undefined);
    for (const port of svc.ports) {
      const targets: Target[] = [];
      for (const w of selected) {
        const target = targetPortOf(port, w);
        // named targetPort the pod does not declare: not an endpoint (as in Kubernetes)
        if (target !== undefined) targets.push({ w, ip: w.ip!, port: target });
      }
      out.push(loadAssignment(model, svc, port, targets));
    }
  }
  return out;
}

interface Target {
  w: Workload;
  ip: string;
  port: number;
}

/**
 * kube-proxy's choice among a Service port's slice endpoints: the ready ones;
 * when none is ready, the ones still serving while terminating (so a rollout's
 * last pods finish their connections rather than the Service going dark).
 */
export function usableEndpoints(endpoints: readonly SliceEndpoint[]): SliceEndpoint[] {
  const ready = endpoints.filter((e) => e.ready);
  return ready.length > 0 ? ready : endpoints.filter((e) => e.serving && e.terminating);
}

function sliceTargets(model: MeshModel, svc: Service, port: ServicePort): Target[] {
  const withPort = (svc.endpoints ?? []).filter((e) => e.ports[port.name ?? ''] !== undefined);
  const out: Target[] = [];
  for (const e of usableEndpoints(withPort)) {
    const w = model.workloads.get(e.pod);
    if (w) out.push({ w, ip: e.ip, port: e.ports[port.name ?? '']! });
  }
  return out.sort((a, b) => (a.w.name < b.w.name ? -1 : a.w.name > b.w.name ? 1 : 0));
}

function loadAssignment(model: MeshModel, svc: Service, port: ServicePort, targets: Target[]): Json {
  const byNode = new Map<string, Json[]>();
  for (const { w, ip, port: target } of targets) {
    const zone = w.node ?? '';
    let list = byNode.get(zone);
    if (!list) {
      list = [];
      byNode.set(zone, list);
    }
    list.push({
      endpoint: { address: socketAddress(ip, target) },
      metadata: sockmeshMetadata(workloadMetadata(model, w.ip === ip ? w : { ...w, ip })),
    });
  }
  const endpoints = [...byNode.keys()].sort().map((zone) => ({
    locality: zone === '' ? {} : { zone },
    lb_endpoints: byNode.get(zone)!,
    load_balancing_weight: u32(byNode.get(zone)!.length),
  }));
  return { '@type': ENDPOINT_TYPE, cluster_name: clusterName(model, svc, port.port), endpoints };
}
