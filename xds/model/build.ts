/**
 * All declared objects -> one validated MeshModel, or every error found, each
 * also filed under the object it belongs to. Whether an invalid set is
 * rejected as a whole (a directory) or object by object (an API server) is
 * the caller's policy: see accept.ts.
 */
import type { ConfigError, SourceObject } from '../sources/source.js';
import { type DeclaredCanaryGuard, decodeCanaryGuard, resolveCanaryGuards } from './canary.js';
import {
  type DeclaredAuthorizationPolicy,
  type DeclaredBackend,
  type DeclaredEndpointSlice,
  type DeclaredHttpRoute,
  type DeclaredParent,
  type DeclaredTcpRoute,
  type DeclaredTrafficPolicy,
  decodeAuthorizationPolicy,
  decodeCoreNode,
  decodeEndpointSlice,
  decodeGrpcRoute,
  decodeHttpRoute,
  decodeNamespace,
  decodeNode,
  decodePod,
  decodeService,
  decodeTcpRoute,
  decodeTrafficPolicy,
  type Meta,
  readMeta,
  type WrittenRef,
} from './kinds.js';
import { FieldReader, quote } from './reader.js';
import { schemaErrors } from './schema.js';
import {
  type AuthorizationPolicy,
  type BackendRef,
  type HttpRoute,
  type HttpRouteKind,
  type MeshModel,
  type MeshNode,
  type Namespace,
  type ObjectKey,
  objectKey,
  type ParentRef,
  portMode,
  type Service,
  type ServiceRef,
  type SliceEndpoint,
  type TcpRoute,
  type TrafficPolicy,
  type Workload,
} from './types.js';

export interface ModelOptions {
  /** SPIFFE trust domain; default `cluster.local`. */
  trustDomain?: string;
  /** Service DNS suffix; default `cluster.local`. */
  clusterDomain?: string;
  /** Node name -> underlay IP, e.g. from the test bed; manifests' Node objects win. */
  nodes?: Readonly<Record<string, string>>;
  /** Pod IPs known outside the manifests (the test bed); a manifest's status.podIP wins. */
  podIp?: (namespace: string, name: string) => string | undefined;
  /**
   * `EndpointSlice`: every Service's endpoints are those of its EndpointSlices
   * (a Service without slices has none), as kube-proxy reads them; default
   * `selector`: the Service's selector over the declared Pods.
   */
  endpointsFrom?: 'selector' | 'EndpointSlice';
}

export type BuildResult = { ok: true; model: MeshModel } | { ok: false; errors: ConfigError[] };

type KindId =
  | 'Namespace'
  | 'Service'
  | 'Pod'
  | 'Node'
  | 'EndpointSlice'
  | 'HTTPRoute'
  | 'GRPCRoute'
  | 'TCPRoute'
  | 'TrafficPolicy'
  | 'AuthorizationPolicy'
  | 'CanaryGuard';

const KINDS: Record<string, { apiVersions: string[]; namespaced: boolean; id: KindId }> = {
  Namespace: { apiVersions: ['v1'], namespaced: false, id: 'Namespace' },
  Service: { apiVersions: ['v1'], namespaced: true, id: 'Service' },
  Pod: { apiVersions: ['v1'], namespaced: true, id: 'Pod' },
  // sockmesh.io/v1alpha1 (spec.address) in a manifests directory; core v1 (status.addresses) from an API server.
  Node: { apiVersions: ['sockmesh.io/v1alpha1', 'v1'], namespaced: false, id: 'Node' },
  EndpointSlice: { apiVersions: ['discovery.k8s.io/v1'], namespaced: true, id: 'EndpointSlice' },
  HTTPRoute: {
    apiVersions: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'],
    namespaced: true,
    id: 'HTTPRoute',
  },
  GRPCRoute: { apiVersions: ['gateway.networking.k8s.io/v1'], namespaced: true, id: 'GRPCRoute' },
  // Gateway API v1.6 serves TCPRoute as v1 (standard channel); v1alpha2 is what older manifests say.
  TCPRoute: {
    apiVersions: ['gateway.networking.k8s.io/v1alpha2', 'gateway.networking.k8s.io/v1'],
    namespaced: true,
    id: 'TCPRoute',
  },
  TrafficPolicy: { apiVersions: ['sockmesh.io/v1alpha1'], namespaced: true, id: 'TrafficPolicy' },
  AuthorizationPolicy: { apiVersions: ['sockmesh.io/v1alpha1'], namespaced: true, id: 'AuthorizationPolicy' },
  CanaryGuard: { apiVersions: ['sockmesh.io/v1alpha1'], namespaced: true, id: 'CanaryGuard' },
};

