/**
 * The kernel L4 policy maps (include/policy.bpf.h): a compiled rule table goes
 * in as a whole, into the generation verdicts do not read, and becomes live by
 * one flip, so connect4 and sk_lookup never see half of it. A table beyond the
 * maps' bounds is refused before anything is written: the live one stays.
 */
import { readFileSync } from 'node:fs';
import { SockmeshError } from '../lib/errors.js';
import { BPF_ANY, type BpfAddon } from './addon.js';
import { checkPort, encodeU32, encodeU64, parseIpv4 } from './codec.js';

/** Bounds, as include/sockmesh.h sets them. */
export const POLICY_LIMITS = {
  rules: 100_000,
  destinations: 65_536,
  policies: 4_096,
  sources: 16_384,
} as const;
/** The identity id of an unauthenticated (plaintext) caller; the control plane's ids start at 1. */
export const PLAINTEXT_IDENTITY = 0;
/** A rule's port for every port its destination's policies do not name. */
export const ANY_PORT = 0;

export const POLICY_KEY_SIZE = 16;
export const POLICY_VERDICT_SIZE = 8;
export const POLICY_DEST_KEY_SIZE = 8;
export const POLICY_SOURCE_SIZE = 8;
export const POLICY_COUNT_SIZE = 16;

export type KernelVerdict = 'allow' | 'deny';

export interface KernelRule {
  /** Caller identity id (PLAINTEXT_IDENTITY for unauthenticated callers). */
  source: number;
  /** Destination policy set id. */
  destination: number;
  /** Destination (pod) port, or ANY_PORT. */
  port: number;
  verdict: KernelVerdict;
  /** Counter index of the policy that decides (see KernelPolicyTable.policies). */
  policy: number;
}

/** One complete rule set, ids only: what to compile it from is the agent's business. */
export interface KernelPolicyTable {
  /** Destination pod IPv4 address -> its policy set id. A destination absent here is the proxy's to decide. */
  destinations: ReadonlyMap<string, number>;
  /** Meshed pods of this node: cgroup id -> identity id. */
  sources: ReadonlyMap<bigint, number>;
  rules: readonly KernelRule[];
  /** Counter index -> policy name; index i counts the rules whose `policy` is i. */
  policies: readonly string[];
}

export interface KernelPolicyStatus {
  /** The live generation slot (0 or 1) and how many table swaps this process made. */
  generation: number;
  swaps: number;
  /** The last swap: ms until the new rule set was live (written, flipped), and until the old one was gone. */
  lastSwapMs: { live: number; total: number } | null;
  rules: number;
  destinations: number;
  sources: number;
  limits: typeof POLICY_LIMITS;
}

/** What the kernel would decide for one (caller, destination, port), read from the live maps. */
export type KernelDecision =
  | { verdict: KernelVerdict; policy: string; rule: 'port' | 'any-port'; generation: number }
  | {
      verdict: 'pass';
      reason: 'unknown-destination' | 'unknown-source' | 'no-rule' | 'swapping';
      generation: number;
    };

export interface PolicyCount {
  policy: string;
  allowed: bigint;
  denied: bigint;
}

export interface PolicyMapFds {
  state: number;
  sources: number;
  destinations: number;
  rules: number;
  counters: number;
}

const ACTIVE = 0;
const epochSlot = (gen: number) => 1 + gen;
const VERDICT_CODE = { allow: 1, deny: 2 } as const;

export class KernelPolicyMaps {
  private swaps = 0;
  private names: readonly string[] = [];
  /** Keys written per generation slot; undefined until learned (an adopted map is scanned once). */
  private readonly written: Record<'rules' | 'destinations', (Buffer | undefined)[]> = {
    rules: [undefined, undefined],
    destinations: [undefined, undefined],
  };
  private ruleCount = 0;
  private lastSwapMs: KernelPolicyStatus['lastSwapMs'] = null;

  constructor(
    private readonly addon: BpfAddon,
    private readonly fds: PolicyMapFds,
    private readonly cpus: number,
  ) {}

