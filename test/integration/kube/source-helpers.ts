// Shared pieces of the Kubernetes-source tests: a control plane on a KubernetesSource, snapshot
// readers, kubectl that fails loudly, and a loopback TCP proxy that can go silent (a stalled
// connection) or refuse (an outage) between the source and the real API server.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type KubeCluster, startKubeCluster } from '../../../lab/kube/cluster.js';
import { nullLogger } from '../../../lib/log.js';
import { AdsClient } from '../../../xds/client/ads-client.js';
import { LrsClient } from '../../../xds/client/lrs-client.js';
import { decodeResource } from '../../../xds/codec.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, type ProtoObject, ROUTE_TYPE } from '../../../xds/protos.js';
import { ControlPlane } from '../../../xds/server/control-plane.js';
import { loadKubeconfig } from '../../../xds/sources/kube/config.js';
import type { ReflectorOptions } from '../../../xds/sources/kube/reflector.js';
import { KubernetesSource } from '../../../xds/sources/kubernetes.js';

export const uniq = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

export async function kubectl(cluster: KubeCluster, args: string[], input?: string): Promise<string> {
  const r = await cluster.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 20_000,
  everyMs = 10,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface KubeControlPlane {
  cp: ControlPlane;
  source: KubernetesSource;
}

export async function startKubeControlPlane(
  cluster: KubeCluster,
  opts: { server?: string; reflector?: ReflectorOptions } = {},
): Promise<KubeControlPlane> {
  const connection = loadKubeconfig(cluster.kubeconfig);
  if (opts.server) connection.server = opts.server;
  const source = new KubernetesSource({ connection, logger: nullLogger, reflector: opts.reflector });
  const cp = new ControlPlane({
    source,
    listen: [{ address: '127.0.0.1:0' }],
    logger: nullLogger,
    debounceMs: 10,
  });
  try {
    await source.sync();
    await cp.start();
  } catch (err) {
    await cp.close().catch(() => {});
    throw err;
  }
  return { cp, source };
}

type Decoded = Record<string, unknown>;

function decodedAll(
  cp: ControlPlane,
  typeUrl: typeof ROUTE_TYPE | typeof ENDPOINT_TYPE | typeof CLUSTER_TYPE,
) {
  const snap = cp.snapshot;
  if (!snap) return new Map<string, Decoded>();
  const out = new Map<string, Decoded>();
  for (const [name, r] of snap.wildcard(typeUrl, 'node1'))
    out.set(name, decodeResource(typeUrl, r.bytes) as Decoded);
  return out;
}

/** `cluster name -> weight` of the first weighted route of a RouteConfiguration; undefined when absent. */
export function routeWeights(cp: ControlPlane, routeConfig: string): Record<string, number> | undefined {
  const rc = decodedAll(cp, ROUTE_TYPE).get(routeConfig) as
    | {
        virtual_hosts?: {
          routes?: {
            route?: { weighted_clusters?: { clusters: { name: string; weight?: { value: number } }[] } };
          }[];
        }[];
      }
    | undefined;
  for (const vh of rc?.virtual_hosts ?? [])
    for (const r of vh.routes ?? []) {
      const wc = r.route?.weighted_clusters;
      if (wc) return Object.fromEntries(wc.clusters.map((c) => [c.name, c.weight?.value ?? 0]));
    }
  return undefined;
}

/** Name and `:path` match (exact `path` or `safe_regex`) of every route of a RouteConfiguration. */
export function routeMatches(cp: ControlPlane, routeConfig: string): { name: string; path: string }[] {
  const rc = decodedAll(cp, ROUTE_TYPE).get(routeConfig) as
    | {
        virtual_hosts?: {
          routes?: {
            name: string;
            match: { path?: string; prefix?: string; safe_regex?: { regex: string } };
          }[];
        }[];
      }
    | undefined;
  return (rc?.virtual_hosts ?? []).flatMap((vh) =>
    (vh.routes ?? []).map((r) => ({
      name: r.name,
      path: r.match.path ?? r.match.safe_regex?.regex ?? `${r.match.prefix}*`,
    })),
  );
}

/** Endpoint `ip:port`s of a cluster, sorted; undefined when the cluster has no assignment. */
export function endpointsOf(cp: ControlPlane, cluster: string): string[] | undefined {
  const cla = decodedAll(cp, ENDPOINT_TYPE).get(cluster) as
    | {
        endpoints?: {
          lb_endpoints?: {
            endpoint: { address: { socket_address: { address: string; port_value: number } } };
          }[];
        }[];
      }
    | undefined;
  if (!cla) return undefined;
  return (cla.endpoints ?? [])
    .flatMap((l) => l.lb_endpoints ?? [])
    .map(
      (e) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`,
    )
    .sort();
}

/** Every resource of every shared type with its content hash: "nothing else changed" compares these. */
export function resourceHashes(cp: ControlPlane): Record<string, string> {
  const snap = cp.snapshot;
  const out: Record<string, string> = {};
  if (!snap) return out;
  for (const t of [ROUTE_TYPE, ENDPOINT_TYPE, CLUSTER_TYPE] as const)
    for (const [name, r] of snap.wildcard(t, 'node1')) out[`${t}|${name}`] = r.hash;
  return out;
}

/**
 * A loopback TCP proxy to the API server. `freeze()`: every open connection, and every one
 * accepted until `thaw()`, is blackholed for good: it stays open and carries nothing (a stalled
 * path: a NAT that lost the flow, a hung peer). Nothing ever closes those for the client; only
 * its own watchdog can. After `thaw()` new connections flow again.
 */
export class StallProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly blackholed = new WeakSet<Socket>();
  private frozen = false;
  port = 0;

  constructor(private readonly upstreamPort: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      client.on('error', () => {});
      if (this.frozen) {
        this.blackholed.add(client);
        return;
      }
      const up = tcpConnect(this.upstreamPort, '127.0.0.1');
      this.sockets.add(up);
      up.on('close', () => {
        this.sockets.delete(up);
        client.destroy();
      });
      up.on('error', () => client.destroy());
      client.on('close', () => up.destroy());
      client.on('data', (d) => {
        if (!this.blackholed.has(client)) up.write(d);
      });
      up.on('data', (d) => {
        if (!this.blackholed.has(client)) client.write(d);
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  freeze(): void {
    this.frozen = true;
    for (const s of this.sockets) this.blackholed.add(s);
  }

  thaw(): void {
    this.frozen = false;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** A `sockmesh control-plane` process on a kubeconfig: its xDS and admin addresses, its logs, its pid. */
export interface ControlPlaneProcess {
  child: ChildProcess;
  xds: string;
  admin: string;
  /** stderr so far (JSON log lines). */
  logs(): string;
  /** Signals the process by its pid and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function spawnControlPlane(
  kubeconfig: string,
  extra: string[] = [],
): Promise<ControlPlaneProcess> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(root, 'cli/main.ts'),
      'control-plane',
      '--kubeconfig',
      kubeconfig,
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
      ...extra,
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => {
    stdout += d;
  });
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal);
    return exited;
  };
  try {
    const m = await waitFor(
      'the control plane serving',
      () => {
        if (child.exitCode !== null) throw new Error(`control plane exited ${child.exitCode}: ${stderr}`);
        return /on (127\.0\.0\.1:\d+); admin on (\S+)\n/.exec(stdout) ?? undefined;
      },
      60_000,
      50,
    );
    return { child, xds: m[1]!, admin: m[2]!, logs: () => stderr, stop };
  } catch (err) {
    await stop('SIGKILL');
    throw err;
  }
}

/** The sockmesh CRDs, as the chart ships them. */
export const SOCKMESH_CRDS = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../charts/sockmesh/files/crds',
);

/** Applies the sockmesh CRDs and waits until the API server serves them. */
export async function applySockmeshCrds(cluster: KubeCluster): Promise<void> {
  await kubectl(cluster, ['apply', '-f', SOCKMESH_CRDS]);
  await kubectl(cluster, ['wait', '--for=condition=Established', '--timeout=60s', '-f', SOCKMESH_CRDS]);
}

/** A Service of the guard tests' shop in `ns`: one HTTP port, 9080. */
export const serviceYaml = (ns: string, name: string, ip: string) => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${ns} }
spec:
  clusterIP: ${ip}
  selector: { app: ${name} }
  ports: [{ name: http, port: 9080, targetPort: 9080, appProtocol: http }]
`;

/** The weight of `cluster` in the first route of a RouteConfiguration (as an agent decoded it) that splits to it. */
export function weightOf(rc: ProtoObject | undefined, cluster: string): number | undefined {
  for (const vh of (rc?.virtual_hosts as ProtoObject[] | undefined) ?? [])
    for (const r of (vh.routes as ProtoObject[] | undefined) ?? []) {
      const wc = (r.route as ProtoObject | undefined)?.weighted_clusters as ProtoObject | undefined;
      const c = ((wc?.clusters as ProtoObject[] | undefined) ?? []).find((x) => x.name === cluster);
      if (c) {
        const w = c.weight as number | { value?: number } | undefined;
        return typeof w === 'number' ? w : (w?.value ?? 0);
      }
    }
  return undefined;
}

/**
 * An agent's ADS stream to `p` as `node`: the weight of `cluster` in `route` in every
 * RouteConfiguration push (the array fills as pushes come). The client goes into `clients` to be closed.
 */
export function watchWeights(
  p: ControlPlaneProcess,
  node: string,
  route: string,
  cluster: string,
  clients: Array<{ close(): void }>,
): number[] {
  const pushes: number[] = [];
  const ads = new AdsClient({ target: p.xds, node: { id: node }, logger: nullLogger });
  ads.on('update', (config, changed) => {
    if (!changed.endsWith('RouteConfiguration')) return;
    const w = weightOf(config.routes.get(route), cluster);
    if (w !== undefined) pushes.push(w);
  });
  ads.start();
  clients.push(ads);
  return pushes;
}

/**
 * An agent's LRS stream (the real LrsClient) to `target` as `node`: its callers see `canary` fail
 * 4 times in 5 and `baseline` never, reported every second. Started; the caller closes it.
 */
export function failingCanaryReports(
  target: string,
  node: string,
  baseline: string,
  canary: string,
): LrsClient {
  let n = 0;
  const lrs = new LrsClient({
    target,
    node: { id: node, locality: { zone: node } },
    logger: nullLogger,
    collect: async () => {
      n += 1;
      return [
        { cluster: baseline, successes: 90 * n, errors: 0, fast: new Map([[25, 90 * n]]) },
        { cluster: canary, successes: 2 * n, errors: 8 * n, fast: new Map([[25, 10 * n]]) },
      ];
    },
  });
  lrs.start();
  return lrs;
}

/** The guard on HTTPRoute `reviews` in `ns`: canary reviews-v2 against reviews-v1, judged every second. */
export const reviewsGuardYaml = (ns: string) => `---
apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: reviews, namespace: ${ns} }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: reviews }
  canaryRef: { name: reviews-v2 }
  baselineRef: { name: reviews-v1 }
  bounds: { minSuccessRate: 99 }
  interval: 1s
  minRequests: 10
`;

/** One test file's shop on its own cluster: its names, and what the file started, stopped after it. */
export interface GuardShop {
  ns: string;
  /** The outbound cluster of a Service of the shop, port 9080. */
  cluster(svc: string): string;
  /** The RouteConfiguration of reviews:9080. */
  route: string;
  kube(): KubeCluster;
  /** Control plane processes, killed by pid after the file. */
  processes: ControlPlaneProcess[];
  /** ADS and LRS clients, closed after the file. */
  clients: Array<{ close(): void }>;
}

/** Registers the file's before/after: a kube-apiserver (with the Gateway API CRDs) for the file. */
export function guardShopPerFile(): GuardShop {
  const ns = uniq('shop');
  const fqdn = (svc: string) => `${svc}.${ns}.svc.cluster.local`;
  let cluster: KubeCluster | undefined;
  const shop: GuardShop = {
    ns,
    cluster: (svc) => `outbound|9080||${fqdn(svc)}`,
    route: `${fqdn('reviews')}:9080`,
    kube: () => {
      if (!cluster) throw new Error('the cluster did not start');
      return cluster;
    },
    processes: [],
    clients: [],
  };
  before(async () => {
    cluster = await startKubeCluster({ name: uniq('kc'), gatewayCrds: true });
  });
  after(async () => {
    for (const c of shop.clients) c.close();
    for (const p of shop.processes) await p.stop('SIGKILL');
    await cluster?.stop();
  });
  return shop;
}