/** What a manifests directory may declare; EndpointSlices come only from a source that provides them. */
export const SUPPORTED_KINDS = Object.keys(KINDS).filter((k) => k !== 'EndpointSlice');

/**
 * `Kind/namespace/name` of a declared object (namespace defaulted as the model
 * does), or undefined when the document does not say what it is.
 */
export function objectIdentity(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  if (typeof v.kind !== 'string' || typeof v.metadata?.name !== 'string') return undefined;
  const namespaced = KINDS[v.kind]?.namespaced ?? true;
  const ns = namespaced ? (typeof v.metadata.namespace === 'string' ? v.metadata.namespace : 'default') : '';
  return `${v.kind}/${ns}/${v.metadata.name}`;
}

interface Declared<T> {
  value: T;
  reader: FieldReader;
}

export function buildModel(objects: readonly SourceObject[], options: ModelOptions = {}): BuildResult {
  const r = buildModelDetailed(objects, options);
  return r.model ? { ok: true, model: r.model } : { ok: false, errors: r.errors };
}

export interface DetailedBuild {
  /** Only when there is no error at all. */
  model: MeshModel | undefined;
  /** Every error, in file and line order. */
  errors: ConfigError[];
  /** The errors of `objects[i]` (an object is blamed for what is wrong in it or what it refers to). */
  objectErrors: ReadonlyMap<number, ConfigError[]>;
}

