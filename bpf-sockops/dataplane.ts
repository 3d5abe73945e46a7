/**
 * The node's dataplane: loads (or adopts) the hook programs and their maps,
 * attaches them to the node cgroup, and offers typed control of the maps.
 * Adoption matters: an agent restart must not reload programs, or every
 * established, accelerated connection would lose its state.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { SockmeshError } from '../lib/errors.js';
import { createLogger, type Logger } from '../lib/log.js';
import { BPF_ANY, type BpfAddon, EEXIST, ENOENT, errnoOf, loadAddon, OBJ_DIR } from './addon.js';
import {
  CIDR4_KEY_SIZE,
  CIDR6_KEY_SIZE,
  CONFIG_SIZE,
  COUNTER_NAMES,
  type Counters,
  checkPort,
  type DataplaneConfig,
  decodeCidrKey,
  decodeConfig,
  decodePod,
  type Endpoint,
  encodeCidrKey,
  encodeConfig,
  encodePod,
  encodePort,
  encodeU32,
  encodeU64,
  formatCidr,
  formatIpv4,
  ORIG_DST_SIZE,
  ORIG_DST6_SIZE,
  POD_SIZE,
  type PodMode,
  parseCidr,
  parseIpv4,
  sumPerCpu,
  TUPLE4_SIZE,
  TUPLE6_SIZE,
} from './codec.js';
import { OriginalDestinationMap } from './orig-dst.js';
import {
  MAP_NAMES,
  type MapName,
  PER_CONNECTION_MAPS,
  type PinLayout,
  PROG_NAMES,
  type ProgName,
  pinLayout,
  visible,
} from './pins.js';
import {
  KernelPolicyMaps,
  POLICY_COUNT_SIZE,
  POLICY_DEST_KEY_SIZE,
  POLICY_KEY_SIZE,
  POLICY_SOURCE_SIZE,
  POLICY_VERDICT_SIZE,
} from './policy.js';
import {
  assertPreflight,
  findBpffsFor,
  gatherPreflight,
  type HOOK_OBJECTS,
  objectPath,
  readMounts,
} from './preflight.js';
import {
  TCP_CFG_SIZE,
  TCP_PAIR_SIZE,
  TCP_STATS_SIZE,
  TCP_WORKLOAD_NAME_SIZE,
  TcpHealthMaps,
} from './tcp-health.js';

export interface DataplaneOptions {
  /** cgroup v2 directory covering the node's pods and its system cgroup. */
  cgroupPath: string;
  /** Per-node bpffs directory for pins (created if missing). */
  bpffsDir: string;
  /** Where the built *.bpf.o are; default bpf-sockops/obj. */
  objDir?: string;
  /** Acceleration setting applied on a fresh load (an adopted dataplane keeps its own). Default true. */
  acceleration?: boolean;
  /** Only adopt existing pins, never load (for status tools); SOCKMESH_E_NOT_FOUND if there are none. */
  adoptOnly?: boolean;
  logger?: Logger;
}

export interface EnrolOptions {
  /** Whether plaintext that did not come through the node proxy may reach the pod. Default `strict`. */
  mode?: PodMode;
}

export interface Exclusions {
  ports: number[];
  cidrs: string[];
}

export interface DataplaneStatus {
  adopted: boolean;
  cgroupPath: string;
  bpffsDir: string;
  programs: { name: ProgName; id: number; attached: boolean }[];
  config: DataplaneConfig;
  pods: number;
  /** Enrolled pods in strict mode (the rest are permissive). */
  strictPods: number;
  /** Permissive pods whose inbound plaintext the proxy takes (sk_lookup, port 15006). */
  inboundPods: number;
  exclusions: Exclusions;
  connections: Record<(typeof PER_CONNECTION_MAPS)[number], number>;
}

interface Hook {
  prog: ProgName;
  object: (typeof HOOK_OBJECTS)[number];
  /** cgroup attach type; undefined for sk_msg, which attaches to the sockhash. */
  cgroupAttach?: 'cgroupInet4Connect' | 'cgroupInet6Connect' | 'cgroupSockOps' | 'cgroupInetIngress';
  /** Attached per pod network namespace (sk_lookup links), not at open. */
  perNetns?: true;
}

