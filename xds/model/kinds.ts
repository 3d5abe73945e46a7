/**
 * One decoder per declared kind: untyped document -> typed declaration, or
 * errors. Cross-object checks (does the referenced Service exist?) live in
 * build.ts, which sees every document at once.
 */
import type { FieldPath } from '../sources/source.js';
import { type FieldReader, quote } from './reader.js';
import type {
  AuthorizationPolicy,
  AuthzOperation,
  AuthzRule,
  AuthzSource,
  BackendRef,
  HeaderModifier,
  HttpRouteMatch,
  HttpRouteRule,
  LbPolicy,
  MeshNode,
  Namespace,
  ParentRef,
  PortProtocol,
  Service,
  ServicePort,
  TrafficPolicy,
  Workload,
} from './types.js';

export const MESH_LABEL = 'sockmesh.io/mesh';
export const MESH_LABEL_VALUE = 'enabled';
/** How a meshed namespace treats plaintext from outside the mesh: strict (default) or permissive. */
export const MTLS_LABEL = 'sockmesh.io/mtls';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;

/** A reference to a Service as written (namespace defaulted), plus where it was written. */
export interface WrittenRef {
  namespace: string;
  name: string;
  path: FieldPath;
}

export interface Meta {
  name: string;
  namespace: string;
}

export function readMeta(r: FieldReader, namespaced: boolean): Meta | undefined {
  const name = r.string(['metadata', 'name'], {
    required: true,
    pattern: DNS_SUBDOMAIN,
    patternHint: 'lowercase letters, digits, - and .',
    maxLength: 253,
  });
  const namespace = namespaced
    ? (r.string(['metadata', 'namespace'], {
        pattern: DNS_LABEL,
        patternHint: 'a DNS label',
        maxLength: 63,
      }) ?? 'default')
    : '';
  return name === undefined ? undefined : { name, namespace };
}

export function decodeNamespace(r: FieldReader, meta: Meta): Namespace {
  const labels = r.stringMap(['metadata', 'labels']) ?? {};
  const v = labels[MESH_LABEL];
  if (v !== undefined && v !== MESH_LABEL_VALUE && v !== 'disabled') {
    r.fail(
      ['metadata', 'labels', MESH_LABEL],
      `must be '${MESH_LABEL_VALUE}' or 'disabled', got ${quote(v)}`,
    );
  }
  const mode = labels[MTLS_LABEL] ?? 'strict';
  if (mode !== 'strict' && mode !== 'permissive') {
    r.fail(['metadata', 'labels', MTLS_LABEL], `must be 'strict' or 'permissive', got ${quote(mode)}`);
  }
  return {
    name: meta.name,
    labels,
    meshed: v === MESH_LABEL_VALUE,
    mtlsMode: mode === 'permissive' ? 'permissive' : 'strict',
  };
}

/**
 * A core v1 Node (from an API server): the underlay address is its first IPv4
 * InternalIP. A Node without one yet is known but has no tunnel address.
 */
export function decodeCoreNode(r: FieldReader, meta: Meta): MeshNode {
  const n = r.list(['status', 'addresses']);
  for (let i = 0; i < n; i++) {
    if (r.get(['status', 'addresses', i, 'type']) !== 'InternalIP') continue;
    const a = r.get(['status', 'addresses', i, 'address']);
    if (typeof a === 'string' && IPV4.test(a)) return { name: meta.name, address: a };
  }
  return { name: meta.name, address: undefined };
}

/** The label the EndpointSlice controller names a slice's Service with. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface DeclaredEndpointSlice {
  namespace: string;
  name: string;
  /** The Service (same namespace) from the kubernetes.io/service-name label; none: not a Service's slice. */
  service: string | undefined;
  endpoints: {
    ip: string;
    /** targetRef when it is a Pod: `namespace/name`. */
    pod: string | undefined;
    ready: boolean;
    serving: boolean;
    terminating: boolean;
  }[];
  ports: Record<string, number>;
}

/**
 * discovery.k8s.io/v1 EndpointSlice, read as kube-proxy reads it. Slices of
 * another address type (IPv6, FQDN) carry nothing for an IPv4 mesh.
 */