export function buildModelDetailed(
  objects: readonly SourceObject[],
  options: ModelOptions = {},
): DetailedBuild {
  const objectErrors = new Map<number, ConfigError[]>();
  const seen = new Map<string, FieldReader>();
  const namespaces = new Map<string, Namespace>();
  const nodes = new Map<string, MeshNode>();
  const services = new Map<ObjectKey, Declared<Service>>();
  const workloads = new Map<ObjectKey, Workload>();
  const httpRoutes: (Declared<DeclaredHttpRoute> & { kind: HttpRouteKind })[] = [];
  const tcpRoutes: Declared<DeclaredTcpRoute>[] = [];
  const policies: Declared<DeclaredTrafficPolicy>[] = [];
  const authz: Declared<DeclaredAuthorizationPolicy>[] = [];
  const guards: Declared<DeclaredCanaryGuard>[] = [];
  const slices: DeclaredEndpointSlice[] = [];
  /** Per object index: its schema errors (among its other errors). */
  const schemaFound = new Map<number, Set<ConfigError>>();
  /** Per object index: how many of its errors were found before the cross-object checks. */
  const decodedUpTo = new Map<number, number>();

  for (const [index, obj] of objects.entries()) {
    const own: ConfigError[] = [];
    objectErrors.set(index, own);
    const r = new FieldReader(obj, own);
    if (typeof obj.value !== 'object' || Array.isArray(obj.value)) {
      r.fail([], 'a manifest must be a map with apiVersion, kind, metadata');
      continue;
    }
    const kind = r.string(['kind'], { required: true });
    const apiVersion = r.string(['apiVersion'], { required: true });
    if (kind === undefined || apiVersion === undefined) continue;
    const k = kind === 'EndpointSlice' && options.endpointsFrom !== 'EndpointSlice' ? undefined : KINDS[kind];
    if (!k) {
      r.fail(['kind'], `unsupported kind ${quote(kind)} (supported: ${SUPPORTED_KINDS.join(', ')})`);
      continue;
    }
    if (!k.apiVersions.includes(apiVersion)) {
      r.fail(
        ['apiVersion'],
        `${kind} needs apiVersion ${k.apiVersions.join(' or ')}, got ${quote(apiVersion)}`,
      );
      continue;
    }
    // The schema first. The decoders still run: their messages are the more
    // specific ones where both speak of the same field (see dropSchemaDuplicates).
    const structural = schemaErrors(kind, apiVersion, obj);
    if (structural.length > 0) {
      own.push(...structural);
      schemaFound.set(index, new Set(structural));
    }
    const meta: Meta | undefined = readMeta(r, k.namespaced);
    if (!meta) continue;
    const id = `${kind}/${meta.namespace}/${meta.name}`;
    const first = seen.get(id);
    if (first) {
      const at = first.locate([]);
      r.fail(
        ['metadata', 'name'],
        `duplicate ${kind} ${meta.namespace ? `${meta.namespace}/` : ''}${meta.name} (first declared at ${at.file}:${at.line})`,
      );
      continue;
    }
    seen.set(id, r);
    const key = objectKey(meta.namespace, meta.name);
    switch (k.id) {
      case 'Namespace':
        namespaces.set(meta.name, decodeNamespace(r, meta));
        break;
      case 'Node':
        nodes.set(meta.name, apiVersion === 'v1' ? decodeCoreNode(r, meta) : decodeNode(r, meta));
        break;
      case 'EndpointSlice':
        slices.push(decodeEndpointSlice(r, meta));
        break;
      case 'Service':
        services.set(key, { value: decodeService(r, meta), reader: r });
        break;
      case 'Pod':
        workloads.set(key, decodePod(r, meta));
        break;
      case 'HTTPRoute':
        httpRoutes.push({ value: decodeHttpRoute(r, meta), reader: r, kind: 'HTTPRoute' });
        break;
      case 'GRPCRoute':
        httpRoutes.push({ value: decodeGrpcRoute(r, meta), reader: r, kind: 'GRPCRoute' });
        break;
      case 'TCPRoute':
        tcpRoutes.push({ value: decodeTcpRoute(r, meta), reader: r });
        break;
      case 'TrafficPolicy':
        policies.push({ value: decodeTrafficPolicy(r, meta), reader: r });
        break;
      case 'AuthorizationPolicy':
        authz.push({ value: decodeAuthorizationPolicy(r, meta), reader: r });
        break;
      case 'CanaryGuard': {
        const g = decodeCanaryGuard(r, meta);
        if (g) guards.push({ value: g, reader: r });
        break;
      }
    }
    decodedUpTo.set(index, own.length);
  }

  // A cluster IP is one Service's (the API server allocates it so): two would match one VIP.
  const vips = new Map<string, Declared<Service>>();
  for (const d of services.values()) {
    const ip = d.value.clusterIP;
    if (ip === undefined) continue;
    const first = vips.get(ip);
    if (!first) {
      vips.set(ip, d);
      continue;
    }
    const at = first.reader.locate([]);
    d.reader.fail(
      ['spec', 'clusterIP'],
      `${ip} is already the cluster IP of Service ${objectKey(first.value.namespace, first.value.name)} (${at.file}:${at.line})`,
    );
  }

  // Cross-object references.
  const resolveService = (r: FieldReader, ref: WrittenRef): ServiceRef | undefined => {
    if (!services.has(objectKey(ref.namespace, ref.name))) {
      r.fail([...ref.path, 'name'], `Service ${ref.namespace}/${ref.name} does not exist`);
      return undefined;
    }
    return { namespace: ref.namespace, name: ref.name };
  };
  const serviceOf = (ref: ServiceRef): Service => services.get(objectKey(ref.namespace, ref.name))!.value;

  const resolveParents = (r: FieldReader, parents: DeclaredParent[], want: 'http' | 'tcp'): ParentRef[] => {
    const out: ParentRef[] = [];
    parents.forEach((p, i) => {
      const svc = resolveService(r, p.service);
      if (!svc) return;
      const s = serviceOf(svc);
      // A TCPRoute takes any non-HTTP port (on an undeclared one it switches
      // detection off); an HTTPRoute takes HTTP ports and undeclared ones, whose
      // detected HTTP traffic it then routes.
      const matching = s.ports.filter((sp) =>
        want === 'tcp' ? sp.protocol === 'tcp' : portMode(sp) !== 'tcp',
      );
      if (p.port !== undefined) {
        const sp = s.ports.find((x) => x.port === p.port);
        if (!sp) {
          r.fail(
            ['spec', 'parentRefs', i, 'port'],
            `Service ${svc.namespace}/${svc.name} has no port ${p.port}`,
          );
          return;
        }
        if (!matching.includes(sp)) {
          r.fail(
            ['spec', 'parentRefs', i, 'port'],
            want === 'http'
              ? `port ${p.port} of Service ${svc.namespace}/${svc.name} is declared non-HTTP (${sp.appProtocol ?? sp.name}); set appProtocol: http, http2 or grpc, or leave it undeclared to have HTTP detected`
              : `port ${p.port} of Service ${svc.namespace}/${svc.name} is an HTTP port: attach an HTTPRoute`,
          );
          return;
        }
      } else if (matching.length === 0) {
        r.fail(
          ['spec', 'parentRefs', i, 'name'],
          `Service ${svc.namespace}/${svc.name} has no ${want === 'http' ? 'HTTP' : 'TCP'} port`,
        );
        return;
      }
      out.push({ service: svc, port: p.port });
    });
    return out;
  };

  const resolveBackends = (r: FieldReader, backends: DeclaredBackend[]): BackendRef[] => {
    const out: BackendRef[] = [];
    for (const b of backends) {
      const svc = resolveService(r, b.service);
      if (!svc) continue;
      if (!serviceOf(svc).ports.some((p) => p.port === b.port)) {
        r.fail([...b.service.path, 'port'], `Service ${svc.namespace}/${svc.name} has no port ${b.port}`);
        continue;
      }
      out.push({ service: svc, port: b.port, weight: b.weight });
    }
    return out;
  };

  // xDS route names, explain, the dashboard and `sockmesh canary` know a route as namespace/name.
  const routeNames = new Map<string, { kind: HttpRouteKind; reader: FieldReader }>();
  for (const { value, reader, kind } of httpRoutes) {
    const key = objectKey(value.namespace, value.name);
    const first = routeNames.get(key);
    if (!first) {
      routeNames.set(key, { kind, reader });
      continue;
    }
    const at = first.reader.locate([]);
    reader.fail(
      ['metadata', 'name'],
      `${first.kind} ${key} (${at.file}:${at.line}) has the same name: sockmesh knows HTTP and gRPC routes by namespace/name, rename one`,
    );
  }

  const finalHttp: HttpRoute[] = httpRoutes.map(({ value, reader, kind }, order) => ({
    kind,
    namespace: value.namespace,
    name: value.name,
    parents: resolveParents(reader, value.parents, 'http'),
    rules: value.rules.map((rule) => ({ ...rule, backends: resolveBackends(reader, rule.backends) })),
    order,
  }));
  const finalTcp: TcpRoute[] = tcpRoutes.map(({ value, reader }, order) => ({
    namespace: value.namespace,
    name: value.name,
    parents: resolveParents(reader, value.parents, 'tcp'),
    backends: resolveBackends(reader, value.backends),
    order,
  }));
  // One TCPRoute per Service port: TCP has nothing to match on.
  const tcpClaims = new Map<string, string>();
  tcpRoutes.forEach(({ reader }, i) => {
    const route = finalTcp[i]!;
    route.parents.forEach((p, j) => {
      for (const sp of serviceOf(p.service).ports) {
        if (sp.protocol !== 'tcp' || (p.port !== undefined && p.port !== sp.port)) continue;
        const claim = `${objectKey(p.service.namespace, p.service.name)}:${sp.port}`;
        const other = tcpClaims.get(claim);
        if (other)
          reader.fail(
            ['spec', 'parentRefs', j],
            `port ${sp.port} of Service ${claim.split(':')[0]} already has TCPRoute ${other}`,
          );
        else tcpClaims.set(claim, objectKey(route.namespace, route.name));
      }
    });
  });
  // A TCPRoute turns detection off on an undeclared port, so an HTTPRoute that
  // names that port would never see a request: say so rather than drop it.
  httpRoutes.forEach(({ reader }, i) => {
    finalHttp[i]!.parents.forEach((p, j) => {
      if (p.port === undefined) return;
      const claim = `${objectKey(p.service.namespace, p.service.name)}:${p.port}`;
      const other = tcpClaims.get(claim);
      if (other)
        reader.fail(
          ['spec', 'parentRefs', j, 'port'],
          `port ${p.port} of Service ${objectKey(p.service.namespace, p.service.name)} is carried as TCP by TCPRoute ${other}: detach one of the two routes`,
        );
    });
  });

  const trafficPolicies = new Map<ObjectKey, TrafficPolicy>();
  for (const { value, reader } of policies) {
    if (!value.target) continue;
    const target = resolveService(reader, value.target);
    if (!target) continue;
    const key = objectKey(target.namespace, target.name);
    const other = trafficPolicies.get(key);
    if (other) {
      reader.fail(
        ['spec', 'targetRef'],
        `Service ${key} already has TrafficPolicy ${other.namespace}/${other.name}`,
      );
      continue;
    }
    trafficPolicies.set(key, { ...value, target });
  }

  const authorizationPolicies: AuthorizationPolicy[] = [];
  for (const { value, reader } of authz) {
    let targetRef: ServiceRef | undefined;
    if (value.targetRef) {
      targetRef = resolveService(reader, value.targetRef);
      if (!targetRef) continue;
    }
    authorizationPolicies.push({ ...value, targetRef });
  }

  const canaryGuards = resolveCanaryGuards(guards, finalHttp);

  for (const [i, found] of schemaFound)
    objectErrors.set(i, dropSchemaDuplicates(objectErrors.get(i)!, found, decodedUpTo.get(i) ?? 0));
  for (const [i, list] of objectErrors) if (list.length === 0) objectErrors.delete(i);
  const errors = [...objectErrors.values()].flat();
  if (errors.length > 0) return { model: undefined, errors: sortErrors(errors), objectErrors };

  // Pod IPs from the test bed, node addresses from options (manifests win).
  const finalWorkloads = new Map<ObjectKey, Workload>();
  for (const [key, w] of workloads) {
    finalWorkloads.set(
      key,
      w.ip === undefined && options.podIp ? { ...w, ip: options.podIp(w.namespace, w.name) } : w,
    );
  }
  const finalNodes = new Map<string, MeshNode>();
  for (const [name, address] of Object.entries(options.nodes ?? {})) finalNodes.set(name, { name, address });
  for (const [name, n] of nodes) finalNodes.set(name, n);
  for (const w of finalWorkloads.values()) {
    if (w.node !== undefined && !finalNodes.has(w.node))
      finalNodes.set(w.node, { name: w.node, address: undefined });
  }

  const finalServices = new Map([...services].map(([k, v]) => [k, v.value]));
  if (options.endpointsFrom === 'EndpointSlice') attachSliceEndpoints(finalServices, slices, finalWorkloads);

  return {
    errors: [],
    objectErrors,
    model: {
      trustDomain: options.trustDomain ?? 'cluster.local',
      clusterDomain: options.clusterDomain ?? 'cluster.local',
      nodes: finalNodes,
      namespaces,
      services: finalServices,
      workloads: finalWorkloads,
      httpRoutes: finalHttp,
      tcpRoutes: finalTcp,
      trafficPolicies,
      authorizationPolicies,
      canaryGuards,
    },
  };
}