const HOOKS: Hook[] = [
  { prog: 'sm_sockops', object: 'sockops', cgroupAttach: 'cgroupSockOps' },
  { prog: 'sm_redir', object: 'redir' },
  // Before capture: a pod is never meshed without its strict mode being enforced.
  { prog: 'sm_strict', object: 'strict', cgroupAttach: 'cgroupInetIngress' },
  // Last: once connect4 is live, sockops and sk_msg are already there to finish the job.
  { prog: 'sm_connect4', object: 'connect4', cgroupAttach: 'cgroupInet4Connect' },
  { prog: 'sm_connect6', object: 'connect6', cgroupAttach: 'cgroupInet6Connect' },
  { prog: 'sm_inbound', object: 'inbound', perNetns: true },
];

/** Where the proxy takes a permissive pod's inbound plaintext (inside the pod's netns). */
export const INBOUND_PLAINTEXT_PORT = 15006;

/** The sockhashes sk_msg (sm_redir) is attached to. */
const SKMSG_MAPS = ['sm_sockhash', 'sm_sockhash6'] as const;

const BPFFS_DEFAULT = '/sys/fs/bpf';

export class SockopsDataplane {
  /** True if this instance took over pins left by a previous process instead of loading. */
  readonly adopted: boolean;
  readonly cgroupPath: string;
  readonly pins: PinLayout;
  private readonly addon: BpfAddon;
  private readonly log: Logger;
  private readonly maps: Map<MapName, number>;
  private readonly progs: Map<ProgName, number>;
  private readonly cpus: number;
  private closed = false;
  private origDst: OriginalDestinationMap | undefined;
  private tcp: TcpHealthMaps | undefined;
  private kernelPolicy: KernelPolicyMaps | undefined;

  private constructor(init: {
    addon: BpfAddon;
    log: Logger;
    cgroupPath: string;
    pins: PinLayout;
    maps: Map<MapName, number>;
    progs: Map<ProgName, number>;
    adopted: boolean;
  }) {
    this.addon = init.addon;
    this.log = init.log;
    this.cgroupPath = init.cgroupPath;
    this.pins = init.pins;
    this.maps = init.maps;
    this.progs = init.progs;
    this.adopted = init.adopted;
    this.cpus = init.addon.possibleCpus();
  }

