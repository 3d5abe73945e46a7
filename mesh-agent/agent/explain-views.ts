/**
 * The agent's `/explain/outbound` and `/explain/inbound` admin views: the
 * query read and checked, the live inputs gathered (config, cgroups, the
 * kernel's maps, ejections, breaker counts), the decision left to
 * explain/explain.ts. Read-only: nothing here changes state.
 */
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { SockopsDataplane } from '../../bpf-sockops/index.js';
import { SockmeshError } from '../../lib/errors.js';
import { type ClusterRuntimeView, explainInbound, explainOutbound } from '../explain/explain.js';
import type { ExplainRequest, Membership, MtlsMode, SourceSide } from '../explain/types.js';
import type { MeshState } from '../state/mesh-state.js';
import type { LocalView } from './local-view.js';
import type { PodCgroupLayout } from './pod-cgroups.js';

/** What the views read from the running agent. */
export interface ExplainSources {
  node: string;
  xds(): Record<string, string | undefined>;
  state(): MeshState;
  view(): LocalView;
  podCgroups: PodCgroupLayout;
  dataplane(): SockopsDataplane | undefined;
  svid(spiffeId: string): { spiffeId: string; serial: string; notAfter: string } | undefined;
  runtime: ClusterRuntimeView;
  /** `namespace/pod` of the permissive pods whose plaintext the agent takes. */
  plaintextPods(): readonly string[];
}

function need(q: URLSearchParams, name: string): string {
  const v = q.get(name);
  if (!v) throw new SockmeshError('SOCKMESH_E_USAGE', `missing query parameter '${name}'`);
  return v;
}

function ipParam(q: URLSearchParams, name: string): string {
  const v = need(q, name);
  if (isIP(v) !== 4) throw new SockmeshError('SOCKMESH_E_USAGE', `${name}=${v} is not an IPv4 address`);
  return v;
}

function portParam(q: URLSearchParams): number {
  const v = Number(need(q, 'port'));
  if (!Number.isInteger(v) || v < 1 || v > 65535)
    throw new SockmeshError('SOCKMESH_E_USAGE', `port=${q.get('port')} is not a port (1-65535)`);
  return v;
}

/** method, path, authority, repeated `header=name:value`. */
export function requestOf(q: URLSearchParams, defaultAuthority: string): ExplainRequest {
  const headers: Record<string, string> = {};
  for (const h of q.getAll('header')) {
    const colon = h.indexOf(':');
    if (colon <= 0) throw new SockmeshError('SOCKMESH_E_USAGE', `header=${h}: expected name:value`);
    headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  const path = q.get('path') ?? '/';
  if (!path.startsWith('/')) throw new SockmeshError('SOCKMESH_E_USAGE', `path=${path}: must start with /`);
  return {
    method: (q.get('method') ?? 'GET').toUpperCase(),
    path,
    authority: q.get('authority') ?? defaultAuthority,
    headers,
  };
}

/** A pod IP as this agent sees it: declared meshed pod? its cgroup? enrolled in sm_pods? */
function membership(src: ExplainSources, ip: string, cgroupHint: string | null): Membership {
  const pod = src.view().byIp(ip);
  const dp = src.dataplane();
  let cgroup: Membership['cgroup'] = { dir: null, id: null, tried: [] };
  if (pod) {
    const found = src.podCgroups.resolve(pod);
    if (found.found) {
      try {
        cgroup = { dir: found.dir, id: String(statSync(found.dir, { bigint: true }).ino), tried: [] };
      } catch {
        cgroup = { dir: null, id: null, tried: [found.dir] };
      }
    } else cgroup = { dir: null, id: null, tried: found.tried };
  } else if (cgroupHint !== null) {
    if (!/^\d+$/.test(cgroupHint))
      throw new SockmeshError('SOCKMESH_E_USAGE', `cgroup=${cgroupHint}: expected a cgroup id (decimal)`);
    cgroup = { dir: null, id: cgroupHint, tried: [] };
  }
  const mode = cgroup.id !== null && dp ? dp.podMode(BigInt(cgroup.id)) : undefined;
  return {
    ip,
    pod: pod ? `${pod.namespace}/${pod.name}` : null,
    spiffeId: pod?.spiffeId ?? null,
    mtls: pod?.mtlsMode ?? null,
    cgroup,
    enrolled: mode ? { mode: mode as MtlsMode } : null,
  };
}

export function explainViews(src: ExplainSources): Record<string, (q: URLSearchParams) => unknown> {
  return {
    /** ?src=<pod ip>&dst=<ip>&port=<n>[&method&path&authority&header=k:v...][&cgroup=<id>] */
    '/explain/outbound': (q) => {
      const srcIp = ipParam(q, 'src');
      const dstIp = ipParam(q, 'dst');
      const port = portParam(q);
      const m = membership(src, srcIp, q.get('cgroup'));
      const svid = m.spiffeId ? src.svid(m.spiffeId) : undefined;
      const source: SourceSide = { ...m, svid: svid ?? null };
      const dp = src.dataplane();
      const cfg = dp?.config();
      const excl = dp?.exclusions();
      return explainOutbound({
        node: src.node,
        xds: src.xds(),
        state: src.state(),
        source,
        dstIp,
        dstPort: port,
        request: requestOf(q, `${dstIp}:${port}`),
        capture: {
          proxy: cfg?.proxy ? { ip: cfg.proxy.ip, port: cfg.proxy.port } : undefined,
          excludedPorts: excl?.ports ?? [],
          excludedCidrs: excl?.cidrs ?? [],
        },
        runtime: src.runtime,
      });
    },
    /** ?dst=<local pod ip>&port=<n>[&principal=<spiffe id>][&method&path&authority&header=k:v...] */
    '/explain/inbound': (q) => {
      const dstIp = ipParam(q, 'dst');
      const port = portParam(q);
      const principal = q.get('principal');
      if (principal !== null && !principal.startsWith('spiffe://'))
        throw new SockmeshError('SOCKMESH_E_USAGE', `principal=${principal}: expected a spiffe:// ID`);
      const d = membership(src, dstIp, q.get('cgroup'));
      const pod = src.view().byIp(dstIp);
      return explainInbound({
        node: src.node,
        xds: src.xds(),
        state: src.state(),
        destination: d,
        port,
        protocol: pod?.protocolOf(port) ?? 'tcp',
        principal,
        request: requestOf(q, `${dstIp}:${port}`),
        plaintextTaken: d.pod !== null && src.plaintextPods().includes(d.pod),
      });
    },
  };
}