  /**
   * Makes `table` the live rule set. Throws SOCKMESH_E_POLICY_TOO_LARGE (nothing written)
   * when it exceeds a bound, SOCKMESH_E_BPF when the kernel refuses an entry; either way
   * the previous rule set stays live.
   */
  replace(table: KernelPolicyTable): KernelPolicyStatus {
    const started = performance.now();
    checkBounds(table);
    const current = this.active();
    const next = 1 - current;
    const encoded = encodeTable(table, next);
    // Odd epoch: a verdict that still reads this slot (from before the last flip) passes.
    const epoch = this.read(epochSlot(next));
    if (epoch % 2 === 0) this.write(epochSlot(next), epoch + 1);
    this.clear(next);
    try {
      this.addon.mapUpdateBatch(
        this.fds.destinations,
        encoded.destKeys,
        POLICY_DEST_KEY_SIZE,
        encoded.destValues,
        4,
      );
      this.setWritten(next, 'destinations', encoded.destKeys);
      this.addon.mapUpdateBatch(
        this.fds.rules,
        encoded.ruleKeys,
        POLICY_KEY_SIZE,
        encoded.ruleValues,
        POLICY_VERDICT_SIZE,
      );
      this.setWritten(next, 'rules', encoded.ruleKeys);
      this.writeSources(next, table.sources);
    } catch (err) {
      // Some entries may be in: forget what we think is there, the next clear scans the map.
      this.written.rules[next] = undefined;
      this.written.destinations[next] = undefined;
      this.clear(next);
      throw new SockmeshError(
        'SOCKMESH_E_BPF',
        `loading ${table.rules.length} policy rules failed: ${String(err)}; the previous rule set stays live`,
        { hint: 'check the memory cgroup limit of the agent', cause: err },
      );
    }
    if (this.names.length === 0 || this.names.join('\0') !== table.policies.join('\0')) {
      this.resetCounters(table.policies, this.names);
    }
    this.names = [...table.policies];
    this.write(epochSlot(next), this.read(epochSlot(next)) + 1);
    this.write(ACTIVE, next);
    const live = performance.now() - started;
    // The old slot: mark it in flux, then empty it; verdicts that read it before the flip pass.
    this.write(epochSlot(current), this.read(epochSlot(current)) | 1);
    this.clear(current);
    // Pods the live table no longer knows (gone from the node) leave the map.
    const keep = new Set([...table.sources.keys()].map((cg) => encodeU64(cg).toString('hex')));
    for (const key of this.addon.mapKeys(this.fds.sources, 8, POLICY_LIMITS.sources * 2)) {
      if (!keep.has(key.toString('hex'))) this.addon.mapDelete(this.fds.sources, key);
    }
    this.swaps++;
    this.lastSwapMs = { live, total: performance.now() - started };
    this.ruleCount = table.rules.length;
    return this.status();
  }

  /** Sets (or with undefined, clears) one pod's identity in both generations, e.g. when it is enrolled. */
  setSource(cgroupId: bigint, identity: number | undefined): void {
    const key = encodeU64(cgroupId);
    if (identity === undefined) {
      this.addon.mapDelete(this.fds.sources, key);
      return;
    }
    const v = Buffer.alloc(POLICY_SOURCE_SIZE);
    v.writeUInt32LE(identity, 0);
    v.writeUInt32LE(identity, 4);
    this.addon.mapUpdate(this.fds.sources, key, v, BPF_ANY);
  }

  /** The kernel's answer for a caller identity reaching ip:port, as connect4/sk_lookup would compute it. */
  decide(source: number | undefined, ip: string, port: number): KernelDecision {
    const gen = this.active();
    if (this.read(epochSlot(gen)) % 2 === 1) return { verdict: 'pass', reason: 'swapping', generation: gen };
    const dest = this.addon.mapLookup(this.fds.destinations, destKey(gen, parseIpv4(ip)), 4);
    if (!dest) return { verdict: 'pass', reason: 'unknown-destination', generation: gen };
    if (source === undefined) return { verdict: 'pass', reason: 'unknown-source', generation: gen };
    for (const [p, rule] of [
      [checkPort(port), 'port'],
      [ANY_PORT, 'any-port'],
    ] as const) {
      const v = this.addon.mapLookup(
        this.fds.rules,
        ruleKey(gen, source, dest.readUInt32LE(0), p),
        POLICY_VERDICT_SIZE,
      );
      if (!v) continue;
      const code = v.readUInt32LE(0);
      if (code !== 1 && code !== 2) break;
      const index = v.readUInt32LE(4);
      return {
        verdict: code === 2 ? 'deny' : 'allow',
        policy: this.names[index] ?? `#${index}`,
        rule,
        generation: gen,
      };
    }
    return { verdict: 'pass', reason: 'no-rule', generation: gen };
  }

