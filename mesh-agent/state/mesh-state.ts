/**
 * One immutable view of everything the control plane sent: listeners, route
 * configurations, clusters and endpoints, parsed and cross-indexed. The agent
 * holds the current one in a MeshStateStore; a new snapshot is parsed in full
 * before the single assignment that makes it current, so a request sees
 * either the old config or the new one, never a mix, and a bad snapshot
 * leaves the old one in force.
 */

import { SockmeshError } from '../../lib/errors.js';
import { ALLOW_ALL, Authorizer } from '../authz/authorizer.js';
import type { Endpoint } from '../balancer/types.js';
import { parseRouteConfiguration } from '../routing/config.js';
import type { RouteConfig } from '../routing/types.js';
import { type ClusterSettings, parseCluster } from './cluster.js';
import { parseEndpoints } from './endpoints.js';
import {
  type FilterChain,
  type ListenerConfig,
  parseListener,
  selectFilterChain,
  type TcpProxy,
} from './listener.js';
import { parseCached } from './parse-cache.js';

/** Resources of one type: by name (a map or record) or a plain list. */
export type ResourceSet =
  | ReadonlyMap<string, unknown>
  | Readonly<Record<string, unknown>>
  | readonly unknown[];

export interface XdsSnapshot {
  listeners?: ResourceSet;
  routes?: ResourceSet;
  clusters?: ResourceSet;
  endpoints?: ResourceSet;
  /** Opaque, for logs (e.g. the ADS version_info values). */
  version?: string;
  /** Per-type versions as the xDS client keeps them; used for `version` when that is unset. */
  versions?: Readonly<Record<string, string | undefined>>;
}

