/**
 * The agent's side of kernel L4 authorization: reads the identity ids and the
 * mesh-wide RBAC the control plane puts on the outbound listener, compiles them
 * (authz/kernel-policy.ts) with this node's pods as callers, and swaps the
 * result into the BPF maps. A table the maps cannot hold, or metadata that does
 * not parse, is logged and the last good rule set stays in force. Also answers
 * "what would the kernel decide" for a pair, for `sockmesh explain`.
 */
import type { KernelDecision, KernelPolicyStatus, SockopsDataplane } from '../../bpf-sockops/index.js';
import { SockmeshError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { compileKernelPolicy, PLAINTEXT_IDENTITY } from '../authz/kernel-policy.js';
import { parseRbacFilter, type RbacConfig } from '../authz/rbac.js';
import { decodeError, isRecord, list, obj, sockmeshMetadata } from '../state/wire.js';
import type { LocalPod } from './local-view.js';

export const OUTBOUND_LISTENER = 'sockmesh-outbound';

/** What the control plane declared (outbound listener, `filter_metadata.sockmesh.kernelPolicy`). */
export interface MeshKernelPolicy {
  identities: Map<string, number>;
  destinations: { ip: string; rbac: RbacConfig[] }[];
}

/** Parses the declaration; undefined when the control plane sends none (an older one). */
export function readKernelPolicy(outboundListener: unknown): MeshKernelPolicy | undefined {
  if (!isRecord(outboundListener)) return undefined;
  const path = `${OUTBOUND_LISTENER}.metadata.filter_metadata.sockmesh.kernelPolicy`;
  const raw = sockmeshMetadata(outboundListener.metadata, `${OUTBOUND_LISTENER}.metadata`).kernelPolicy;
  if (raw === undefined || raw === null) return undefined;
  const kp = obj(raw, path);
  const identities = new Map<string, number>();
  for (const [spiffe, id] of Object.entries(obj(kp.identities ?? {}, `${path}.identities`))) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > 0xffffffff)
      throw decodeError(`${path}.identities[${JSON.stringify(spiffe)}]`, 'expected an identity id >= 1');
    identities.set(spiffe, id);
  }
  const sets = list(kp.policySets, `${path}.policySets`).map((s, i) =>
    list(obj(s, `${path}.policySets[${i}]`).rbac, `${path}.policySets[${i}].rbac`).map((r, j) => {
      const c = parseRbacFilter(r, `${path}.policySets[${i}].rbac[${j}]`);
      if (!c) throw decodeError(`${path}.policySets[${i}].rbac[${j}]`, 'expected an RBAC message');
      return c;
    }),
  );
  const destinations: MeshKernelPolicy['destinations'] = [];
  for (const [ip, set] of Object.entries(obj(kp.destinations ?? {}, `${path}.destinations`))) {
    const rbac = typeof set === 'number' ? sets[set] : undefined;
    if (!rbac) throw decodeError(`${path}.destinations[${JSON.stringify(ip)}]`, 'names no policy set');
    destinations.push({ ip, rbac });
  }
  return { identities, destinations };
}

/** What the agent serves about the kernel policy (admin `/kernel/policy`). */
export interface KernelPolicyReport {
  status: (KernelPolicyStatus & { passedDestinations: number; compiledAt: string }) | null;
  /** The last table that could not be loaded, and why; the one before it stays live. */
  lastError: { code: string; message: string; at: string } | null;
  counters: { policy: string; allowed: number; denied: number }[];
}

/** One pair, as `sockmesh explain` shows it. */
export interface KernelVerdictView {
  source: { pod: string | null; spiffeId: string | null; identity: number | null };
  destination: { ip: string; port: number };
  /** Where the kernel decides for this caller: connect4 for a meshed pod of this node, sk_lookup for plaintext. */
  hook: 'connect4' | 'sk_lookup';
  kernel: KernelDecision;
}

export class KernelPolicyAgent {
  private lastKey: string | undefined;
  private identities = new Map<string, number>();
  private compiled: { passed: number; at: Date } | undefined;
  private lastError: KernelPolicyReport['lastError'] = null;

  constructor(
    private readonly dataplane: SockopsDataplane,
    private readonly log: Logger,
  ) {}