  /** Preflight, then adopt the node's pins if complete, else load, pin and attach. */
  static open(opts: DataplaneOptions): SockopsDataplane {
    const log = (opts.logger ?? createLogger('bpf')).child({ cgroup: opts.cgroupPath });
    ensureBpffs(opts.bpffsDir);
    const bpffs = visible(opts.bpffsDir);
    const cgroupPath = visible(opts.cgroupPath).path;
    assertPreflight(
      gatherPreflight({
        cgroupPath: opts.cgroupPath,
        bpffsDir: opts.bpffsDir,
        objDir: opts.objDir,
        mountsFile: bpffs.mountsFile,
      }),
    );
    if (!existsSync(cgroupPath) || !statSync(cgroupPath).isDirectory()) {
      throw new SockmeshError('SOCKMESH_E_NO_CGROUP2', `cgroup ${opts.cgroupPath} does not exist`, {
        hint: 'create the node cgroup first (mkdir under the cgroup2 mount)',
      });
    }
    const addon = loadAddon();
    checkLayout(addon);
    const pins = pinLayout(bpffs.path);
    const complete = [...MAP_NAMES.map((m) => pins.map(m)), ...PROG_NAMES.map((p) => pins.prog(p))].every(
      (p) => existsSync(p),
    );
    if (!complete && opts.adoptOnly) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no dataplane is pinned under ${opts.bpffsDir}`, {
        hint: 'is the agent running on this node? `sockmesh bpf detach` clears partial pins',
      });
    }
    const maps = new Map<MapName, number>();
    const progs = new Map<ProgName, number>();
    try {
      if (complete) {
        for (const m of MAP_NAMES) maps.set(m, addon.objGet(pins.map(m)));
        for (const p of PROG_NAMES) progs.set(p, addon.objGet(pins.prog(p)));
        checkPinnedLayout(addon, maps, opts.bpffsDir);
      } else {
        // Maps left by an older build would be silently reused by name: judge them first.
        checkPinnedLayout(addon, openPinnedMaps(addon, pins, maps), opts.bpffsDir);
        for (const fd of maps.values()) addon.close(fd);
        maps.clear();
        mkdirSync(pins.mapsDir, { recursive: true });
        mkdirSync(pins.progsDir, { recursive: true });
        loadFresh(addon, opts.objDir ?? OBJ_DIR, pins, maps, progs);
      }
      const dp = new SockopsDataplane({
        addon,
        log,
        cgroupPath,
        pins,
        maps,
        progs,
        adopted: complete,
      });
      if (!complete) dp.setAcceleration(opts.acceleration ?? true);
      if (!opts.adoptOnly) dp.ensureAttached();
      log.info(complete ? 'adopted pinned dataplane' : 'loaded dataplane', { pins: pins.root });
      return dp;
    } catch (err) {
      for (const fd of [...maps.values(), ...progs.values()]) addon.close(fd);
      if (err instanceof SockmeshError) throw err;
      throw bpfError('loading the dataplane failed', err);
    }
  }

  /** Attaches whatever is not attached yet (idempotent; BPF_F_ALLOW_MULTI leaves other programs alone). */
  private ensureAttached(): void {
    const at = this.addon.attachTypes;
    const cg = this.addon.openDir(this.cgroupPath);
    try {
      for (const h of HOOKS) {
        if (h.perNetns) continue;
        const fd = this.prog(h.prog);
        const id = this.addon.progInfo(fd).id;
        if (h.cgroupAttach) {
          const type = at[h.cgroupAttach];
          if (this.addon.progQuery(cg, type).includes(id)) continue;
          try {
            this.addon.progAttach(fd, cg, type, at.flagAllowMulti);
          } catch (err) {
            if (errnoOf(err) !== EEXIST) throw err;
          }
        } else {
          for (const m of SKMSG_MAPS) {
            const sh = this.map(m);
            let attached = false;
            try {
              attached = this.addon.progQuery(sh, at.skMsgVerdict).includes(id);
            } catch {
              attached = false; // older kernels cannot query a sockhash: attaching again is a harmless replace
            }
            if (!attached) this.addon.progAttach(fd, sh, at.skMsgVerdict, 0);
          }
        }
      }
    } finally {
      this.addon.close(cg);
    }
  }

  // ---- pods ---------------------------------------------------------------

  /**
   * Meshes a pod live: its next connect() is captured and, in strict mode (the
   * default), its listeners refuse plaintext that did not come through the proxy.
   * Open connections are untouched. Enrolling again changes the mode live.
   */
  enrolPod(cgroupId: bigint, opts: EnrolOptions = {}): void {
    const mode = opts.mode ?? 'strict';
    if (mode !== 'strict' && mode !== 'permissive') {
      throw new SockmeshError('SOCKMESH_E_CONFIG', `unknown pod mode ${String(mode)}`, {
        hint: "use 'strict' or 'permissive'",
      });
    }
    this.addon.mapUpdate(this.map('sm_pods'), encodeU64(cgroupId), encodePod(mode), BPF_ANY);
  }

  /** The mode of an enrolled pod; undefined if it is not enrolled. */
  podMode(cgroupId: bigint): PodMode | undefined {
    const v = this.addon.mapLookup(this.map('sm_pods'), encodeU64(cgroupId), POD_SIZE);
    return v ? decodePod(v) : undefined;
  }

  /** Un-meshes a pod live; returns false if it was not enrolled. */
  removePod(cgroupId: bigint): boolean {
    return this.addon.mapDelete(this.map('sm_pods'), encodeU64(cgroupId));
  }

  pods(): bigint[] {
    return this.addon.mapKeys(this.map('sm_pods'), 8, 1 << 20).map((k) => k.readBigUInt64LE(0));
  }

  // ---- config -------------------------------------------------------------

  config(): DataplaneConfig {
    const v = this.addon.mapLookup(this.map('sm_config'), encodeU32(0), CONFIG_SIZE);
    return v ? decodeConfig(v) : { proxy: undefined, proxyIp6: undefined, acceleration: false };
  }

  /** Where captured connections go; undefined stops capturing new connections. */
  setProxy(proxy: Endpoint | undefined, opts: { ip6?: string } = {}): void {
    this.writeConfig({ ...this.config(), proxy, proxyIp6: proxy ? opts.ip6 : undefined });
  }

  /** Toggles sk_msg redirection for new messages (sockets already in the sockhash keep flowing either way). */
  setAcceleration(on: boolean): void {
    this.writeConfig({ ...this.config(), acceleration: on });
  }

  private writeConfig(cfg: DataplaneConfig): void {
    this.addon.mapUpdate(this.map('sm_config'), encodeU32(0), encodeConfig(cfg), BPF_ANY);
  }

  exclusions(): Exclusions {
    const ports = this.addon.mapKeys(this.map('sm_excl_ports'), 2, 1 << 16).map((k) => k.readUInt16LE(0));
    const cidrs = [
      ...this.addon.mapKeys(this.map('sm_excl_cidrs'), CIDR4_KEY_SIZE, 1 << 16),
      ...this.addon.mapKeys(this.map('sm_excl_cidrs6'), CIDR6_KEY_SIZE, 1 << 16),
    ].map((k) => formatCidr(decodeCidrKey(k)));
    return { ports: ports.sort((a, b) => a - b), cidrs: cidrs.sort() };
  }

  /** Replaces the destination exclusions, IPv4 and IPv6 CIDRs alike (the proxy's own address is always excluded). */
  setExclusions(ex: Exclusions): void {
    const want = new Set(ex.ports.map((p) => encodePort(p).toString('hex')));
    const parsed = ex.cidrs.map(parseCidr);
    const keys = (family: 4 | 6) =>
      new Set(parsed.filter((c) => c.family === family).map((c) => encodeCidrKey(c).toString('hex')));
    const one = Buffer.from([1]);
    this.syncSet(this.map('sm_excl_ports'), 2, want, one);
    this.syncSet(this.map('sm_excl_cidrs'), CIDR4_KEY_SIZE, keys(4), one);
    this.syncSet(this.map('sm_excl_cidrs6'), CIDR6_KEY_SIZE, keys(6), one);
  }

  private syncSet(fd: number, keySize: number, want: Set<string>, value: Buffer): void {
    for (const hex of want) this.addon.mapUpdate(fd, Buffer.from(hex, 'hex'), value, BPF_ANY);
    for (const k of this.addon.mapKeys(fd, keySize, 1 << 20)) {
      if (!want.has(k.toString('hex'))) this.addon.mapDelete(fd, k);
    }
  }

  // ---- connections --------------------------------------------------------

  /** Original destination of a connection accepted by the proxy (see OriginalDestinationMap.lookup). */
  lookup(
    peerIp: string | undefined,
    peerPort: number | undefined,
    localIp: string | undefined,
    localPort: number | undefined,
  ): Endpoint | undefined {
    this.origDst ??= OriginalDestinationMap.fromFds(
      this.addon,
      this.map('sm_orig_by_tuple'),
      this.map('sm_orig6_by_tuple'),
    );
    return this.origDst.lookup(peerIp, peerPort, localIp, localPort);
  }

  /** TCP health per workload pair: tagging, the on/off switch and the aggregate (tcp-health.ts). */
  get tcpHealth(): TcpHealthMaps {
    this.tcp ??= TcpHealthMaps.fromFds(this.addon, {
      sm_tcp_tags: this.map('sm_tcp_tags'),
      sm_tcp_pairs: this.map('sm_tcp_pairs'),
      sm_tcp_cfg: this.map('sm_tcp_cfg'),
      sm_tcp_workloads: this.map('sm_tcp_workloads'),
    });
    return this.tcp;
  }

  counters(): Counters {
    const fd = this.map('sm_counters');
    const out = {} as Counters;
    COUNTER_NAMES.forEach((name, i) => {
      const v = this.addon.mapLookup(fd, encodeU32(i), 8 * this.cpus);
      out[name] = v ? sumPerCpu(v, this.cpus) : 0n;
    });
    return out;
  }

  /** Entries in each per-connection map (iterates keys: for tests and status, not hot paths). */
  connectionMapSizes(): Record<(typeof PER_CONNECTION_MAPS)[number], number> {
    const keySize = {
      sm_orig_by_cookie: 8,
      sm_orig_by_tuple: TUPLE4_SIZE,
      sm_orig6_by_cookie: 8,
      sm_orig6_by_tuple: TUPLE6_SIZE,
      sm_sockhash: TUPLE4_SIZE,
      sm_sockhash6: TUPLE6_SIZE,
    };
    const sizes = { ...keySize };
    for (const m of PER_CONNECTION_MAPS) {
      sizes[m] = this.addon.mapKeys(this.map(m), keySize[m], 1 << 20).length;
    }
    return sizes;
  }

  status(): DataplaneStatus {
    const at = this.addon.attachTypes;
    const cg = this.addon.openDir(this.cgroupPath);
    try {
      const programs = HOOKS.map((h) => {
        const id = this.addon.progInfo(this.prog(h.prog)).id;
        let attached: boolean;
        try {
          // Attached wherever it should be: sk_lookup in the netns of every permissive pod taken over.
          attached = h.perNetns
            ? this.inboundPods().every((ip) => existsSync(this.inboundLinkPin(ip)))
            : h.cgroupAttach
              ? this.addon.progQuery(cg, at[h.cgroupAttach]).includes(id)
              : SKMSG_MAPS.every((m) => this.addon.progQuery(this.map(m), at.skMsgVerdict).includes(id));
        } catch {
          attached = false;
        }
        return { name: h.prog, id, attached };
      });
      const pods = this.pods();
      return {
        adopted: this.adopted,
        cgroupPath: this.cgroupPath,
        bpffsDir: this.pins.root,
        programs,
        config: this.config(),
        pods: pods.length,
        strictPods: pods.filter((p) => this.podMode(p) === 'strict').length,
        inboundPods: this.inboundPods().length,
        exclusions: this.exclusions(),
        connections: this.connectionMapSizes(),
      };
    } finally {
      this.addon.close(cg);
    }
  }

  // ---- L4 policy ----------------------------------------------------------

  /** The kernel's L4 authorization maps (policy.ts): verdicts at connect4 and sk_lookup. */
  get policy(): KernelPolicyMaps {
    this.kernelPolicy ??= new KernelPolicyMaps(
      this.addon,
      {
        state: this.map('sm_pol_state'),
        sources: this.map('sm_pol_sources'),
        destinations: this.map('sm_pol_dests'),
        rules: this.map('sm_pol_rules'),
        counters: this.map('sm_pol_counters'),
      },
      this.cpus,
    );
    return this.kernelPolicy;
  }

  // ---- inbound plaintext (permissive pods) --------------------------------

  /**
   * Takes over a permissive pod's inbound plaintext: opens a listening socket
   * on `port` inside the pod's network namespace and attaches sk_lookup there,
   * so every TCP connection for the pod that does not come from the proxy
   * lands on that socket, its local address still the pod's ip:port. Returns
   * the socket's fd: the caller accepts on it and owns it. The attachment is
   * pinned and outlives this process; while no listener is registered (the
   * agent restarting) the pod's plaintext is refused, never let through.
   */
  captureInbound(pod: { ip: string; netnsPath: string }, port = INBOUND_PLAINTEXT_PORT): number {
    const key = parseIpv4(pod.ip);
    const fd = this.addon.netnsListen(pod.netnsPath, '0.0.0.0', checkPort(port), 4096);
    try {
      this.addon.mapUpdate(this.map('sm_inbound_listeners'), key, encodeU64(BigInt(fd)), BPF_ANY);
      this.addon.mapUpdate(this.map('sm_inbound_pods'), key, encodeU32(port), BPF_ANY);
      this.attachInbound(pod);
    } catch (err) {
      this.addon.close(fd);
      throw err instanceof SockmeshError ? err : bpfError(`capturing inbound plaintext of ${pod.ip}`, err);
    }
    return fd;
  }

  /** Gives a pod's inbound plaintext back to the pod (its listener fd is the caller's to close). */
  releaseInbound(ip: string): boolean {
    const key = parseIpv4(ip);
    rmSync(this.inboundLinkPin(ip), { force: true });
    this.addon.mapDelete(this.map('sm_inbound_listeners'), key);
    return this.addon.mapDelete(this.map('sm_inbound_pods'), key);
  }

  /** Pods whose inbound plaintext the proxy takes. */
  inboundPods(): string[] {
    return this.addon.mapKeys(this.map('sm_inbound_pods'), 4, 1 << 20).map((k) => formatIpv4(k));
  }

  /** bpffs refuses names with a dot: 10.244.1.10 is pinned as inbound-10-244-1-10. */
  private inboundLinkPin(ip: string): string {
    return join(this.pins.linksDir, `inbound-${ip.replaceAll('.', '-')}`);
  }

  /** (Re)attaches sk_lookup to the pod's netns; the new link is pinned before the old one goes. */
  private attachInbound(pod: { ip: string; netnsPath: string }): void {
    mkdirSync(this.pins.linksDir, { recursive: true });
    const pin = this.inboundLinkPin(pod.ip);
    const ns = openSync(pod.netnsPath, 'r');
    try {
      const link = this.addon.linkCreate(this.prog('sm_inbound'), ns, this.addon.attachTypes.skLookup);
      try {
        rmSync(`${pin}-new`, { force: true });
        this.addon.objPin(link, `${pin}-new`);
      } finally {
        this.addon.close(link);
      }
      renameSync(`${pin}-new`, pin);
    } finally {
      closeSync(ns);
    }
  }

  // ---- lifecycle ----------------------------------------------------------

  /** Releases this process's fds; programs, maps and connections stay (the next open adopts them). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tcp?.close();
    for (const fd of [...this.maps.values(), ...this.progs.values()]) this.addon.close(fd);
  }

  /** Removes everything: detaches from the cgroup and the sockhash, unpins. Connections fall back to plain TCP. */
  detach(): void {
    if (this.closed) throw new SockmeshError('SOCKMESH_E_BPF', 'dataplane handle already closed');
    const at = this.addon.attachTypes;
    // A cgroup that is already gone took its attachments with it.
    const cg = existsSync(this.cgroupPath) ? this.addon.openDir(this.cgroupPath) : -1;
    const errors: unknown[] = [];
    try {
      for (const h of [...HOOKS].reverse()) {
        if (h.perNetns) continue;
        try {
          if (!h.cgroupAttach) {
            for (const m of SKMSG_MAPS)
              this.addon.progDetach(this.prog(h.prog), this.map(m), at.skMsgVerdict);
          } else if (cg >= 0) this.addon.progDetach(this.prog(h.prog), cg, at[h.cgroupAttach]);
        } catch (err) {
          if (errnoOf(err) !== ENOENT) errors.push(err);
        }
      }
    } finally {
      if (cg >= 0) this.addon.close(cg);
      this.close();
      removePins(this.pins);
    }
    this.log.info('detached dataplane', { pins: this.pins.root, errors: errors.length });
    if (errors.length > 0) throw bpfError('detach left something attached', errors[0]);
  }

  private map(name: MapName): number {
    if (this.closed) throw new SockmeshError('SOCKMESH_E_BPF', 'dataplane handle is closed');
    const fd = this.maps.get(name);
    if (fd === undefined) throw new SockmeshError('SOCKMESH_E_BPF', `map ${name} missing`);
    return fd;
  }

  private prog(name: ProgName): number {
    const fd = this.progs.get(name);
    if (fd === undefined) throw new SockmeshError('SOCKMESH_E_BPF', `program ${name} missing`);
    return fd;
  }
}

/**
 * Removes a node's pins without a live handle (for `sockmesh bpf detach` after a
 * crash): detaching needs the cgroup, so pass it when known.
 */
export function detachPinned(bpffsDir: string, cgroupDir: string | undefined): void {
  const pins = pinLayout(visible(bpffsDir).path);
  const cgroupPath = cgroupDir === undefined ? undefined : visible(cgroupDir).path;
  if (!existsSync(pins.progsDir) && !existsSync(pins.mapsDir)) return;
  const addon = loadAddon();
  const at = addon.attachTypes;
  if (cgroupPath !== undefined && existsSync(cgroupPath)) {
    const cg = addon.openDir(cgroupPath);
    try {
      for (const h of HOOKS) {
        if (!h.cgroupAttach || !existsSync(pins.prog(h.prog))) continue;
        const fd = addon.objGet(pins.prog(h.prog));
        try {
          addon.progDetach(fd, cg, at[h.cgroupAttach]);
        } catch {
          // not attached there
        } finally {
          addon.close(fd);
        }
      }
    } finally {
      addon.close(cg);
    }
  }
  removePins(pins);
}

function loadFresh(
  addon: BpfAddon,
  objDir: string,
  pins: PinLayout,
  maps: Map<MapName, number>,
  progs: Map<ProgName, number>,
): void {
  for (const h of HOOKS) {
    const loaded = addon.loadObject(objectPath(h.object, objDir), pins.mapsDir);
    for (const m of loaded.maps) {
      const name = m.name as MapName;
      if (MAP_NAMES.includes(name) && !maps.has(name)) maps.set(name, m.fd);
      else addon.close(m.fd);
    }
    for (const p of loaded.progs) {
      if (p.name !== h.prog) {
        addon.close(p.fd);
        continue;
      }
      rmSync(pins.prog(h.prog), { force: true });
      addon.objPin(p.fd, pins.prog(h.prog));
      progs.set(h.prog, p.fd);
    }
  }
  for (const m of MAP_NAMES)
    if (!maps.has(m)) throw new SockmeshError('SOCKMESH_E_BPF', `no object defines map ${m}`);
  for (const p of PROG_NAMES)
    if (!progs.has(p)) throw new SockmeshError('SOCKMESH_E_BPF', `no object defines ${p}`);
}

function removePins(pins: PinLayout): void {
  // Unpinning an sk_lookup link detaches it from its netns.
  rmSync(pins.linksDir, { recursive: true, force: true });
  rmSync(pins.progsDir, { recursive: true, force: true });
  rmSync(pins.mapsDir, { recursive: true, force: true });
}

/** Mounts bpffs at /sys/fs/bpf when the pins go there and nothing is mounted yet. */
function ensureBpffs(bpffsDir: string): void {
  if (bpffsDir !== BPFFS_DEFAULT && !bpffsDir.startsWith(`${BPFFS_DEFAULT}/`)) return;
  try {
    if (findBpffsFor(readMounts(), bpffsDir)) return;
    // In a private mount namespace (ip netns exec) a mount here would be an
    // empty instance nobody else sees: only mount in the init namespace.
    if (readlinkSync('/proc/self/ns/mnt') !== readlinkSync('/proc/1/ns/mnt')) return;
    mkdirSync(BPFFS_DEFAULT, { recursive: true });
    loadAddon().mountBpffs(BPFFS_DEFAULT);
  } catch {
    // preflight reports SOCKMESH_E_NO_BPFFS with the fix
  }
}

/** Key and value sizes of every map, as include/sockmesh.h defines them. */
const MAP_LAYOUT: Record<MapName, [number, number]> = {
  sm_pods: [8, POD_SIZE],
  sm_config: [4, CONFIG_SIZE],
  sm_excl_ports: [2, 1],
  sm_excl_cidrs: [CIDR4_KEY_SIZE, 1],
  sm_excl_cidrs6: [CIDR6_KEY_SIZE, 1],
  sm_orig_by_cookie: [8, ORIG_DST_SIZE],
  sm_orig_by_tuple: [TUPLE4_SIZE, ORIG_DST_SIZE],
  sm_orig6_by_cookie: [8, ORIG_DST6_SIZE],
  sm_orig6_by_tuple: [TUPLE6_SIZE, ORIG_DST6_SIZE],
  sm_sockhash: [TUPLE4_SIZE, 4],
  sm_sockhash6: [TUPLE6_SIZE, 4],
  sm_counters: [4, 8],
  sm_inbound_pods: [4, 4],
  sm_inbound_listeners: [4, 8],
  sm_tcp_tags: [TUPLE4_SIZE, TCP_PAIR_SIZE],
  sm_tcp_pairs: [TCP_PAIR_SIZE, TCP_STATS_SIZE],
  sm_tcp_cfg: [4, TCP_CFG_SIZE],
  sm_tcp_workloads: [4, TCP_WORKLOAD_NAME_SIZE],
  sm_pol_state: [4, 4],
  sm_pol_sources: [8, POLICY_SOURCE_SIZE],
  sm_pol_dests: [POLICY_DEST_KEY_SIZE, 4],
  sm_pol_rules: [POLICY_KEY_SIZE, POLICY_VERDICT_SIZE],
  sm_pol_counters: [4, POLICY_COUNT_SIZE],
};

/**
 * What an agent that adopts pins must agree on with the one that made them: every map's name
 * and key/value sizes. Two builds with the same fingerprint can share pinned maps (the agent
 * handoff compares it before the new agent touches anything).
 */
export function mapLayoutFingerprint(): string {
  const text = Object.entries(MAP_LAYOUT)
    .map(([name, [k, v]]) => `${name}:${k}/${v}`)
    .sort()
    .join(',');
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** The map pins that exist under `pins` (an interrupted or older load may have left only some). */
function openPinnedMaps(addon: BpfAddon, pins: PinLayout, into: Map<MapName, number>): Map<MapName, number> {
  for (const m of MAP_NAMES) if (existsSync(pins.map(m))) into.set(m, addon.objGet(pins.map(m)));
  return into;
}

/** Pins left by an older build with other layouts cannot be adopted: say how to replace them. */
function checkPinnedLayout(addon: BpfAddon, maps: Map<MapName, number>, bpffsDir: string): void {
  for (const [name, fd] of maps) {
    const info = addon.mapInfo(fd);
    const [key, value] = MAP_LAYOUT[name];
    if (info.keySize !== key || info.valueSize !== value) {
      throw new SockmeshError(
        'SOCKMESH_E_BPF',
        `pinned map ${name} under ${bpffsDir} has key/value ${info.keySize}/${info.valueSize} bytes, this build expects ${key}/${value}`,
        {
          hint: 'it was loaded by another sockmesh version: `sockmesh bpf detach`, then start the agent again',
        },
      );
    }
  }
}

function checkLayout(addon: BpfAddon): void {
  const l = addon.layout;
  const ours = [
    TUPLE4_SIZE,
    TUPLE6_SIZE,
    ORIG_DST_SIZE,
    ORIG_DST6_SIZE,
    CONFIG_SIZE,
    CIDR4_KEY_SIZE,
    CIDR6_KEY_SIZE,
    POD_SIZE,
  ];
  const theirs = [
    l.tuple4Size,
    l.tuple6Size,
    l.origDstSize,
    l.origDst6Size,
    l.configSize,
    l.cidr4KeySize,
    l.cidr6KeySize,
    l.podSize,
  ];
  if (ours.join() !== theirs.join()) {
    throw new SockmeshError('SOCKMESH_E_NOT_BUILT', 'addon was built from a different include/sockmesh.h', {
      hint: 'rebuild: npm run build:bpf && npm run build:addon',
    });
  }
}

function bpfError(message: string, err: unknown): SockmeshError {
  const log = (err as { libbpfLog?: string }).libbpfLog;
  const detail = err instanceof Error ? err.message : String(err);
  return new SockmeshError('SOCKMESH_E_BPF', `${message}: ${detail}${log ? `\n${log.trim()}` : ''}`, {
    hint: 'run `sockmesh bpf status`; `sockmesh bpf detach` clears stale pins',
    cause: err,
  });
}
