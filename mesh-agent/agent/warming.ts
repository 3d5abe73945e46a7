/**
 * Envoy's warming, for a state-of-the-world xDS client that hands over each
 * type as it arrives: the config the agent applies is always one consistent
 * set. A cluster is used once it is warm (an EDS cluster once its
 * ClusterLoadAssignment arrived); listeners and route configurations move to
 * a new version only when every cluster and route configuration they name is
 * there; a cluster the control plane removed stays (with its endpoints) while
 * an applied listener or route still names it. So a renamed cluster never
 * leaves a route pointing at nothing ("not known yet", 503 UH). Pure: the
 * caller supplies the clock and re-runs `next` when `retryAtMs` is due.
 */
import { edsNames, routeNames, type XdsConfig } from '../../xds/client/ads-client.js';
import type { ProtoObject } from '../../xds/protos.js';

type Resources = ReadonlyMap<string, ProtoObject>;

/** How long listeners and routes wait for what they name (Envoy's initial_fetch_timeout is 15 s). */
export const WARMING_TIMEOUT_MS = 10_000;

export interface WarmResult {
  /** What to apply: one consistent set. */
  config: XdsConfig;
  /** Names listeners or routes wait for (`cluster X`, `route configuration R`); empty when the update is in full. */
  waiting: string[];
  /** When waiting, the time (ms, the caller's clock) to call `next` again even without an update. */
  retryAtMs: number | undefined;
}

export class Warming {
  private applied: XdsConfig | undefined;
  /** The names waited for, and since when. */
  private waitingSince = new Map<string, number>();

  constructor(private readonly timeoutMs = WARMING_TIMEOUT_MS) {}

  next(latest: XdsConfig, nowMs: number): WarmResult {
    const prev = this.applied;
    // 1. Clusters and their endpoints first: a warm cluster of the update, else the one in force.
    const clusters = new Map<string, ProtoObject>();
    const endpoints = new Map<string, ProtoObject>();
    const keep = (name: string): boolean => {
      const c = prev?.clusters.get(name);
      if (!c || !prev) return false;
      clusters.set(name, c);
      const eds = edsServiceName(c);
      const cla = eds === undefined ? undefined : prev.endpoints.get(eds);
      if (eds !== undefined && cla) endpoints.set(eds, cla);
      return true;
    };
    for (const [name, c] of latest.clusters) {
      const eds = edsServiceName(c);
      if (eds === undefined) clusters.set(name, c);
      else if (latest.endpoints.has(eds)) {
        clusters.set(name, c);
        endpoints.set(eds, latest.endpoints.get(eds)!);
      } else keep(name);
    }
    // 2. Listeners and routes of the update, once everything they name is there.
    const missing = [
      ...[...clusterRefs(latest.listeners, latest.routes)]
        .filter((n) => !clusters.has(n))
        .map((n) => `cluster ${n}`),
      ...routeNames(latest.listeners)
        .filter((n) => !latest.routes.has(n))
        .map((n) => `route configuration ${n}`),
    ];
    const since = new Map<string, number>();
    for (const m of missing) since.set(m, this.waitingSince.get(m) ?? nowMs);
    this.waitingSince = since;
    const waiting = prev ? missing.filter((m) => nowMs - since.get(m)! < this.timeoutMs) : [];
    const front = waiting.length === 0 ? latest : prev!;
    const routes = front.routes;
    // 3. What the applied listeners and routes name stays, even if the update removed it.
    for (const n of clusterRefs(front.listeners, routes)) if (!clusters.has(n)) keep(n);
    const config: XdsConfig = {
      listeners: front.listeners,
      routes,
      clusters,
      endpoints,
      versions:
        front === latest
          ? latest.versions
          : { ...latest.versions, LDS: prev!.versions.LDS, RDS: prev!.versions.RDS },
    };
    this.applied = config;
    const oldest = Math.min(...waiting.map((m) => since.get(m)!));
    return { config, waiting, retryAtMs: waiting.length ? oldest + this.timeoutMs : undefined };
  }
}

function edsServiceName(c: ProtoObject): string | undefined {
  return edsNames(new Map([['c', c]]))[0];
}

/** Clusters that route configurations and TCP proxies (filter chains, inline HCM routes) name. */
export function clusterRefs(listeners: Resources, routes: Resources): Set<string> {
  const out = new Set<string>();
  const target = (t: unknown) => {
    const o = t as { cluster?: unknown; weighted_clusters?: { clusters?: { name?: unknown }[] } } | undefined;
    if (typeof o?.cluster === 'string' && o.cluster) out.add(o.cluster);
    for (const w of o?.weighted_clusters?.clusters ?? []) if (typeof w.name === 'string') out.add(w.name);
  };
  const routeConfig = (rc: unknown) => {
    const vhs = (rc as { virtual_hosts?: { routes?: { route?: unknown }[] }[] } | undefined)?.virtual_hosts;
    for (const vh of vhs ?? []) for (const r of vh.routes ?? []) target(r.route);
  };
  for (const rc of routes.values()) routeConfig(rc);
  for (const l of listeners.values()) {
    const chains = [...((l.filter_chains as unknown[] | undefined) ?? []), l.default_filter_chain];
    for (const c of chains) {
      for (const f of (c as { filters?: { typed_config?: unknown }[] } | undefined)?.filters ?? []) {
        const cfg = f.typed_config as { '@type'?: string; route_config?: unknown } | undefined;
        if (cfg?.['@type']?.endsWith('.TcpProxy')) target(cfg);
        else if (cfg?.route_config) routeConfig(cfg.route_config);
      }
    }
  }
  return out;
}