export function decodeEndpointSlice(r: FieldReader, meta: Meta): DeclaredEndpointSlice {
  const labels = r.stringMap(['metadata', 'labels']) ?? {};
  const out: DeclaredEndpointSlice = {
    namespace: meta.namespace,
    name: meta.name,
    service: labels[SERVICE_NAME_LABEL],
    endpoints: [],
    ports: {},
  };
  if (r.string(['addressType'], { required: true }) !== 'IPv4') return out;
  const np = r.list(['ports']);
  for (let i = 0; i < np; i++) {
    const proto = r.get(['ports', i, 'protocol']);
    if (proto !== undefined && proto !== 'TCP') continue;
    const port = r.integer(['ports', i, 'port'], { min: 1, max: 65535 });
    if (port !== undefined) out.ports[r.string(['ports', i, 'name']) ?? ''] = port;
  }
  const ne = r.list(['endpoints']);
  for (let i = 0; i < ne; i++) {
    const base = ['endpoints', i];
    const ip = r.string([...base, 'addresses', 0], { required: true, pattern: IPV4 });
    const cond = (k: string): boolean | undefined => {
      const v = r.get([...base, 'conditions', k]);
      return typeof v === 'boolean' ? v : undefined;
    };
    const ready = cond('ready') ?? true;
    const ref = r.get([...base, 'targetRef']) as
      | { kind?: unknown; name?: unknown; namespace?: unknown }
      | undefined;
    const pod =
      ref?.kind === 'Pod' && typeof ref.name === 'string'
        ? `${typeof ref.namespace === 'string' ? ref.namespace : meta.namespace}/${ref.name}`
        : undefined;
    if (ip === undefined) continue;
    out.endpoints.push({
      ip,
      pod,
      ready,
      serving: cond('serving') ?? ready,
      terminating: cond('terminating') ?? false,
    });
  }
  return out;
}

export function decodeNode(r: FieldReader, meta: Meta): MeshNode {
  r.onlyKnown(['spec'], ['address']);
  const address = r.string(['spec', 'address'], {
    required: true,
    pattern: IPV4,
    patternHint: 'an IPv4 address',
  });
  return { name: meta.name, address };
}

function protocolOf(appProtocol: string | undefined, name: string | undefined): PortProtocol {
  const p = (appProtocol ?? name?.split('-')[0] ?? '').toLowerCase();
  if (p === 'http' || p === 'http1' || p === 'kubernetes.io/http') return 'http';
  if (p === 'http2' || p === 'h2c' || p === 'kubernetes.io/h2c') return 'http2';
  if (p === 'grpc') return 'grpc';
  return 'tcp';
}

export function decodeService(r: FieldReader, meta: Meta): Service {
  r.onlyKnown(['spec'], ['selector', 'ports', 'clusterIP', 'clusterIPs', 'type', 'sessionAffinity']);
  const selector = r.stringMap(['spec', 'selector']) ?? {};
  let clusterIP = r.string(['spec', 'clusterIP']);
  if (clusterIP === 'None' || clusterIP === '') clusterIP = undefined;
  else if (clusterIP !== undefined && !IPV4.test(clusterIP)) {
    r.fail(['spec', 'clusterIP'], `must be an IPv4 address or None, got ${quote(clusterIP)}`);
    clusterIP = undefined;
  }
  const ports: ServicePort[] = [];
  const n = r.list(['spec', 'ports'], { required: true, nonEmpty: true });
  const seen = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const base = ['spec', 'ports', i];
    r.onlyKnown(base, ['name', 'port', 'targetPort', 'appProtocol', 'protocol']);
    const name = r.string([...base, 'name'], {
      pattern: DNS_LABEL,
      patternHint: 'a DNS label',
      maxLength: 63,
    });
    const port = r.integer([...base, 'port'], { required: true, min: 1, max: 65535 });
    const proto = r.string([...base, 'protocol']);
    if (proto !== undefined && proto !== 'TCP')
      r.fail([...base, 'protocol'], `only TCP is supported, got ${quote(proto)}`);
    const appProtocol = r.string([...base, 'appProtocol']);
    let targetPort: number | string | undefined = port;
    const tp = r.get([...base, 'targetPort']);
    if (typeof tp === 'string') targetPort = r.string([...base, 'targetPort'], { pattern: DNS_LABEL });
    else if (tp !== undefined) targetPort = r.integer([...base, 'targetPort'], { min: 1, max: 65535 });
    if (port === undefined || targetPort === undefined) continue;
    const prev = seen.get(port);
    if (prev !== undefined) {
      r.fail([...base, 'port'], `duplicate port ${port} (also at spec.ports[${prev}])`);
      continue;
    }
    seen.set(port, i);
    if (n > 1 && name === undefined) r.fail([...base, 'name'], 'required when a Service has several ports');
    ports.push({ name, port, targetPort, appProtocol, protocol: protocolOf(appProtocol, name) });
  }
  return { namespace: meta.namespace, name: meta.name, clusterIP, selector, ports, origin: r.locate([]) };
}

