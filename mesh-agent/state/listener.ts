/**
 * envoy.config.listener.v3.Listener: the filter chains the proxy matches a
 * captured connection against, and what each chain does (HTTP connection
 * manager, TCP proxy, RBAC).
 */
import { parseRbacFilter, type RbacConfig } from '../authz/rbac.js';
import { parseRouteConfiguration } from '../routing/config.js';
import type { ClusterTarget, RouteConfig } from '../routing/types.js';
import { type CidrPrefix, cidrContains, ipToBigInt, parseCidrRange } from './cidr.js';
import {
  anyTypeName,
  decodeError,
  list,
  obj,
  optBool,
  optBoolWrapper,
  optDurationMs,
  optStr,
  optUint,
  optUintWrapper,
  type PlainValue,
  sockmeshMetadata,
  str,
  typedConfig,
  type Wire,
} from './wire.js';

const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const TCP_PROXY = 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const NETWORK_RBAC = 'envoy.extensions.filters.network.rbac.v3.RBAC';
const HTTP_RBAC = 'envoy.extensions.filters.http.rbac.v3.RBAC';
const ROUTER = 'envoy.extensions.filters.http.router.v3.Router';

/** TcpProxy's idle timeout when unset (Envoy: 1 hour); null = disabled. */
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

export interface TcpProxy {
  statPrefix: string;
  target: ClusterTarget;
  idleTimeoutMs: number | null;
  maxConnectAttempts: number;
}

export interface HttpManager {
  statPrefix: string;
  /** RDS name, or undefined when the route config is inline. */
  routeConfigName: string | undefined;
  inlineRouteConfig: RouteConfig | undefined;
  /** HTTP RBAC filters, in filter order. */
  rbac: readonly RbacConfig[];
}

export type ChainAction = { kind: 'http'; http: HttpManager } | { kind: 'tcp'; tcpProxy: TcpProxy };

export interface FilterChain {
  name: string;
  destinationPort: number | undefined;
  prefixRanges: readonly CidrPrefix[];
  /** Network RBAC filters before the terminal filter, in order. */
  rbac: readonly RbacConfig[];
  action: ChainAction;
  /** The chain's `filter_metadata.sockmesh` (e.g. the pod an inbound chain is for). */
  meta: Readonly<Record<string, PlainValue>>;
  /** `filter_chain_match.application_protocols`: only the detected HTTP ones (Istio's http/1.0, http/1.1, h2c). */
  applicationProtocols: readonly string[];
  /**
   * Set on a chain that has an HTTP sibling with the same port and prefixes
   * but application_protocols: the connection's first bytes choose (the
   * sibling when they are HTTP, this chain otherwise). Istio's outbound
   * listener for a port whose protocol is not declared looks like this.
   */
  detectHttp?: FilterChain;
}

/** What the agent's protocol detection can tell apart (outbound/detect.ts). */
const DETECTED_HTTP = ['http/1.0', 'http/1.1', 'h2c'];

export interface ListenerConfig {
  name: string;
  address: { ip: string; port: number } | undefined;
  useOriginalDst: boolean;
  isApiListener: boolean;
  chains: readonly FilterChain[];
  defaultChain: FilterChain | undefined;
  /** The listener's `filter_metadata.sockmesh`. */
  meta: Readonly<Record<string, PlainValue>>;
  /** Lookup tables over `chains`, built once at parse time. */
  index: ChainIndex;
}

/** The chains of one destination-port group. */
interface ChainGroup {
  /** Host prefixes (/32, /128) by `family:bits`: the longest possible match, found in O(1). */
  hosts: Map<string, FilterChain>;
  /** Shorter prefixes, longest first. */
  nets: Array<[CidrPrefix, FilterChain]>;
  /** The chain without prefix ranges, if any. */
  any: FilterChain | undefined;
}

export interface ChainIndex {
  byPort: ReadonlyMap<number, ChainGroup>;
  portless: ChainGroup | undefined;
}

