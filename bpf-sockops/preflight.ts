/**
 * Checks that this machine can run the dataplane, each failure with a stable
 * code and what to do. Parsing is pure (tested on fixtures); probing is I/O.
 */
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { SockmeshError } from '../lib/errors.js';
import { type BpfAddon, loadAddon, OBJ_DIR } from './addon.js';

export const HOOK_OBJECTS = ['connect4', 'connect6', 'sockops', 'redir', 'strict', 'inbound'] as const;
export type HookObject = (typeof HOOK_OBJECTS)[number];

export interface Mount {
  source: string;
  target: string;
  fstype: string;
}

/** /proc/mounts lines; octal escapes (`\040` = space) decoded. */
export function parseMounts(text: string): Mount[] {
  const decodeOctal = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const [source, target, fstype] = line.trim().split(/\s+/);
    if (source && target && fstype) out.push({ source, target: decodeOctal(target), fstype });
  }
  return out;
}

/** The cgroup v2 mount point (pure hybrid or unified layouts alike), if any. */
export function findCgroup2(mounts: Mount[]): string | undefined {
  return mounts.find((m) => m.fstype === 'cgroup2')?.target;
}

/** The bpffs mount that contains `dir`, if any (longest matching mount point). */
export function findBpffsFor(mounts: Mount[], dir: string): string | undefined {
  const within = (root: string) => dir === root || dir.startsWith(root.endsWith('/') ? root : `${root}/`);
  return mounts
    .filter((m) => m.fstype === 'bpf' && within(m.target))
    .sort((a, b) => b.target.length - a.target.length)[0]?.target;
}

