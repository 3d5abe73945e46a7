import type {
  Endpoint,
  HttpRequestView,
  OutboundPlan,
  OutboundPlanner,
  Outcome,
  RetryPlan,
  RouteDecision,
  TcpPlan,
} from '../outbound/plan.js';
import { type AttemptOutcome, backoffMs, isRetriable, type RetryPolicy } from '../retry/policy.js';
import { hashKeyFor } from '../routing/hash-key.js';
import { applyHeaderMutations, requestMutationLevels } from '../routing/headers.js';
import { selectRoute } from '../routing/select.js';
import type { RouteConfig } from '../routing/types.js';
import { chooseCluster } from '../routing/weighted.js';
import type { MeshState } from '../state/mesh-state.js';
import { type ClusterContext, ClusterRuntime, planEndpoint } from './clusters.js';

function toAttempt(o: Outcome): AttemptOutcome {
  switch (o.kind) {
    case 'status':
      return { kind: 'response', status: o.status, grpcStatus: o.grpcStatus };
    case 'timeout':
      return { kind: 'per-try-timeout' };
    case 'success':
      return { kind: 'response', status: 200 };
    default:
      return o;
  }
}

function retryPlan(policy: RetryPolicy): RetryPlan {
  return {
    numRetries: policy.numRetries,
    perTryTimeoutMs: policy.perTryTimeoutMs,
    shouldRetry: (o) => isRetriable(policy, toAttempt(o)),
    backoffMs: (n) => backoffMs(policy.backoff, n),
  };
}

function emptyRoutes(name: string): RouteConfig {
  return {
    name,
    virtualHosts: [],
    headers: { add: [], remove: [] },
    domains: { exact: new Map(), suffix: [], prefix: [], any: undefined },
  };
}

/** `reviews.shop.svc.cluster.local:9080` -> `reviews.shop`. */
function serviceOfRoute(name: string): string {
  return name.split(':')[0]!.split('.').slice(0, 2).join('.');
}

/**
 * Answers the outbound proxy from the current xDS state: which route, which
 * cluster (the canary split happens here), which endpoint.
 */
export class MeshPlanner implements OutboundPlanner {
  private state: MeshState | undefined;
  private readonly runtimes = new Map<string, ClusterRuntime>();
  private byIp = new Map<string, Endpoint>();
  /** Route configuration per HTTP destination address, for the current state only. */
  private routeCache = new Map<string, RouteConfig>();

  constructor(
    private readonly localNode: string,
    private readonly ctx: ClusterContext,
  ) {}

  /** Takes a new state: clusters keep breaker/outlier state by name, vanished ones are dropped. */
  update(state: MeshState): void {
    this.state = state;
    this.routeCache = new Map();
    const names = new Set(state.clusterNames());
    for (const [name, rt] of this.runtimes) {
      if (!names.has(name)) {
        rt.close();
        this.runtimes.delete(name);
      }
    }
    const byIp = new Map<string, Endpoint>();
    for (const name of names) {
      const settings = state.cluster(name);
      if (!settings || settings.discovery === 'ORIGINAL_DST') continue;
      const eps = state.endpoints(name);
      const rt = this.runtimes.get(name);
      if (rt) rt.update(settings, eps);
      else this.runtimes.set(name, new ClusterRuntime(name, settings, eps, this.localNode, this.ctx));
      for (const e of eps) {
        if (e.meta.spiffeId && !byIp.has(e.address)) byIp.set(e.address, planEndpoint(e, this.localNode));
      }
    }
    this.byIp = byIp;
  }

  cluster(name: string): ClusterRuntime | undefined {
    return this.runtimes.get(name);
  }

  clusters(): IterableIterator<ClusterRuntime> {
    return this.runtimes.values();
  }

  close(): void {
    for (const rt of this.runtimes.values()) rt.close();
    this.runtimes.clear();
  }

  endpointAt(ip: string, port: number): Endpoint | undefined {
    const e = this.byIp.get(ip);
    return e ? { ...e, port, key: `${ip}:${port}` } : undefined;
  }

  plan(origIp: string, origPort: number): OutboundPlan {
    const state = this.state;
    if (!state) return { kind: 'passthrough' };
    const m = state.matchOutbound(origIp, origPort);
    if (m.kind === 'http') {
      const name = m.routeConfigName;
      return {
        kind: 'http',
        service: serviceOfRoute(name),
        route: (req) => this.route(this.routesNow(origIp, origPort, name), req),
      };
    }
    if (m.kind === 'tcp') {
      const tcp = m.tcpProxy;
      const asTcp: TcpPlan = {
        kind: 'tcp',
        service: m.chain.name,
        cluster: () => this.runtimes.get(chooseCluster(tcp.target).name) ?? null,
        idleTimeoutMs: tcp.idleTimeoutMs ?? undefined,
      };
      // A port that does not declare its protocol: the first bytes choose HTTP or TCP.
      const alt = m.detectHttp;
      if (!alt) return asTcp;
      const name = alt.routeConfigName;
      return {
        kind: 'detect',
        tcp: asTcp,
        http: {
          kind: 'http',
          service: serviceOfRoute(name),
          route: (req) => this.route(this.routesNow(origIp, origPort, name), req),
        },
      };
    }
    return { kind: 'passthrough' };
  }

  /**
   * The route configuration a request on an open HTTP connection to origIp:origPort
   * follows now: every request is planned against the current state as a whole
   * (routes and clusters of one version), not the one its connection was accepted
   * under. A listener that no longer sends the address to HTTP leaves the
   * connection on the route configuration it was accepted with, by name (Envoy
   * drains such connections with their HCM; RDS updates still reach them).
   */
  private routesNow(origIp: string, origPort: number, name: string): RouteConfig {
    const key = `${origIp}|${origPort}`;
    const cached = this.routeCache.get(key);
    if (cached) return cached;
    const state = this.state!;
    const m = state.matchOutbound(origIp, origPort);
    const http = m.kind === 'http' ? m : m.kind === 'tcp' ? m.detectHttp : undefined;
    const rc = http?.routeConfig ?? state.routeConfig(name) ?? emptyRoutes(name);
    // Bounded by the config's HTTP destinations; a new state starts an empty cache.
    if (this.routeCache.size < 4096) this.routeCache.set(key, rc);
    return rc;
  }

  private route(rc: RouteConfig, req: HttpRequestView): RouteDecision {
    const http = { authority: req.authority, path: req.path, method: req.method, headers: req.headers };
    const d = selectRoute(rc, http);
    if (d.kind === 'respond') {
      return {
        kind: 'reject',
        status: d.status,
        body:
          d.body ??
          (d.reason === 'direct-response' ? '' : `no route for ${req.method} ${req.authority}${req.path}\n`),
        flag: d.reason === 'direct-response' ? '-' : 'NR',
      };
    }
    const chosen = chooseCluster(d.action.target);
    const cluster = this.runtimes.get(chosen.name);
    if (!cluster) {
      return { kind: 'reject', status: 503, body: `cluster ${chosen.name} is not known yet\n`, flag: 'UH' };
    }
    const policy = d.action.retry ?? d.virtualHost.retry;
    return {
      kind: 'forward',
      cluster,
      timeoutMs: d.action.timeoutMs ?? undefined,
      idleTimeoutMs: d.action.idleTimeoutMs,
      retry: policy ? retryPlan(policy) : undefined,
      headers: applyHeaderMutations(req.headers, requestMutationLevels(rc, d, chosen.weighted)),
      hashKey: hashKeyFor(d.action.hashPolicy, http, req.sourceIp),
      routeName: d.route.name ?? rc.name,
    };
  }
}