export function decodePod(r: FieldReader, meta: Meta): Workload {
  const labels = r.stringMap(['metadata', 'labels']) ?? {};
  const serviceAccount =
    r.string(['spec', 'serviceAccountName'], {
      pattern: DNS_SUBDOMAIN,
      patternHint: 'a DNS subdomain',
      maxLength: 253,
    }) ?? 'default';
  const node = r.string(['spec', 'nodeName'], {
    pattern: DNS_SUBDOMAIN,
    patternHint: 'a DNS subdomain',
    maxLength: 253,
  });
  const ip = r.string(['status', 'podIP'], { pattern: IPV4, patternHint: 'an IPv4 address' });
  const namedPorts: Record<string, number> = {};
  const nc = r.list(['spec', 'containers']);
  for (let c = 0; c < nc; c++) {
    const np = r.list(['spec', 'containers', c, 'ports']);
    for (let p = 0; p < np; p++) {
      const base = ['spec', 'containers', c, 'ports', p];
      const name = r.string([...base, 'name']);
      const port = r.integer([...base, 'containerPort'], { required: true, min: 1, max: 65535 });
      if (name !== undefined && port !== undefined) namedPorts[name] = port;
    }
  }
  // Both are optional: directory manifests have neither; the API server sets uid and qosClass.
  const uid = r.string(['metadata', 'uid'], { pattern: POD_UID, patternHint: 'a UID' });
  const qosClass = r.oneOf(['status', 'qosClass'], ['Guaranteed', 'Burstable', 'BestEffort'] as const);
  return {
    namespace: meta.namespace,
    name: meta.name,
    labels,
    serviceAccount,
    node,
    ip,
    namedPorts,
    ...(uid === undefined ? {} : { uid }),
    ...(qosClass === undefined ? {} : { qosClass }),
  };
}

const POD_UID = /^[0-9a-fA-F-]{1,64}$/;

/** parentRefs / backendRefs kind must be a core Service (GAMMA). */
function readServiceRef(r: FieldReader, path: FieldPath, defaultNs: string): WrittenRef | undefined {
  const group = r.string([...path, 'group']);
  if (group !== undefined && group !== '' && group !== 'core') {
    r.fail([...path, 'group'], `only core Services are supported, got group ${quote(group)}`);
    return undefined;
  }
  const kind = r.string([...path, 'kind']) ?? 'Service';
  if (kind !== 'Service') {
    r.fail([...path, 'kind'], `must be Service (GAMMA), got ${quote(kind)}`);
    return undefined;
  }
  const name = r.string([...path, 'name'], { required: true, pattern: DNS_SUBDOMAIN, maxLength: 253 });
  const namespace = r.string([...path, 'namespace'], { pattern: DNS_LABEL, maxLength: 63 }) ?? defaultNs;
  return name === undefined ? undefined : { namespace, name, path };
}

export interface DeclaredParent extends Omit<ParentRef, 'service'> {
  service: WrittenRef;
}
export interface DeclaredBackend extends Omit<BackendRef, 'service'> {
  service: WrittenRef;
}

function readParents(r: FieldReader, ns: string): DeclaredParent[] {
  const out: DeclaredParent[] = [];
  const n = r.list(['spec', 'parentRefs'], { required: true, nonEmpty: true });
  for (let i = 0; i < n; i++) {
    const path = ['spec', 'parentRefs', i];
    r.onlyKnown(path, ['group', 'kind', 'name', 'namespace', 'port', 'sectionName']);
    const ref = readServiceRef(r, path, ns);
    const port = r.integer([...path, 'port'], { min: 1, max: 65535 });
    if (r.has([...path, 'sectionName']))
      r.fail([...path, 'sectionName'], 'not supported for Service parents: use port');
    if (ref) out.push({ service: ref, port });
  }
  return out;
}