function versionOf(s: XdsSnapshot): string {
  if (s.version !== undefined) return s.version;
  if (!s.versions) return '';
  return Object.entries(s.versions)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export interface MeshStateOptions {
  /** The capture listener's name; default: the listener with use_original_dst, else the one on port 15001. */
  outboundListener?: string;
  /** The tunnel listener's name; default: the listener on port 15008. */
  inboundListener?: string;
}

export type OutboundMatch =
  | { kind: 'http'; routeConfig: RouteConfig; routeConfigName: string; chain: FilterChain; listener: string }
  | {
      kind: 'tcp';
      tcpProxy: TcpProxy;
      chain: FilterChain;
      listener: string;
      /**
       * The port does not declare its protocol: when the connection's first
       * bytes are HTTP, this is the match to use instead (protocol detection).
       */
      detectHttp?: HttpOutboundMatch;
    }
  | { kind: 'passthrough'; reason: 'no-listener' | 'no-filter-chain' | 'original-dst-cluster' };

type HttpOutboundMatch = Extract<OutboundMatch, { kind: 'http' }>;

export interface InboundMatch {
  chain: FilterChain | undefined;
  /** Network RBAC of the chain (allow-all when there is none). */
  authorizer: Authorizer;
  /** HTTP RBAC of the chain's connection manager, for per-request checks. */
  httpAuthorizer: Authorizer | undefined;
}

const EMPTY_ROUTES = (name: string): RouteConfig => ({
  name,
  virtualHosts: [],
  headers: { add: [], remove: [] },
  domains: { exact: new Map(), suffix: [], prefix: [], any: undefined },
});

function valuesOf(set: ResourceSet | undefined): unknown[] {
  if (set === undefined) return [];
  if (Array.isArray(set)) return [...set];
  if (set instanceof Map) return [...set.values()];
  return Object.values(set);
}

export class MeshState {
  private constructor(
    readonly version: string,
    private readonly listeners: ReadonlyMap<string, ListenerConfig>,
    private readonly routes: ReadonlyMap<string, RouteConfig>,
    private readonly clusters: ReadonlyMap<string, ClusterSettings>,
    private readonly assignments: ReadonlyMap<string, readonly Endpoint[]>,
    private readonly outbound: ListenerConfig | undefined,
    private readonly inbound: ListenerConfig | undefined,
    /** Dangling references (e.g. RDS not yet received); the config still works, with 404s. */
    readonly warnings: readonly string[],
  ) {
    for (const l of listeners.values()) {
      if (l.isApiListener || l === outbound || l === inbound || !l.address) continue;
      this.virtual.set(`${l.address.ip}|${l.address.port}`, l);
    }
  }

  /** Istio-style listeners bound (virtually) to one destination address. */
  private readonly virtual = new Map<string, ListenerConfig>();

  static empty(): MeshState {
    return new MeshState('', new Map(), new Map(), new Map(), new Map(), undefined, undefined, []);
  }

  /**
   * Parses a whole snapshot. Every invalid resource is reported in one
   * SOCKMESH_E_XDS error (the caller NACKs and keeps the previous state).
   */
  static fromSnapshot(snapshot: XdsSnapshot, opts: MeshStateOptions = {}): MeshState {
    const errors: string[] = [];
    const parseAll = <T>(
      set: ResourceSet | undefined,
      kind: string,
      parse: (v: unknown, path: string) => T,
      nameOf: (t: T) => string,
    ) => {
      const out = new Map<string, T>();
      valuesOf(set).forEach((raw, i) => {
        try {
          const parsed = parseCached(parse, raw, `${kind}[${i}]`);
          const name = nameOf(parsed);
          if (out.has(name)) errors.push(`${kind} ${JSON.stringify(name)} appears twice`);
          out.set(name, parsed);
        } catch (err) {
          errors.push(err instanceof Error ? err.message : String(err));
        }
      });
      return out;
    };
    const listeners = parseAll(snapshot.listeners, 'Listener', parseListener, (l) => l.name);
    const routes = parseAll(snapshot.routes, 'RouteConfiguration', parseRouteConfiguration, (r) => r.name);
    const clusters = parseAll(snapshot.clusters, 'Cluster', parseCluster, (c) => c.name);
    const cla = parseAll(snapshot.endpoints, 'ClusterLoadAssignment', parseEndpoints, (e) => e.clusterName);
    if (errors.length > 0) {
      throw new SockmeshError(
        'SOCKMESH_E_XDS',
        `rejected xDS snapshot (${errors.length} invalid resource${errors.length === 1 ? '' : 's'}): ${errors.join('; ')}`,
        { hint: 'fix the control plane output; the agent keeps serving the last good config' },
      );
    }
    const assignments = new Map<string, readonly Endpoint[]>();
    for (const [name, a] of cla) assignments.set(name, a.endpoints);

    const warnings: string[] = [];
    const pickListener = (
      wanted: string | undefined,
      fallback: (l: ListenerConfig) => boolean,
      what: string,
    ) => {
      if (wanted !== undefined) {
        const l = listeners.get(wanted);
        if (!l) warnings.push(`${what} listener ${JSON.stringify(wanted)} is not in the snapshot`);
        return l;
      }
      return [...listeners.values()].filter((l) => !l.isApiListener).find(fallback);
    };
    const outbound =
      pickListener(opts.outboundListener, (l) => l.useOriginalDst, 'outbound') ??
      (opts.outboundListener === undefined
        ? pickListener(undefined, (l) => l.address?.port === 15001, 'outbound')
        : undefined);
    const inbound = pickListener(opts.inboundListener, (l) => l.address?.port === 15008, 'inbound');

    for (const l of listeners.values()) {
      for (const c of [...l.chains, ...(l.defaultChain ? [l.defaultChain] : [])]) {
        const a = c.action;
        if (
          a.kind === 'http' &&
          a.http.routeConfigName !== undefined &&
          !routes.has(a.http.routeConfigName)
        ) {
          warnings.push(
            `listener ${l.name} chain ${c.name}: route configuration ${a.http.routeConfigName} not received`,
          );
        }
        if (a.kind === 'tcp') {
          const t = a.tcpProxy.target;
          for (const n of t.kind === 'cluster' ? [t.name] : t.weighted.clusters.map((w) => w.name)) {
            if (!clusters.has(n))
              warnings.push(`listener ${l.name} chain ${c.name}: cluster ${n} not received`);
          }
        }
      }
    }
    for (const rc of routes.values()) {
      for (const vh of rc.virtualHosts) {
        for (const r of vh.routes) {
          if (r.behaviour.kind !== 'forward') continue;
          const t = r.behaviour.action.target;
          const names = t.kind === 'cluster' ? [t.name] : t.weighted.clusters.map((c) => c.name);
          for (const n of names)
            if (!clusters.has(n)) warnings.push(`route ${rc.name}/${vh.name}: cluster ${n} not received`);
        }
      }
    }
    return new MeshState(
      versionOf(snapshot),
      listeners,
      routes,
      clusters,
      assignments,
      outbound,
      inbound,
      warnings,
    );
  }

  /** What to do with a captured connection to origDstIp:origDstPort. */
  matchOutbound(origDstIp: string, origDstPort: number): OutboundMatch {
    // An Istio-style virtual listener on exactly this address takes precedence.
    let listener = this.virtual.get(`${origDstIp}|${origDstPort}`);
    listener ??= this.outbound;
    if (!listener) return { kind: 'passthrough', reason: 'no-listener' };
    const chain = selectFilterChain(listener, origDstIp, origDstPort);
    if (!chain) return { kind: 'passthrough', reason: 'no-filter-chain' };
    const m = this.matchChain(chain, listener.name);
    const alt = chain.detectHttp && this.matchChain(chain.detectHttp, listener.name);
    return m.kind === 'tcp' && alt?.kind === 'http' ? { ...m, detectHttp: alt } : m;
  }

  private matchChain(chain: FilterChain, listener: string): OutboundMatch {
    const action = chain.action;
    if (action.kind === 'http') {
      const name = action.http.routeConfigName;
      const routeConfig =
        action.http.inlineRouteConfig ??
        (name === undefined ? undefined : this.routes.get(name)) ??
        EMPTY_ROUTES(name ?? '');
      return { kind: 'http', routeConfig, routeConfigName: routeConfig.name, chain, listener };
    }
    const t = action.tcpProxy.target;
    if (t.kind === 'cluster' && this.clusters.get(t.name)?.discovery === 'ORIGINAL_DST') {
      return { kind: 'passthrough', reason: 'original-dst-cluster' };
    }
    return { kind: 'tcp', tcpProxy: action.tcpProxy, chain, listener };
  }

  /** The tunnel listener's chain for a local destination, and the policy to apply. */
  matchInbound(destIp: string, destPort: number): InboundMatch {
    const chain = this.inbound ? selectFilterChain(this.inbound, destIp, destPort) : undefined;
    if (!chain) return { chain, authorizer: ALLOW_ALL, httpAuthorizer: undefined };
    const http = chain.action.kind === 'http' ? chain.action.http : undefined;
    return {
      chain,
      authorizer: chain.rbac.length === 0 ? ALLOW_ALL : new Authorizer(chain.rbac),
      httpAuthorizer: http && http.rbac.length > 0 ? new Authorizer(http.rbac) : undefined,
    };
  }

  routeConfig(name: string): RouteConfig | undefined {
    return this.routes.get(name);
  }

  cluster(name: string): ClusterSettings | undefined {
    return this.clusters.get(name);
  }

  clusterNames(): string[] {
    return [...this.clusters.keys()];
  }

  listener(name: string): ListenerConfig | undefined {
    return this.listeners.get(name);
  }

  /** A cluster's endpoints: its EDS assignment, or the inline load_assignment. Empty if unknown. */
  endpoints(clusterName: string): readonly Endpoint[] {
    const c = this.clusters.get(clusterName);
    if (!c) return [];
    if (c.discovery === 'EDS') return this.assignments.get(c.edsServiceName) ?? [];
    return c.inlineEndpoints ?? [];
  }
}

/** Holds the current MeshState; `apply` swaps atomically or not at all. */
export class MeshStateStore {
  private state: MeshState;

  constructor(
    private readonly opts: MeshStateOptions = {},
    initial: MeshState = MeshState.empty(),
  ) {
    this.state = initial;
  }

  get current(): MeshState {
    return this.state;
  }

  /** Parses `snapshot` and makes it current; on error throws and the previous state stays. */
  apply(snapshot: XdsSnapshot): MeshState {
    const next = MeshState.fromSnapshot(snapshot, this.opts);
    this.state = next;
    return next;
  }
}
