/**
 * Permissive pods: plaintext from outside the mesh still reaches them, but
 * through the proxy, so AuthorizationPolicy applies to it (as an
 * unauthenticated caller) and every denial is counted. The kernel side
 * (bpf-sockops `captureInbound`) puts a listener on 15006 inside the pod's
 * network namespace and steers the pod's inbound connections to it with
 * sk_lookup; this module owns those listeners and hands each connection to an
 * InboundServer. It runs in the agent's primary: plaintext is migration
 * traffic, and a listener fd cannot follow a replaced worker.
 */
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { SockopsDataplane, TcpTagger } from '../../bpf-sockops/index.js';
import { parseSpiffeId, workloadOf } from '../../certs/index.js';
import type { Logger } from '../../lib/log.js';
import { type InboundEvents, InboundServer } from '../inbound/server.js';
import type { MeshState } from '../state/mesh-state.js';
import type { MeshTelemetry } from '../telemetry/mesh-telemetry.js';
import { type LocalView, MeshAuthorization } from './local-view.js';

/** The inbound side as this node sees it: its pods, their RBAC, denials reported to telemetry. */
export function meshInboundServer(o: {
  view: () => LocalView;
  state: () => MeshState;
  telemetry: MeshTelemetry;
  log: Logger;
  tcp?: TcpTagger;
  trustSenderIdentity?: boolean;
}): InboundServer {
  return new InboundServer({
    trustSenderIdentity: o.trustSenderIdentity === true,
    workloads: { byIp: (ip: string) => o.view().byIp(ip) },
    authz: new MeshAuthorization(o.state),
    log: o.log,
    ...(o.tcp ? { tcp: o.tcp } : {}),
    events: {
      denied: (ev) =>
        o.telemetry.authzDenied({
          sourcePrincipal: ev.source ?? '-',
          destinationWorkload: ev.destination.name,
          destinationNamespace: ev.destination.namespace,
          policy: ev.policy,
        }),
      identityRejected: (ev) => o.telemetry.identityRejected(ev),
      request: (ev) => reportInbound(o.telemetry, ev),
    },
  });
}

/** What an InboundServer reports per request it answered or relayed (the called pod's side). */
export type InboundRequest = Parameters<NonNullable<InboundEvents['request']>>[0];

/**
 * A request as the destination's agent saw it (reporter=destination): the caller is known by its
 * verified SPIFFE ID only (namespace read from it; plaintext callers are unknown), the destination
 * is the local pod. Callers outside the mesh are counted here alone.
 */
export function reportInbound(t: MeshTelemetry, ev: InboundRequest): void {
  const principal = ev.source ?? '';
  let namespace = '';
  if (principal) {
    try {
      namespace = workloadOf(parseSpiffeId(principal))?.namespace ?? '';
    } catch {
      namespace = '';
    }
  }
  t.requestCompleted({
    source: { workload: '', namespace, version: '', principal },
    destination: {
      service: '',
      workload: ev.destination.name,
      namespace: ev.destination.namespace,
      version: ev.destination.version ?? '',
      cluster: '',
    },
    protocol: 'http',
    reporter: 'destination',
    code: ev.status,
    flags: '-',
    durationMs: ev.durationMs,
    method: ev.method,
  });
}

/**
 * The network namespace of the first process found in a pod's cgroup tree
 * (the pod's sandbox or any container), as a path the kernel can open.
 */
export function netnsOfCgroup(dir: string, depth = 4): string | undefined {
  try {
    const pid = readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .find((l) => l.trim() !== '');
    if (pid) return `/proc/${pid.trim()}/ns/net`;
    if (depth === 0) return undefined;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const found = netnsOfCgroup(join(dir, e.name), depth - 1);
      if (found) return found;
    }
  } catch {
    // the cgroup went away
  }
  return undefined;
}

interface Taken {
  ip: string;
  fd: number;
  server: net.Server;
  /** Plaintext connections accepted for the pod: closed when it stops taking plaintext (strict, or gone). */
  accepted: Set<net.Socket>;
}