function readBackends(r: FieldReader, path: FieldPath, ns: string): DeclaredBackend[] {
  const out: DeclaredBackend[] = [];
  const n = r.list(path);
  for (let i = 0; i < n; i++) {
    const p = [...path, i];
    r.onlyKnown(p, ['group', 'kind', 'name', 'namespace', 'port', 'weight', 'filters']);
    const ref = readServiceRef(r, p, ns);
    const port = r.integer([...p, 'port'], { required: true, min: 1, max: 65535 });
    const weight = r.integer([...p, 'weight'], { min: 0, max: 1_000_000 }) ?? 1;
    if (r.has([...p, 'filters'])) r.fail([...p, 'filters'], 'per-backend filters are not supported');
    if (ref && port !== undefined) out.push({ service: ref, port, weight });
  }
  return out;
}

function readStringMatches(
  r: FieldReader,
  path: FieldPath,
  nameIsHeader: boolean,
): { type: 'Exact' | 'RegularExpression'; name: string; value: string }[] {
  const out: { type: 'Exact' | 'RegularExpression'; name: string; value: string }[] = [];
  const n = r.list(path);
  for (let i = 0; i < n; i++) {
    const p = [...path, i];
    r.onlyKnown(p, ['type', 'name', 'value']);
    const type = r.oneOf([...p, 'type'], ['Exact', 'RegularExpression'] as const) ?? 'Exact';
    const name = r.string(
      [...p, 'name'],
      nameIsHeader ? { required: true, pattern: HEADER_NAME } : { required: true },
    );
    const value = r.string([...p, 'value'], { required: true });
    if (type === 'RegularExpression' && value !== undefined && !validRegex(value)) {
      r.fail([...p, 'value'], `invalid regular expression ${quote(value)}`);
      continue;
    }
    if (name !== undefined && value !== undefined)
      out.push({ type, name: nameIsHeader ? name.toLowerCase() : name, value });
  }
  return out;
}

function validRegex(s: string): boolean {
  try {
    new RegExp(s);
    return true;
  } catch {
    return false;
  }
}

/** A rule without matches matches every request (HTTPRoute and GRPCRoute alike). */
function matchAll(): HttpRouteMatch {
  return { path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: undefined };
}

function readMatches(r: FieldReader, path: FieldPath): HttpRouteMatch[] {
  const n = r.list(path);
  if (n === 0) return [matchAll()];
  const out: HttpRouteMatch[] = [];
  for (let i = 0; i < n; i++) {
    const p = [...path, i];
    r.onlyKnown(p, ['path', 'headers', 'queryParams', 'method']);
    r.onlyKnown([...p, 'path'], ['type', 'value']);
    const type =
      r.oneOf([...p, 'path', 'type'], ['Exact', 'PathPrefix', 'RegularExpression'] as const) ?? 'PathPrefix';
    const value = r.string([...p, 'path', 'value']) ?? '/';
    if (type !== 'RegularExpression' && !value.startsWith('/'))
      r.fail([...p, 'path', 'value'], `must start with '/', got ${quote(value)}`);
    if (type === 'RegularExpression' && !validRegex(value))
      r.fail([...p, 'path', 'value'], `invalid regular expression ${quote(value)}`);
    const method = r.oneOf([...p, 'method'], METHODS);
    out.push({
      path: { type, value },
      headers: readStringMatches(r, [...p, 'headers'], true),
      queryParams: readStringMatches(r, [...p, 'queryParams'], false),
      method,
    });
  }
  return out;
}

function readHeaderModifier(r: FieldReader, path: FieldPath): HeaderModifier {
  r.onlyKnown(path, ['set', 'add', 'remove']);
  const pairs = (key: string) => {
    const out: { name: string; value: string }[] = [];
    const n = r.list([...path, key]);
    for (let i = 0; i < n; i++) {
      const name = r.string([...path, key, i, 'name'], { required: true, pattern: HEADER_NAME });
      const value = r.string([...path, key, i, 'value'], { required: true });
      if (name !== undefined && value !== undefined) out.push({ name: name.toLowerCase(), value });
    }
    return out;
  };
  return {
    set: pairs('set'),
    add: pairs('add'),
    remove: r.strings([...path, 'remove'], { pattern: HEADER_NAME }).map((h) => h.toLowerCase()),
  };
}

