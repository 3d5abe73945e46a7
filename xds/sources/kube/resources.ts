/**
 * What the Kubernetes source watches, and the one place that turns an API
 * object into what the model reads. API objects carry what the server sets
 * (managedFields, resourceVersion, defaults such as ipFamilies, status the
 * kubelet writes); the model refuses unknown fields and should not re-run for
 * a heartbeat, so each kind is projected onto the fields sockmesh reads.
 * User-written objects (routes, policies) keep their whole spec, so a typo the
 * schema let through is still reported.
 */
import type { KubeObject } from './client.js';
import type { ResourceType } from './reflector.js';

export interface WatchedResource extends ResourceType {
  /** The CRD that serves it, when it is not built in (named in the "not installed" error). */
  crd?: string;
  /** Missing CRD: warn and go on without it rather than refuse to start. */
  optional?: boolean;
  /** The object as the model should see it; undefined leaves it out (not a mesh object). */
  project(obj: KubeObject): Record<string, unknown> | undefined;
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function meta(obj: KubeObject, withLabels: boolean): Obj {
  const m = obj.metadata ?? {};
  const out: Obj = { name: m.name };
  if (m.namespace !== undefined) out.namespace = m.namespace;
  if (withLabels && m.labels) out.labels = m.labels;
  return out;
}

function head(obj: KubeObject, withLabels = true): Obj {
  return { apiVersion: obj.apiVersion, kind: obj.kind, metadata: meta(obj, withLabels) };
}

function projectNamespace(obj: KubeObject): Obj {
  return head(obj);
}

function projectNode(obj: KubeObject): Obj {
  const status = isObj(obj.status) ? obj.status : {};
  const addresses = arr(status.addresses).filter(
    (a) => isObj(a) && (a.type === 'InternalIP' || a.type === 'ExternalIP'),
  );
  return { ...head(obj, false), status: { addresses } };
}

/** TCP ports only (the mesh carries TCP); no nodePort; an IPv4 VIP or none. */
function projectService(obj: KubeObject): Obj | undefined {
  const spec = isObj(obj.spec) ? obj.spec : {};
  if (spec.type === 'ExternalName') return undefined;
  const ports = arr(spec.ports)
    .filter((p): p is Obj => isObj(p) && (p.protocol === undefined || p.protocol === 'TCP'))
    .map((p) => {
      const out: Obj = { port: p.port };
      for (const k of ['name', 'targetPort', 'appProtocol', 'protocol'])
        if (p[k] !== undefined) out[k] = p[k];
      return out;
    });
  if (ports.length === 0) return undefined;
  const ips = [spec.clusterIP, ...arr(spec.clusterIPs)].filter((ip): ip is string => typeof ip === 'string');
  const clusterIP = ips.includes('None') ? 'None' : (ips.find((ip) => IPV4.test(ip)) ?? 'None');
  const out: Obj = { clusterIP, ports };
  if (isObj(spec.selector)) out.selector = spec.selector;
  return { ...head(obj, false), spec: out };
}

/** A pod that ended (Succeeded/Failed) gave its IP back: no endpoint, no inbound chain. */
function projectPod(obj: KubeObject): Obj {
  const spec = isObj(obj.spec) ? obj.spec : {};
  const status = isObj(obj.status) ? obj.status : {};
  const m = meta(obj, true);
  if (obj.metadata?.uid) m.uid = obj.metadata.uid;
  const containers = arr(spec.containers).map((c) => {
    const ports = arr(isObj(c) ? c.ports : undefined)
      .filter((p): p is Obj => isObj(p) && (p.protocol === undefined || p.protocol === 'TCP'))
      .map((p) =>
        p.name === undefined
          ? { containerPort: p.containerPort }
          : { name: p.name, containerPort: p.containerPort },
      );
    return { ports };
  });
  const outSpec: Obj = { containers };
  if (spec.serviceAccountName !== undefined) outSpec.serviceAccountName = spec.serviceAccountName;
  if (spec.nodeName !== undefined) outSpec.nodeName = spec.nodeName;
  const ended = status.phase === 'Succeeded' || status.phase === 'Failed';
  const ip = ended
    ? undefined
    : [status.podIP, ...arr(status.podIPs).map((p) => (isObj(p) ? p.ip : undefined))].find(
        (v): v is string => typeof v === 'string' && IPV4.test(v),
      );
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: m,
    spec: outSpec,
    status: ip ? { podIP: ip } : {},
  };
}