function hostKey(family: 4 | 6, bits: bigint): string {
  return `${family}:${bits}`;
}

/** Builds the index; two chains claiming the same port and prefix is an error, as in Envoy. */
function indexChains(chains: readonly FilterChain[], path: string): ChainIndex {
  const byPort = new Map<number, ChainGroup>();
  let portless: ChainGroup | undefined;
  const owner = new Map<string, number>();
  // Chains with application protocols ride on their TCP sibling (same port and prefixes) when it exists.
  const siblings = new Map<string, FilterChain>();
  const matchKey = (c: FilterChain) =>
    `${c.destinationPort ?? '*'}|${c.prefixRanges
      .map((p) => p.text)
      .sort()
      .join(',')}`;
  for (const c of chains) if (c.applicationProtocols.length === 0) siblings.set(matchKey(c), c);
  chains.forEach((c, i) => {
    const alpn = c.applicationProtocols.join(',');
    const claim = (what: string): void => {
      const key = `${c.destinationPort ?? '*'}|${what}${alpn ? `|${alpn}` : ''}`;
      const prev = owner.get(key);
      if (prev !== undefined) {
        throw decodeError(
          `${path}[${i}].filter_chain_match`,
          `same match as filter_chains[${prev}] (${key})`,
        );
      }
      owner.set(key, i);
    };
    const sibling = alpn ? siblings.get(matchKey(c)) : undefined;
    if (sibling) {
      if (c.prefixRanges.length === 0) claim('any');
      for (const p of c.prefixRanges) claim(p.text);
      sibling.detectHttp = c;
      return;
    }
    let group: ChainGroup;
    if (c.destinationPort === undefined) {
      portless ??= { hosts: new Map(), nets: [], any: undefined };
      group = portless;
    } else {
      group = byPort.get(c.destinationPort) ?? { hosts: new Map(), nets: [], any: undefined };
      byPort.set(c.destinationPort, group);
    }
    if (c.prefixRanges.length === 0) {
      claim('any');
      group.any = c;
    }
    for (const p of c.prefixRanges) {
      claim(p.text);
      if (p.length === (p.family === 4 ? 32 : 128)) group.hosts.set(hostKey(p.family, p.bits), c);
      else group.nets.push([p, c]);
    }
  });
  for (const g of [...byPort.values(), ...(portless ? [portless] : [])])
    g.nets.sort((x, y) => y[0].length - x[0].length);
  return { byPort, portless };
}

export function parseListener(v: unknown, path = 'Listener'): ListenerConfig {
  const l = obj(v, path);
  const name = str(l.name, `${path}.name`);
  const at = `Listener ${JSON.stringify(name)}`;
  let address: ListenerConfig['address'];
  if (l.address != null) {
    const a = obj(l.address, `${at}.address`);
    if (a.socket_address != null) {
      const sa = obj(a.socket_address, `${at}.address.socket_address`);
      address = {
        ip: str(sa.address, `${at}.address.socket_address.address`),
        port: optUint(sa.port_value, `${at}.address.socket_address.port_value`, 65535) ?? 0,
      };
    }
  }
  const chains = list(l.filter_chains, `${at}.filter_chains`).map((c, i) =>
    parseChain(c, `${at}.filter_chains[${i}]`, i),
  );
  const index = indexChains(chains, `${at}.filter_chains`);
  return {
    name,
    address,
    useOriginalDst: optBoolWrapper(l.use_original_dst, `${at}.use_original_dst`) ?? false,
    isApiListener: l.api_listener != null,
    chains,
    meta: sockmeshMetadata(l.metadata, `${at}.metadata`),
    index,
    defaultChain:
      l.default_filter_chain == null
        ? undefined
        : parseChain(l.default_filter_chain, `${at}.default_filter_chain`, -1),
  };
}

const UNSUPPORTED_CHAIN_MATCH = [
  'server_names',
  'source_prefix_ranges',
  'direct_source_prefix_ranges',
  'source_ports',
];