/**
 * Gives every Service the endpoints of its slices that point at a known Pod
 * (the mesh needs the pod's identity and node). An address listed by two
 * slices (during a controller's rewrite) counts once, as kube-proxy does.
 */
function attachSliceEndpoints(
  services: Map<ObjectKey, Service>,
  slices: readonly DeclaredEndpointSlice[],
  workloads: ReadonlyMap<ObjectKey, Workload>,
): void {
  const byService = new Map<ObjectKey, SliceEndpoint[]>();
  const sorted = [...slices].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const s of sorted) {
    if (s.service === undefined) continue;
    const key = objectKey(s.namespace, s.service);
    let list = byService.get(key);
    if (!list) {
      list = [];
      byService.set(key, list);
    }
    for (const e of s.endpoints) {
      if (e.pod === undefined || !workloads.has(e.pod) || list.some((x) => x.ip === e.ip)) continue;
      list.push({
        pod: e.pod,
        ip: e.ip,
        ports: s.ports,
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
      });
    }
  }
  for (const [key, svc] of services) services.set(key, { ...svc, endpoints: byService.get(key) ?? [] });
}

/**
 * Where the schema and the model speak of the same field, one message stays:
 * the decoder's (it says what to write, e.g. a duration's form), but the
 * schema's over a cross-object one (a 300-character name is too long before
 * it is a missing Service).
 */
function dropSchemaDuplicates(
  list: ConfigError[],
  fromSchema: ReadonlySet<ConfigError>,
  decodedUpTo: number,
): ConfigError[] {
  const decoded = new Set<string>();
  const schema = new Set<string>();
  list.forEach((e, i) => {
    if (fromSchema.has(e)) schema.add(e.path);
    else if (i < decodedUpTo) decoded.add(e.path);
  });
  return sortErrors(
    list.filter((e, i) => {
      if (fromSchema.has(e)) return !decoded.has(e.path);
      return i < decodedUpTo || !schema.has(e.path);
    }),
  );
}

function sortErrors(errors: ConfigError[]): ConfigError[] {
  return [...errors].sort((a, b) => (a.file === b.file ? a.line - b.line : a.file < b.file ? -1 : 1));
}