  /** A pod's identity id in the live generation; undefined when the pod has none. */
  sourceOf(cgroupId: bigint): number | undefined {
    const v = this.addon.mapLookup(this.fds.sources, encodeU64(cgroupId), POLICY_SOURCE_SIZE);
    const id = v?.readUInt32LE(4 * this.active());
    return id === undefined || id === 0 ? undefined : id;
  }

  /** Allowed/denied connections per policy, summed over CPUs, for the policies of the live table. */
  counters(): PolicyCount[] {
    return this.names.map((policy, i) => {
      const v = this.addon.mapLookup(this.fds.counters, encodeU32(i), POLICY_COUNT_SIZE * this.cpus);
      let allowed = 0n;
      let denied = 0n;
      for (let c = 0; v && c < this.cpus; c++) {
        allowed += v.readBigUInt64LE(c * POLICY_COUNT_SIZE);
        denied += v.readBigUInt64LE(c * POLICY_COUNT_SIZE + 8);
      }
      return { policy, allowed, denied };
    });
  }

  status(): KernelPolicyStatus {
    return {
      generation: this.active(),
      swaps: this.swaps,
      lastSwapMs: this.lastSwapMs,
      rules: this.ruleCount,
      destinations: this.keysOf(this.active(), 'destinations').length / POLICY_DEST_KEY_SIZE,
      sources: this.addon.mapKeys(this.fds.sources, 8, POLICY_LIMITS.sources * 2).length,
      limits: POLICY_LIMITS,
    };
  }

  /** Kernel memory the rule maps hold now (fdinfo memlock, which follows entries for these maps). */
  memoryBytes(): number {
    return mapMemlock(this.fds.rules) + mapMemlock(this.fds.destinations);
  }

  private active(): number {
    return this.read(ACTIVE) & 1;
  }

  private read(slot: number): number {
    return this.addon.mapLookup(this.fds.state, encodeU32(slot), 4)?.readUInt32LE(0) ?? 0;
  }

  private write(slot: number, value: number): void {
    this.addon.mapUpdate(this.fds.state, encodeU32(slot), encodeU32(value >>> 0), BPF_ANY);
  }

  private writeSources(gen: number, sources: ReadonlyMap<bigint, number>): void {
    const seen = new Set<string>();
    for (const [cg, id] of sources) {
      const key = encodeU64(cg);
      seen.add(key.toString('hex'));
      const v =
        this.addon.mapLookup(this.fds.sources, key, POLICY_SOURCE_SIZE) ?? Buffer.alloc(POLICY_SOURCE_SIZE);
      v.writeUInt32LE(id, 4 * gen);
      this.addon.mapUpdate(this.fds.sources, key, v, BPF_ANY);
    }
    // Pods the table does not know have no identity in this generation.
    for (const key of this.addon.mapKeys(this.fds.sources, 8, POLICY_LIMITS.sources * 2)) {
      if (seen.has(key.toString('hex'))) continue;
      const v = this.addon.mapLookup(this.fds.sources, key, POLICY_SOURCE_SIZE);
      if (!v) continue;
      v.writeUInt32LE(0, 4 * gen);
      this.addon.mapUpdate(this.fds.sources, key, v, BPF_ANY);
    }
  }

  /** The keys a generation holds, concatenated; an adopted map is scanned once. */
  private keysOf(gen: number, what: 'rules' | 'destinations'): Buffer {
    let keys = this.written[what][gen];
    if (keys === undefined) {
      const fd = what === 'rules' ? this.fds.rules : this.fds.destinations;
      const size = what === 'rules' ? POLICY_KEY_SIZE : POLICY_DEST_KEY_SIZE;
      const limit = what === 'rules' ? 2 * POLICY_LIMITS.rules : 2 * POLICY_LIMITS.destinations;
      keys = Buffer.concat(this.addon.mapKeys(fd, size, limit).filter((k) => k.readUInt32LE(0) === gen));
      this.written[what][gen] = keys;
    }
    return keys;
  }

  private setWritten(gen: number, what: 'rules' | 'destinations', keys: Buffer): void {
    this.written[what][gen] = keys;
  }

  private clear(gen: number): void {
    for (const what of ['rules', 'destinations'] as const) {
      const fd = what === 'rules' ? this.fds.rules : this.fds.destinations;
      const size = what === 'rules' ? POLICY_KEY_SIZE : POLICY_DEST_KEY_SIZE;
      const keys = this.keysOf(gen, what);
      try {
        this.addon.mapDeleteBatch(fd, keys, size);
      } catch {
        // A key already gone stops the batch: delete one by one, missing ones are fine.
        for (let off = 0; off < keys.length; off += size)
          this.addon.mapDelete(fd, keys.subarray(off, off + size));
      }
      this.setWritten(gen, what, Buffer.alloc(0));
    }
  }