function parseChain(v: unknown, path: string, index: number): FilterChain {
  const c = obj(v, path);
  let destinationPort: number | undefined;
  let prefixRanges: CidrPrefix[] = [];
  let applicationProtocols: string[] = [];
  if (c.filter_chain_match != null) {
    const m = obj(c.filter_chain_match, `${path}.filter_chain_match`);
    for (const k of UNSUPPORTED_CHAIN_MATCH) {
      if (list(m[k], `${path}.filter_chain_match.${k}`).length > 0) {
        throw decodeError(`${path}.filter_chain_match.${k}`, 'is not supported by sockmesh');
      }
    }
    const transport = optStr(m.transport_protocol, `${path}.filter_chain_match.transport_protocol`);
    if (transport !== undefined && transport !== '' && transport !== 'raw_buffer') {
      throw decodeError(`${path}.filter_chain_match.transport_protocol`, 'only raw_buffer is supported');
    }
    if (m.source_type != null && m.source_type !== 'ANY') {
      throw decodeError(`${path}.filter_chain_match.source_type`, 'only ANY is supported');
    }
    destinationPort = optUintWrapper(
      m.destination_port,
      `${path}.filter_chain_match.destination_port`,
      65535,
    );
    if (destinationPort === 0) destinationPort = undefined;
    prefixRanges = list(m.prefix_ranges, `${path}.filter_chain_match.prefix_ranges`).map((p, i) =>
      parseCidrRange(p, `${path}.filter_chain_match.prefix_ranges[${i}]`),
    );
    applicationProtocols = list(
      m.application_protocols,
      `${path}.filter_chain_match.application_protocols`,
    ).map((p, i) => str(p, `${path}.filter_chain_match.application_protocols[${i}]`));
    if (applicationProtocols.some((p) => !DETECTED_HTTP.includes(p))) {
      throw decodeError(
        `${path}.filter_chain_match.application_protocols`,
        `only ${DETECTED_HTTP.slice(0, -1).join(', ')} and ${DETECTED_HTTP.at(-1)} are supported (protocol detection)`,
      );
    }
  }
  const rbac: RbacConfig[] = [];
  let action = undefined as ChainAction | undefined;
  list(c.filters, `${path}.filters`).forEach((f, i) => {
    const at = `${path}.filters[${i}]`;
    const filter = obj(f, at);
    if (action) throw decodeError(at, 'filters after a terminal filter (http_connection_manager, tcp_proxy)');
    const typed = typedConfig(filter.typed_config, `${at}.typed_config`);
    const type = anyTypeName(typed);
    if (type === NETWORK_RBAC) {
      const rules = parseRbacFilter(typed, `${at}.typed_config`);
      if (rules) rbac.push(rules);
    } else if (type === HCM) action = { kind: 'http', http: parseHcm(typed, `${at}.typed_config`) };
    else if (type === TCP_PROXY)
      action = { kind: 'tcp', tcpProxy: parseTcpProxy(typed, `${at}.typed_config`) };
    else throw decodeError(`${at}.typed_config`, `unsupported network filter ${type ?? '(no @type)'}`);
  });
  if (!action)
    throw decodeError(`${path}.filters`, 'needs a terminal filter (http_connection_manager or tcp_proxy)');
  return {
    name: optStr(c.name, `${path}.name`) || (index < 0 ? 'default' : `#${index}`),
    destinationPort,
    prefixRanges,
    rbac,
    action,
    meta: sockmeshMetadata(c.metadata, `${path}.metadata`),
    applicationProtocols,
  };
}