/** True if `path` lies inside the cgroup2 hierarchy mounted at `root`. */
export function isUnder(root: string, path: string): boolean {
  return path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`);
}

export interface PreflightInput {
  uid: number;
  /** Effective capability set (CapEff of /proc/self/status); undefined where it cannot be read. */
  capEff?: bigint;
  btfPresent: boolean;
  mounts: Mount[];
  cgroupPath?: string;
  bpffsDir?: string;
  objectsBuilt: boolean;
  addonBuilt: boolean;
  probe?: BpfAddon['probe'] extends () => infer R ? R : never;
  /** `uname -r`; judged for the sockops callbacks TCP health needs. */
  kernelRelease?: string;
}

/**
 * TCP health (include/tcp-health.bpf.h) needs the sockops RTT callback (5.3),
 * socket storage from sockops and bpf_skc_to_tcp_sock (5.9); the sockops
 * object carries it, so without them the dataplane cannot load at all.
 */
export const TCP_HEALTH_MIN_KERNEL: [number, number] = [5, 10];

/** [major, minor] of a kernel release string, undefined if it does not start with one. */
export function parseKernelRelease(text: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;
type CapName = keyof typeof CAP;
/** What loading and attaching the dataplane asks the kernel for (docs/install.md, "Capabilities"). */
const BPF_CAPS: readonly CapName[] = ['BPF', 'PERFMON', 'NET_ADMIN'];

/** CapEff from the text of /proc/<pid>/status. */
export function parseCapEff(status: string): bigint | undefined {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : undefined;
}

/**
 * The capabilities the dataplane still lacks: none with CAP_SYS_ADMIN (the kernel accepts it
 * wherever it asks for CAP_BPF, CAP_PERFMON or CAP_NET_ADMIN), else those of the three missing.
 */
export function missingBpfCaps(capEff: bigint): CapName[] {
  const has = (c: CapName) => (capEff & (1n << BigInt(CAP[c]))) !== 0n;
  return has('SYS_ADMIN') ? [] : BPF_CAPS.filter((c) => !has(c));
}

/** Every problem found, most fundamental first; empty means ready. */
export function evaluatePreflight(input: PreflightInput): SockmeshError[] {
  const errs: SockmeshError[] = [];
  const missingCaps = input.capEff === undefined ? undefined : missingBpfCaps(input.capEff);
  if (input.uid !== 0 && (missingCaps === undefined || missingCaps.length > 0)) {
    errs.push(
      new SockmeshError('SOCKMESH_E_NOT_ROOT', 'loading BPF programs needs root', {
        hint: 'run with sudo (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN are required)',
      }),
    );
  } else if (missingCaps && missingCaps.length > 0) {
    // Root in a container whose runtime dropped them: the kernel would refuse every BPF call,
    // which a probe of program types cannot tell from a kernel without them.
    errs.push(
      new SockmeshError(
        'SOCKMESH_E_NO_CAPABILITY',
        `running without ${missingCaps.map((c) => `CAP_${c}`).join(', ')} (effective capabilities 0x${input.capEff!.toString(16)}): the kernel refuses to load or attach BPF programs`,
        {
          hint: "grant CAP_SYS_ADMIN (and CAP_SYS_PTRACE for permissive pods), or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: the chart's agent.capabilities, or `docker run --cap-add ...`",
        },
      ),
    );
  }
  if (!input.btfPresent) {
    errs.push(
      new SockmeshError('SOCKMESH_E_NO_BTF', 'kernel BTF (/sys/kernel/btf/vmlinux) not found', {
        hint: 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (CO-RE programs need it)',
      }),
    );
  }
  const cg2 = findCgroup2(input.mounts);
  if (!cg2) {
    errs.push(
      new SockmeshError('SOCKMESH_E_NO_CGROUP2', 'no cgroup v2 hierarchy is mounted', {
        hint: 'mount one: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified',
      }),
    );
  } else if (input.cgroupPath !== undefined && !isUnder(cg2, input.cgroupPath)) {
    errs.push(
      new SockmeshError(
        'SOCKMESH_E_NO_CGROUP2',
        `${input.cgroupPath} is not inside the cgroup2 mount ${cg2}`,
        {
          hint: `attach to a directory under ${cg2}`,
        },
      ),
    );
  }
  if (input.bpffsDir !== undefined && !findBpffsFor(input.mounts, input.bpffsDir)) {
    errs.push(
      new SockmeshError('SOCKMESH_E_NO_BPFFS', `${input.bpffsDir} is not on a mounted bpffs`, {
        hint: 'mount it: mount -t bpf bpf /sys/fs/bpf (the loader does this itself for /sys/fs/bpf)',
      }),
    );
  }
  if (!input.objectsBuilt) {
    errs.push(
      new SockmeshError('SOCKMESH_E_NOT_BUILT', 'BPF objects not built', { hint: 'run `npm run build:bpf`' }),
    );
  }
  if (!input.addonBuilt) {
    errs.push(
      new SockmeshError('SOCKMESH_E_NOT_BUILT', 'BPF loader addon not built', {
        hint: 'run `npm run build:addon`',
      }),
    );
  }
  const kernel = input.kernelRelease === undefined ? undefined : parseKernelRelease(input.kernelRelease);
  const [minMajor, minMinor] = TCP_HEALTH_MIN_KERNEL;
  if (kernel && (kernel[0] < minMajor || (kernel[0] === minMajor && kernel[1] < minMinor))) {
    errs.push(
      new SockmeshError(
        'SOCKMESH_E_KERNEL_FEATURE',
        `kernel ${input.kernelRelease} lacks the sockops callbacks TCP health needs (BPF_SOCK_OPS_RTT_CB, RETRANS_CB, RTO_CB, STATE_CB with socket storage)`,
        { hint: `use Linux >= ${minMajor}.${minMinor} (sockmesh is tested on >= 6.1)` },
      ),
    );
  }
  if (input.probe) {
    const missing = [
      ...Object.entries(input.probe.progTypes)
        .filter(([, ok]) => !ok)
        .map(([t]) => `program type ${t}`),
      ...Object.entries(input.probe.mapTypes)
        .filter(([, ok]) => !ok)
        .map(([t]) => `map type ${t}`),
    ];
    if (missing.length > 0) {
      errs.push(
        new SockmeshError('SOCKMESH_E_KERNEL_FEATURE', `kernel lacks ${missing.join(', ')}`, {
          hint: 'use Linux >= 5.10 with CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF, CONFIG_BPF_STREAM_PARSER',
        }),
      );
    }
  }
  return errs;
}

export function objectPath(name: HookObject, objDir: string = OBJ_DIR): string {
  return join(objDir, `${name}.bpf.o`);
}

export function readMounts(file = '/proc/self/mounts'): Mount[] {
  return parseMounts(readFileSync(file, 'utf8'));
}

/** Gathers the facts for evaluatePreflight from this machine. */
export function gatherPreflight(opts: {
  cgroupPath?: string;
  bpffsDir?: string;
  objDir?: string;
  /** Mount table to judge the paths by (see hostView). */
  mountsFile?: string;
}): PreflightInput {
  const objDir = opts.objDir ?? OBJ_DIR;
  const objectsBuilt = HOOK_OBJECTS.every((n) => existsSync(objectPath(n, objDir)));
  let addon: BpfAddon | undefined;
  try {
    addon = loadAddon();
  } catch {
    addon = undefined;
  }
  const uid = process.getuid?.() ?? -1;
  let capEff: bigint | undefined;
  try {
    capEff = parseCapEff(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    capEff = undefined;
  }
  const capable = capEff === undefined ? uid === 0 : missingBpfCaps(capEff).length === 0;
  return {
    uid,
    ...(capEff === undefined ? {} : { capEff }),
    btfPresent: existsSync('/sys/kernel/btf/vmlinux'),
    mounts: readMounts(opts.mountsFile),
    ...(opts.cgroupPath === undefined ? {} : { cgroupPath: opts.cgroupPath }),
    ...(opts.bpffsDir === undefined ? {} : { bpffsDir: opts.bpffsDir }),
    objectsBuilt,
    addonBuilt: addon !== undefined,
    kernelRelease: release(),
    // Without the capabilities every probe fails: it would name kernel features that are there.
    ...(addon && capable ? { probe: addon.probe() } : {}),
  };
}

/** Throws the most fundamental problem; the codes of any others are appended to its message. */
export function assertPreflight(input: PreflightInput): void {
  const errs = evaluatePreflight(input);
  const first = errs[0];
  if (!first) return;
  if (errs.length > 1) {
    first.message += ` (also: ${errs
      .slice(1)
      .map((e) => e.code)
      .join(', ')})`;
  }
  throw first;
}