/** The rule filters sockmesh honours exactly (RequestHeaderModifier); any other type is refused. */
function readFilters(r: FieldReader, rule: FieldPath): HeaderModifier | undefined {
  let requestHeaderModifier: HeaderModifier | undefined;
  const nf = r.list([...rule, 'filters']);
  for (let f = 0; f < nf; f++) {
    const fp = [...rule, 'filters', f];
    const type = r.oneOf([...fp, 'type'], ['RequestHeaderModifier'] as const, { required: true });
    if (type === 'RequestHeaderModifier') {
      if (requestHeaderModifier)
        r.fail([...fp, 'type'], 'RequestHeaderModifier may appear only once per rule');
      requestHeaderModifier = readHeaderModifier(r, [...fp, 'requestHeaderModifier']);
    }
  }
  return requestHeaderModifier;
}

export interface DeclaredHttpRule extends Omit<HttpRouteRule, 'backends'> {
  backends: DeclaredBackend[];
}

export interface DeclaredHttpRoute {
  namespace: string;
  name: string;
  parents: DeclaredParent[];
  rules: DeclaredHttpRule[];
}

/** What HTTPRoute and GRPCRoute share at the top of their spec: Service parents (GAMMA), no hostnames. */
function readServiceRouteSpec(r: FieldReader, meta: Meta): { parents: DeclaredParent[]; ruleCount: number } {
  r.onlyKnown(['spec'], ['parentRefs', 'hostnames', 'rules']);
  if (r.has(['spec', 'hostnames']))
    r.fail(['spec', 'hostnames'], 'must not be set for Service parents (GAMMA)');
  return { parents: readParents(r, meta.namespace), ruleCount: r.list(['spec', 'rules']) };
}

export function decodeHttpRoute(r: FieldReader, meta: Meta): DeclaredHttpRoute {
  const { parents, ruleCount: n } = readServiceRouteSpec(r, meta);
  const rules: DeclaredHttpRule[] = [];
  for (let i = 0; i < n; i++) {
    const base = ['spec', 'rules', i];
    r.onlyKnown(base, ['name', 'matches', 'filters', 'backendRefs', 'timeouts']);
    const requestHeaderModifier = readFilters(r, base);
    r.onlyKnown([...base, 'timeouts'], ['request', 'backendRequest']);
    const request = r.duration([...base, 'timeouts', 'request']);
    const backendRequest = r.duration([...base, 'timeouts', 'backendRequest']);
    if (request !== undefined && backendRequest !== undefined && request !== 0 && backendRequest > request) {
      r.fail([...base, 'timeouts', 'backendRequest'], 'must not be longer than timeouts.request');
    }
    rules.push({
      matches: readMatches(r, [...base, 'matches']),
      backends: readBackends(r, [...base, 'backendRefs'], meta.namespace),
      requestHeaderModifier,
      timeouts: { request, backendRequest },
    });
  }
  return { namespace: meta.namespace, name: meta.name, parents, rules };
}

// The GRPCRoute CRD's CEL rules for Exact service and method names (ajv does not run CEL).
const GRPC_SERVICE = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;
const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * GRPCRoute `matches[].method` as the `:path` match gRPC puts on the wire
 * (`/<service>/<method>`): both names -> the exact path; one name -> a regex
 * with the other segment any name; RegularExpression -> each given part as a
 * regex, the missing one any name.
 */
function grpcPath(
  type: 'Exact' | 'RegularExpression',
  service: string | undefined,
  method: string | undefined,
): HttpRouteMatch['path'] {
  const any = '[^/]+';
  if (type === 'RegularExpression')
    return {
      type: 'RegularExpression',
      value: `/${service === undefined ? any : `(?:${service})`}/${method === undefined ? any : `(?:${method})`}`,
    };
  if (service !== undefined && method !== undefined) return { type: 'Exact', value: `/${service}/${method}` };
  return {
    type: 'RegularExpression',
    value: `/${service === undefined ? any : escapeRegex(service)}/${method === undefined ? any : escapeRegex(method)}`,
  };
}