function parseHcm(v: Wire, path: string): HttpManager {
  let routeConfigName: string | undefined;
  let inlineRouteConfig: RouteConfig | undefined;
  if (v.rds != null) {
    routeConfigName = str(obj(v.rds, `${path}.rds`).route_config_name, `${path}.rds.route_config_name`);
  } else if (v.route_config != null) {
    inlineRouteConfig = parseRouteConfiguration(v.route_config, `${path}.route_config`);
  } else {
    throw decodeError(path, 'needs rds or route_config (scoped routes are not supported)');
  }
  const rbac: RbacConfig[] = [];
  list(v.http_filters, `${path}.http_filters`).forEach((f, i) => {
    const at = `${path}.http_filters[${i}]`;
    const filter = obj(f, at);
    const typed =
      filter.typed_config == null ? undefined : typedConfig(filter.typed_config, `${at}.typed_config`);
    const type = typed ? anyTypeName(typed) : undefined;
    if (typed && type === HTTP_RBAC) {
      const rules = parseRbacFilter(typed, `${at}.typed_config`);
      if (rules) rbac.push(rules);
    } else if (type === ROUTER) return;
    else if (optBool(filter.is_optional, `${at}.is_optional`) !== true) {
      throw decodeError(
        at,
        `unsupported HTTP filter ${type ?? optStr(filter.name, `${at}.name`) ?? '(unnamed)'}`,
      );
    }
  });
  return {
    statPrefix: optStr(v.stat_prefix, `${path}.stat_prefix`) ?? '',
    routeConfigName,
    inlineRouteConfig,
    rbac,
  };
}

function parseTcpProxy(v: Wire, path: string): TcpProxy {
  let target: ClusterTarget;
  if (v.cluster != null) {
    const name = str(v.cluster, `${path}.cluster`);
    if (name === '') throw decodeError(`${path}.cluster`, 'must not be empty');
    target = { kind: 'cluster', name };
  } else if (v.weighted_clusters != null) {
    const w = obj(v.weighted_clusters, `${path}.weighted_clusters`);
    const clusters = list(w.clusters, `${path}.weighted_clusters.clusters`).map((c, i) => {
      const at = `${path}.weighted_clusters.clusters[${i}]`;
      const co = obj(c, at);
      // TcpProxy's ClusterWeight.weight is a plain uint32 (a wrapper is tolerated).
      return {
        name: str(co.name, `${at}.name`),
        weight: optUintWrapper(co.weight, `${at}.weight`) ?? 0,
        headers: { add: [], remove: [] },
      };
    });
    const total = clusters.reduce((s, c) => s + c.weight, 0);
    if (clusters.length === 0 || total === 0) {
      throw decodeError(
        `${path}.weighted_clusters.clusters`,
        'needs at least one cluster with a weight above 0',
      );
    }
    target = { kind: 'weighted', weighted: { clusters, total } };
  } else {
    throw decodeError(path, 'needs cluster or weighted_clusters');
  }
  const idle = optDurationMs(v.idle_timeout, `${path}.idle_timeout`);
  return {
    statPrefix: optStr(v.stat_prefix, `${path}.stat_prefix`) ?? '',
    target,
    idleTimeoutMs: idle === undefined ? DEFAULT_TCP_IDLE_TIMEOUT_MS : idle === 0 ? null : idle,
    maxConnectAttempts: optUintWrapper(v.max_connect_attempts, `${path}.max_connect_attempts`) || 1,
  };
}

/**
 * Envoy's filter chain selection for the criteria sockmesh uses: chains naming
 * this exact destination port win over port-less ones (with no fall-back
 * between the two groups), then the longest matching destination prefix wins
 * over shorter ones and over chains without prefixes. No match: the default
 * chain, if any.
 */
export function selectFilterChain(
  listener: ListenerConfig,
  ip: string,
  port: number,
): FilterChain | undefined {
  const group = listener.index.byPort.get(port) ?? listener.index.portless;
  if (!group) return listener.defaultChain;
  const addr = ipToBigInt(ip);
  if (addr) {
    const host = group.hosts.get(hostKey(addr.family, addr.bits));
    if (host) return host;
    for (const [p, c] of group.nets) if (cidrContains(p, addr)) return c;
  }
  return group.any ?? listener.defaultChain;
}