  /** Compiles and swaps in the rule set for this config; a no-op when nothing it reads changed. */
  update(outboundListener: unknown, pods: readonly { pod: LocalPod; cgroupId: bigint }[]): void {
    let declared: MeshKernelPolicy | undefined;
    try {
      declared = readKernelPolicy(outboundListener);
    } catch (err) {
      this.fail(err);
      return;
    }
    const mesh = declared ?? { identities: new Map(), destinations: [] };
    const sources = new Map<bigint, number>();
    for (const p of pods) {
      const id = mesh.identities.get(p.pod.spiffeId);
      if (id !== undefined) sources.set(p.cgroupId, id);
    }
    const key = JSON.stringify([
      [...mesh.identities],
      mesh.destinations,
      [...sources].map(([cg, id]) => `${cg}:${id}`),
    ]);
    if (key === this.lastKey) return;
    const started = performance.now();
    const table = compileKernelPolicy({
      identities: mesh.identities,
      destinations: mesh.destinations,
      sources,
    });
    try {
      this.dataplane.policy.replace(table);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.lastKey = key;
    this.identities = mesh.identities;
    this.compiled = { passed: table.passed.length, at: new Date() };
    this.lastError = null;
    this.log.info('kernel policy loaded', {
      rules: table.rules.length,
      destinations: table.destinations.size,
      passedToProxy: table.passed.length,
      ms: Math.round(performance.now() - started),
    });
  }

  private fail(err: unknown): void {
    const e =
      err instanceof SockmeshError ? err : new SockmeshError('SOCKMESH_E_BPF', String(err), { cause: err });
    this.lastError = { code: e.code, message: e.message, at: new Date().toISOString() };
    this.log.error('kernel policy not loaded; the previous rule set stays in force', {
      code: e.code,
      err: e.message,
    });
  }

  report(): KernelPolicyReport {
    return {
      status: this.compiled
        ? {
            ...this.dataplane.policy.status(),
            passedDestinations: this.compiled.passed,
            compiledAt: this.compiled.at.toISOString(),
          }
        : null,
      lastError: this.lastError,
      counters: this.counters().map((c) => ({
        policy: c.policy,
        allowed: Number(c.allowed),
        denied: Number(c.denied),
      })),
    };
  }

  counters() {
    return this.compiled ? this.dataplane.policy.counters() : [];
  }

  /**
   * The kernel verdict for `source` (a local pod `namespace/name`, a SPIFFE ID, or `plaintext`)
   * reaching `ip:port`, read from the live maps.
   */
  verdict(
    source: string,
    ip: string,
    port: number,
    localPods: readonly { pod: LocalPod; cgroupId: bigint }[],
  ): KernelVerdictView {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip) || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        `destination ${ip}:${port} is not an IPv4 address and port`,
        {
          hint: 'ask with ?source=<namespace/pod|spiffe id|plaintext>&destination=<pod ip>&port=<port>',
        },
      );
    }
    if (source === 'plaintext') {
      return {
        source: { pod: null, spiffeId: null, identity: PLAINTEXT_IDENTITY },
        destination: { ip, port },
        hook: 'sk_lookup',
        kernel: this.dataplane.policy.decide(PLAINTEXT_IDENTITY, ip, port),
      };
    }
    const local = localPods.find((p) => `${p.pod.namespace}/${p.pod.name}` === source);
    const spiffeId = local?.pod.spiffeId ?? (source.startsWith('spiffe://') ? source : undefined);
    if (spiffeId === undefined) {
      throw new SockmeshError('SOCKMESH_E_USAGE', `source ${source} is not a meshed pod of this node`, {
        hint: 'name a local pod as namespace/name, a SPIFFE ID, or plaintext',
      });
    }
    // A local pod: the identity its cgroup has in the live maps (what connect4 reads).
    const identity = local ? this.dataplane.policy.sourceOf(local.cgroupId) : this.identities.get(spiffeId);
    return {
      source: { pod: local ? source : null, spiffeId, identity: identity ?? null },
      destination: { ip, port },
      hook: 'connect4',
      kernel: this.dataplane.policy.decide(identity, ip, port),
    };
  }
}