function readGrpcMatches(r: FieldReader, path: FieldPath): HttpRouteMatch[] {
  const n = r.list(path);
  if (n === 0) return [matchAll()];
  const out: HttpRouteMatch[] = [];
  for (let i = 0; i < n; i++) {
    const p = [...path, i];
    r.onlyKnown(p, ['method', 'headers']);
    const mp = [...p, 'method'];
    let path_: HttpRouteMatch['path'] = { type: 'PathPrefix', value: '/' };
    let grpc: HttpRouteMatch['grpc'];
    if (r.has(mp)) {
      r.onlyKnown(mp, ['type', 'service', 'method']);
      const type = r.oneOf([...mp, 'type'], ['Exact', 'RegularExpression'] as const) ?? 'Exact';
      const exact = type === 'Exact';
      const service = r.string([...mp, 'service'], {
        maxLength: 1024,
        ...(exact
          ? { pattern: GRPC_SERVICE, patternHint: 'a protobuf service name, e.g. shop.v1.Reviews' }
          : {}),
      });
      const method = r.string([...mp, 'method'], {
        maxLength: 1024,
        ...(exact ? { pattern: GRPC_METHOD, patternHint: 'a protobuf method name, e.g. GetReview' } : {}),
      });
      const named = (v: string | undefined) => (v === '' ? undefined : v);
      const s = named(service);
      const m = named(method);
      const given = (k: string) => r.has([...mp, k]) && r.get([...mp, k]) !== '';
      if (!given('service') && !given('method')) r.fail(mp, 'set service, method or both');
      else if (!exact) {
        if (s !== undefined && !validRegex(s))
          r.fail([...mp, 'service'], `invalid regular expression ${quote(s)}`);
        if (m !== undefined && !validRegex(m))
          r.fail([...mp, 'method'], `invalid regular expression ${quote(m)}`);
      }
      path_ = grpcPath(type, s, m);
      grpc = { service: s, method: m };
    }
    out.push({
      path: path_,
      headers: readStringMatches(r, [...p, 'headers'], true),
      queryParams: [],
      method: undefined,
      ...(grpc ? { grpc } : {}),
    });
  }
  return out;
}

/**
 * GRPCRoute (gateway.networking.k8s.io/v1) with Service parents: decoded into
 * the HTTPRoute model (the same split, filters and status), its method
 * matches turned into `:path` matches. No timeouts: GRPCRoute has none.
 */
export function decodeGrpcRoute(r: FieldReader, meta: Meta): DeclaredHttpRoute {
  const { parents, ruleCount: n } = readServiceRouteSpec(r, meta);
  const rules: DeclaredHttpRule[] = [];
  for (let i = 0; i < n; i++) {
    const base = ['spec', 'rules', i];
    r.onlyKnown(base, ['name', 'matches', 'filters', 'backendRefs']);
    const requestHeaderModifier = readFilters(r, base);
    rules.push({
      matches: readGrpcMatches(r, [...base, 'matches']),
      backends: readBackends(r, [...base, 'backendRefs'], meta.namespace),
      requestHeaderModifier,
      timeouts: { request: undefined, backendRequest: undefined },
    });
  }
  return { namespace: meta.namespace, name: meta.name, parents, rules };
}

export interface DeclaredTcpRoute {
  namespace: string;
  name: string;
  parents: DeclaredParent[];
  backends: DeclaredBackend[];
}

export function decodeTcpRoute(r: FieldReader, meta: Meta): DeclaredTcpRoute {
  r.onlyKnown(['spec'], ['parentRefs', 'rules']);
  const parents = readParents(r, meta.namespace);
  const n = r.list(['spec', 'rules'], { required: true, nonEmpty: true });
  if (n > 1) r.fail(['spec', 'rules'], 'a TCPRoute attached to a Service takes exactly one rule');
  return {
    namespace: meta.namespace,
    name: meta.name,
    parents,
    backends: readBackends(r, ['spec', 'rules', 0, 'backendRefs'], meta.namespace),
  };
}