function projectEndpointSlice(obj: KubeObject): Obj | undefined {
  const service = obj.metadata?.labels?.['kubernetes.io/service-name'];
  if (service === undefined || obj.addressType !== 'IPv4') return undefined;
  const endpoints = arr(obj.endpoints)
    .filter(isObj)
    .map((e) => {
      const ref = isObj(e.targetRef) ? e.targetRef : undefined;
      return {
        addresses: arr(e.addresses).slice(0, 1),
        conditions: isObj(e.conditions) ? e.conditions : {},
        ...(ref ? { targetRef: { kind: ref.kind, name: ref.name, namespace: ref.namespace } } : {}),
      };
    });
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: {
      name: obj.metadata?.name,
      namespace: obj.metadata?.namespace,
      labels: { 'kubernetes.io/service-name': service },
    },
    addressType: obj.addressType,
    ports: arr(obj.ports),
    endpoints,
  };
}

/**
 * A route is sockmesh's when one of its parents is a Service (GAMMA); Gateway
 * parents belong to a gateway implementation and are left to it.
 */
function projectRoute(obj: KubeObject): Obj | undefined {
  const spec = isObj(obj.spec) ? obj.spec : undefined;
  if (!spec) return { ...head(obj, false) };
  const parents = arr(spec.parentRefs).filter((p) => isObj(p) && p.kind === 'Service');
  if (parents.length === 0) return undefined;
  return { ...head(obj, false), spec: { ...spec, parentRefs: parents } };
}

function projectPolicy(obj: KubeObject): Obj {
  return obj.spec === undefined ? head(obj, false) : { ...head(obj, false), spec: obj.spec };
}

export const GATEWAY_CRDS_HINT =
  'install the Gateway API standard CRDs (sigs.k8s.io/gateway-api v1.6.3, config/crd/standard/): kubectl apply -f <gateway-api>/config/crd/standard/';
export const SOCKMESH_CRDS_HINT = 'install the sockmesh CRDs: kubectl apply -f charts/sockmesh/files/crds/';

export const WATCHED: readonly WatchedResource[] = [
  {
    kind: 'Namespace',
    apiVersion: 'v1',
    path: '/api/v1/namespaces',
    namespaced: false,
    project: projectNamespace,
  },
  { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', namespaced: false, project: projectNode },
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', namespaced: true, project: projectService },
  { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods', namespaced: true, project: projectPod },
  {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    namespaced: true,
    project: projectEndpointSlice,
  },
  {
    kind: 'HTTPRoute',
    apiVersion: 'gateway.networking.k8s.io/v1',
    path: '/apis/gateway.networking.k8s.io/v1/httproutes',
    namespaced: true,
    crd: 'httproutes.gateway.networking.k8s.io',
    project: projectRoute,
  },
  {
    kind: 'GRPCRoute',
    apiVersion: 'gateway.networking.k8s.io/v1',
    path: '/apis/gateway.networking.k8s.io/v1/grpcroutes',
    namespaced: true,
    crd: 'grpcroutes.gateway.networking.k8s.io',
    // Standard channel since Gateway API v1.1: a cluster with older CRDs runs without GRPCRoutes.
    optional: true,
    project: projectRoute,
  },
  {
    kind: 'TCPRoute',
    apiVersion: 'gateway.networking.k8s.io/v1',
    path: '/apis/gateway.networking.k8s.io/v1/tcproutes',
    namespaced: true,
    crd: 'tcproutes.gateway.networking.k8s.io',
    optional: true,
    project: projectRoute,
  },
  {
    kind: 'TrafficPolicy',
    apiVersion: 'sockmesh.io/v1alpha1',
    path: '/apis/sockmesh.io/v1alpha1/trafficpolicies',
    namespaced: true,
    crd: 'trafficpolicies.sockmesh.io',
    project: projectPolicy,
  },
  {
    kind: 'AuthorizationPolicy',
    apiVersion: 'sockmesh.io/v1alpha1',
    path: '/apis/sockmesh.io/v1alpha1/authorizationpolicies',
    namespaced: true,
    crd: 'authorizationpolicies.sockmesh.io',
    project: projectPolicy,
  },
  {
    kind: 'CanaryGuard',
    apiVersion: 'sockmesh.io/v1alpha1',
    path: '/apis/sockmesh.io/v1alpha1/canaryguards',
    namespaced: true,
    crd: 'canaryguards.sockmesh.io',
    // A cluster whose chart predates CanaryGuard runs without guards.
    optional: true,
    project: projectPolicy,
  },
];

/** Collection path of one object (`.../namespaces/<ns>/<plural>/<name>`). */
export function objectPath(r: ResourceType, namespace: string | undefined, name: string): string {
  const plural = r.path.slice(r.path.lastIndexOf('/') + 1);
  const base = r.path.slice(0, r.path.lastIndexOf('/'));
  return r.namespaced
    ? `${base}/namespaces/${encodeURIComponent(namespace ?? 'default')}/${plural}/${encodeURIComponent(name)}`
    : `${base}/${plural}/${encodeURIComponent(name)}`;
}