  /** Counters of indices whose policy changed start from zero (a new process starts them all from zero). */
  private resetCounters(next: readonly string[], previous: readonly string[]): void {
    const zero = Buffer.alloc(POLICY_COUNT_SIZE * this.cpus);
    for (let i = 0; i < Math.max(next.length, previous.length); i++) {
      if (previous.length > 0 && next[i] === previous[i]) continue;
      this.addon.mapUpdate(this.fds.counters, encodeU32(i), zero, BPF_ANY);
    }
  }
}

function checkBounds(t: KernelPolicyTable): void {
  const over = (what: string, n: number, max: number) =>
    new SockmeshError(
      'SOCKMESH_E_POLICY_TOO_LARGE',
      `the kernel policy has ${n} ${what}, more than the ${max} the BPF maps hold; the previous rule set stays live`,
      {
        hint: 'fewer, broader AuthorizationPolicy rules (namespaces instead of principal lists), or raise SM_MAX_POLICY_* in bpf-sockops/include/sockmesh.h',
      },
    );
  if (t.rules.length > POLICY_LIMITS.rules) throw over('rules', t.rules.length, POLICY_LIMITS.rules);
  if (t.destinations.size > POLICY_LIMITS.destinations)
    throw over('destinations', t.destinations.size, POLICY_LIMITS.destinations);
  if (t.policies.length > POLICY_LIMITS.policies)
    throw over('policies', t.policies.length, POLICY_LIMITS.policies);
  if (t.sources.size > POLICY_LIMITS.sources) throw over('sources', t.sources.size, POLICY_LIMITS.sources);
  for (const r of t.rules) {
    if (r.policy < 0 || r.policy >= t.policies.length || !Number.isInteger(r.policy)) {
      throw new SockmeshError(
        'SOCKMESH_E_CONFIG',
        `kernel rule names policy #${r.policy}, which the table lacks`,
      );
    }
  }
}

/** Keys and values of one generation, concatenated for the batch syscalls. */
function encodeTable(
  t: KernelPolicyTable,
  gen: number,
): { destKeys: Buffer; destValues: Buffer; ruleKeys: Buffer; ruleValues: Buffer } {
  const destKeys = Buffer.alloc(t.destinations.size * POLICY_DEST_KEY_SIZE);
  const destValues = Buffer.alloc(t.destinations.size * 4);
  let i = 0;
  for (const [ip, set] of t.destinations) {
    destKeys.writeUInt32LE(gen, i * POLICY_DEST_KEY_SIZE);
    parseIpv4(ip).copy(destKeys, i * POLICY_DEST_KEY_SIZE + 4);
    destValues.writeUInt32LE(set, i * 4);
    i++;
  }
  const ruleKeys = Buffer.alloc(t.rules.length * POLICY_KEY_SIZE);
  const ruleValues = Buffer.alloc(t.rules.length * POLICY_VERDICT_SIZE);
  t.rules.forEach((r, n) => {
    const k = n * POLICY_KEY_SIZE;
    ruleKeys.writeUInt32LE(gen, k);
    ruleKeys.writeUInt32LE(r.source, k + 4);
    ruleKeys.writeUInt32LE(r.destination, k + 8);
    ruleKeys.writeUInt16LE(checkPort(r.port, true), k + 12);
    ruleValues.writeUInt32LE(VERDICT_CODE[r.verdict], n * POLICY_VERDICT_SIZE);
    ruleValues.writeUInt32LE(r.policy, n * POLICY_VERDICT_SIZE + 4);
  });
  return { destKeys, destValues, ruleKeys, ruleValues };
}

function ruleKey(gen: number, source: number, dest: number, port: number): Buffer {
  const k = Buffer.alloc(POLICY_KEY_SIZE);
  k.writeUInt32LE(gen, 0);
  k.writeUInt32LE(source, 4);
  k.writeUInt32LE(dest, 8);
  k.writeUInt16LE(port, 12);
  return k;
}

function destKey(gen: number, ip: Buffer): Buffer {
  const k = Buffer.alloc(POLICY_DEST_KEY_SIZE);
  k.writeUInt32LE(gen, 0);
  ip.copy(k, 4);
  return k;
}

/** memlock of a map from /proc/self/fdinfo (bytes). */
function mapMemlock(fd: number): number {
  try {
    const text = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    const m = /^memlock:\s+(\d+)/m.exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