function readTargetRef(r: FieldReader, ns: string, required: boolean): WrittenRef | undefined {
  if (!r.has(['spec', 'targetRef'])) {
    if (required) r.fail(['spec', 'targetRef'], 'required field is missing');
    return undefined;
  }
  r.onlyKnown(['spec', 'targetRef'], ['group', 'kind', 'name', 'namespace']);
  return readServiceRef(r, ['spec', 'targetRef'], ns);
}

export interface DeclaredTrafficPolicy extends Omit<TrafficPolicy, 'target'> {
  target: WrittenRef | undefined;
}

export function decodeTrafficPolicy(r: FieldReader, meta: Meta): DeclaredTrafficPolicy {
  r.onlyKnown(
    ['spec'],
    ['targetRef', 'connectionPool', 'outlierDetection', 'retries', 'timeouts', 'loadBalancer'],
  );
  const target = readTargetRef(r, meta.namespace, true);
  const cp = ['spec', 'connectionPool'];
  const od = ['spec', 'outlierDetection'];
  const rt = ['spec', 'retries'];
  const to = ['spec', 'timeouts'];
  const lb = ['spec', 'loadBalancer'];
  r.onlyKnown(cp, ['maxConnections', 'maxPendingRequests', 'maxRequests', 'maxRetries']);
  r.onlyKnown(od, [
    'consecutive5xx',
    'consecutiveGatewayErrors',
    'interval',
    'baseEjectionTime',
    'maxEjectionPercent',
  ]);
  r.onlyKnown(rt, ['attempts', 'perTryTimeout', 'retryOn']);
  r.onlyKnown(to, ['request', 'idle']);
  r.onlyKnown(lb, ['type', 'hashHeader']);
  const positive = { min: 1, max: 4_294_967_295 };
  let loadBalancer: TrafficPolicy['loadBalancer'];
  if (r.has(lb)) {
    const type = r.oneOf(
      [...lb, 'type'],
      ['ROUND_ROBIN', 'LEAST_REQUEST', 'RING_HASH'] as const satisfies readonly LbPolicy[],
      {
        required: true,
      },
    );
    const hashHeader = r.string([...lb, 'hashHeader'], { pattern: HEADER_NAME })?.toLowerCase();
    if (type === 'RING_HASH' && hashHeader === undefined)
      r.fail([...lb, 'hashHeader'], 'required when type is RING_HASH');
    if (type !== undefined && type !== 'RING_HASH' && hashHeader !== undefined) {
      r.fail([...lb, 'hashHeader'], 'only valid with type RING_HASH');
    }
    if (type) loadBalancer = { type, hashHeader };
  }
  let retries: TrafficPolicy['retries'];
  if (r.has(rt)) {
    const attempts = r.integer([...rt, 'attempts'], { required: true, min: 0, max: 100 });
    const retryOn = r.strings([...rt, 'retryOn'], {
      pattern: /^[a-z0-9-]+$/,
      patternHint: 'Envoy retry_on words, e.g. 5xx, connect-failure',
    });
    if (attempts !== undefined) {
      retries = {
        attempts,
        perTryTimeout: r.duration([...rt, 'perTryTimeout']),
        retryOn: retryOn.length > 0 ? retryOn : ['5xx', 'connect-failure', 'refused-stream', 'reset'],
      };
    }
  }
  return {
    namespace: meta.namespace,
    name: meta.name,
    target,
    connectionPool: r.has(cp)
      ? {
          maxConnections: r.integer([...cp, 'maxConnections'], positive),
          maxPendingRequests: r.integer([...cp, 'maxPendingRequests'], positive),
          maxRequests: r.integer([...cp, 'maxRequests'], positive),
          maxRetries: r.integer([...cp, 'maxRetries'], { min: 0, max: 4_294_967_295 }),
        }
      : undefined,
    outlierDetection: r.has(od)
      ? {
          consecutive5xx: r.integer([...od, 'consecutive5xx'], positive),
          consecutiveGatewayErrors: r.integer([...od, 'consecutiveGatewayErrors'], positive),
          interval: r.duration([...od, 'interval']),
          baseEjectionTime: r.duration([...od, 'baseEjectionTime']),
          maxEjectionPercent: r.integer([...od, 'maxEjectionPercent'], { min: 0, max: 100 }),
        }
      : undefined,
    retries,
    timeouts: r.has(to)
      ? { request: r.duration([...to, 'request']), idle: r.duration([...to, 'idle']) }
      : undefined,
    loadBalancer,
  };
}