export interface PermissiveOptions {
  dataplane: SockopsDataplane;
  inbound: InboundServer;
  log: Logger;
  /** How often to look again for pods that have no process (hence no netns) yet. */
  retryMs?: number;
  /** A pod's 15006 listener handed over by the agent this one replaces (the kernel already steers to it). */
  inherited?: (podIp: string) => number | undefined;
}

export class PermissiveInbound {
  private readonly taken = new Map<string, Taken>();
  /** Pods to take, by key (`ns/pod`): their IP and cgroup directory. */
  private want = new Map<string, { ip: string; cgroupDir: string }>();
  private retry: NodeJS.Timeout | undefined;

  constructor(private readonly o: PermissiveOptions) {}

  /** Takes exactly these pods' plaintext; gives back the rest to their pods. */
  reconcile(want: Map<string, { ip: string; cgroupDir: string }>): void {
    this.want = want;
    for (const [key, t] of this.taken) {
      if (want.get(key)?.ip === t.ip) continue;
      this.release(key, t);
    }
    // Left by an earlier agent for pods that are gone: their IP may come back as another pod.
    const wantedIps = new Set([...want.values()].map((p) => p.ip));
    for (const ip of this.o.dataplane.inboundPods()) {
      if (wantedIps.has(ip)) continue;
      this.o.dataplane.releaseInbound(ip);
      this.o.log.info('released inbound plaintext of a pod that is gone', { ip });
    }
    this.captureMissing();
  }

  /** Takes the wanted pods not taken yet; retries later while some have no netns (or fail). */
  private captureMissing(): void {
    let pending = 0;
    for (const [key, pod] of this.want) {
      if (this.taken.has(key)) continue;
      const inherited = this.o.inherited?.(pod.ip);
      const netns = inherited === undefined ? netnsOfCgroup(pod.cgroupDir) : undefined;
      if (inherited === undefined && !netns) {
        pending++;
        continue;
      }
      try {
        const fd = inherited ?? this.o.dataplane.captureInbound({ ip: pod.ip, netnsPath: netns! });
        const accepted = new Set<net.Socket>();
        const server = net.createServer((socket) => {
          accepted.add(socket);
          socket.once('close', () => accepted.delete(socket));
          this.o.inbound.handlePlaintext(socket);
        });
        server.on('error', (err) => this.o.log.warn('permissive listener failed', { pod: key, err }));
        server.listen({ fd });
        this.taken.set(key, { ip: pod.ip, fd, server, accepted });
        this.o.log.info('taking inbound plaintext (permissive)', { pod: key, ip: pod.ip });
      } catch (err) {
        pending++;
        this.o.log.warn('could not take inbound plaintext; the pod refuses it until then', { pod: key, err });
      }
    }
    clearTimeout(this.retry);
    this.retry = undefined;
    if (pending > 0) {
      // Only this class writes the kernel's inbound maps: a retry has nothing new to sweep.
      this.retry = setTimeout(() => this.captureMissing(), this.o.retryMs ?? 1000);
      this.retry.unref();
    }
  }

  /** Pod keys whose plaintext is taken. */
  pods(): string[] {
    return [...this.taken.keys()];
  }

  /** The pods' listening sockets (inside their netns), for a successor agent to take over. */
  listeners(): { ip: string; fd: number }[] {
    return [...this.taken.values()].map((t) => ({ ip: t.ip, fd: t.fd }));
  }

  private release(key: string, t: Taken): void {
    this.o.dataplane.releaseInbound(t.ip);
    t.server.close();
    this.taken.delete(key);
    // Plaintext accepted while the pod was permissive must not outlive it (a switch to strict
    // would otherwise keep serving unauthenticated keep-alive clients).
    const closed = t.accepted.size;
    for (const s of t.accepted) s.resetAndDestroy();
    t.accepted.clear();
    this.o.log.info('gave inbound plaintext back to the pod', { pod: key, closedConnections: closed });
  }

  /**
   * Closes the listeners but leaves the kernel side in place: until the next
   * agent takes over, the pods refuse plaintext instead of taking it unchecked.
   */
  stop(): void {
    clearTimeout(this.retry);
    for (const t of this.taken.values()) t.server.close();
    this.taken.clear();
  }
}