function validWildcard(s: string): boolean {
  const stars = s.split('*').length - 1;
  return s === '*' || stars === 0 || (stars === 1 && (s.startsWith('*') || s.endsWith('*')));
}

export interface DeclaredAuthorizationPolicy extends Omit<AuthorizationPolicy, 'targetRef'> {
  targetRef: WrittenRef | undefined;
}

export function decodeAuthorizationPolicy(r: FieldReader, meta: Meta): DeclaredAuthorizationPolicy {
  r.onlyKnown(['spec'], ['selector', 'targetRef', 'action', 'rules']);
  r.onlyKnown(['spec', 'selector'], ['matchLabels']);
  const selector = r.has(['spec', 'selector'])
    ? (r.stringMap(['spec', 'selector', 'matchLabels']) ?? {})
    : undefined;
  for (const [k, v] of Object.entries(selector ?? {})) {
    // A label selector's values are label values (the API server's LabelSelector rule).
    if (v.length > 63 || !LABEL_VALUE.test(v))
      r.fail(
        ['spec', 'selector', 'matchLabels', k],
        `invalid label value ${quote(v)}: at most 63 letters, digits, -, _ and .`,
      );
  }
  const targetRef = readTargetRef(r, meta.namespace, false);
  if (selector && targetRef) r.fail(['spec', 'targetRef'], 'set either selector or targetRef, not both');
  if (targetRef && targetRef.namespace !== meta.namespace) {
    r.fail([...targetRef.path, 'namespace'], 'must be the policy namespace');
  }
  const action = r.oneOf(['spec', 'action'], ['ALLOW', 'DENY'] as const) ?? 'ALLOW';
  const rules: AuthzRule[] = [];
  const n = r.list(['spec', 'rules']);
  for (let i = 0; i < n; i++) {
    const base = ['spec', 'rules', i];
    r.onlyKnown(base, ['from', 'to']);
    const from: AuthzSource[] = [];
    const nf = r.list([...base, 'from']);
    for (let f = 0; f < nf; f++) {
      const p = [...base, 'from', f];
      r.onlyKnown(p, ['principals', 'namespaces']);
      const principals = r.strings([...p, 'principals']);
      principals.forEach((s, k) => {
        if (!validWildcard(s))
          r.fail([...p, 'principals', k], `${quote(s)}: use '*' alone, or one '*' at the start or the end`);
        else if (s !== '*' && !s.startsWith('*') && !s.startsWith('spiffe://')) {
          r.fail(
            [...p, 'principals', k],
            `${quote(s)} is not a SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)`,
          );
        }
      });
      const namespaces = r.strings([...p, 'namespaces'], {
        pattern: DNS_LABEL,
        patternHint: 'a namespace name',
      });
      if (principals.length === 0 && namespaces.length === 0) r.fail(p, 'set principals and/or namespaces');
      from.push({ principals, namespaces });
    }
    const to: AuthzOperation[] = [];
    const nt = r.list([...base, 'to']);
    for (let t = 0; t < nt; t++) {
      const p = [...base, 'to', t];
      r.onlyKnown(p, ['ports', 'methods', 'paths']);
      const ports: number[] = [];
      const np = r.list([...p, 'ports']);
      for (let k = 0; k < np; k++) {
        const port = r.integer([...p, 'ports', k], { required: true, min: 1, max: 65535 });
        if (port !== undefined) ports.push(port);
      }
      const methods = r.strings([...p, 'methods']);
      methods.forEach((m, k) => {
        if (!(METHODS as readonly string[]).includes(m))
          r.fail([...p, 'methods', k], `unknown HTTP method ${quote(m)}`);
      });
      const paths = r.strings([...p, 'paths']);
      paths.forEach((s, k) => {
        if (!validWildcard(s))
          r.fail([...p, 'paths', k], `${quote(s)}: use '*' alone, or one '*' at the start or the end`);
      });
      if (ports.length + methods.length + paths.length === 0) r.fail(p, 'set ports, methods and/or paths');
      to.push({ ports, methods, paths });
    }
    rules.push({ from, to });
  }
  return { namespace: meta.namespace, name: meta.name, selector, targetRef, action, rules };
}
