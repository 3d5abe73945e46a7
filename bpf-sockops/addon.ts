/**
 * Typed face of the N-API addon (addon/src/addon.cc). Loaded lazily with
 * createRequire so importing the wrapper never fails on a machine that has not
 * built the addon; the first real use says what to build.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SockmeshError } from '../lib/errors.js';

export interface LoadedObject {
  progs: { name: string; fd: number; type: number }[];
  maps: { name: string; fd: number }[];
}

export interface ProbeResult {
  progTypes: Record<'cgroup_sock_addr' | 'sock_ops' | 'sk_msg' | 'cgroup_skb', boolean>;
  mapTypes: Record<'hash' | 'percpu_array' | 'lpm_trie' | 'sockhash', boolean>;
}

export interface BpfAddon {
  probe(): ProbeResult;
  loadObject(objPath: string, mapPinRoot: string): LoadedObject;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  openDir(path: string): number;
  close(fd: number): void;
  progAttach(progFd: number, targetFd: number, attachType: number, flags: number): void;
  progDetach(progFd: number, targetFd: number, attachType: number): void;
  progQuery(targetFd: number, attachType: number): number[];
  progInfo(fd: number): { id: number; type: number; name: string };
  mapInfo(fd: number): {
    id: number;
    type: number;
    name: string;
    keySize: number;
    valueSize: number;
    maxEntries: number;
  };
  mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapKeys(fd: number, keySize: number, limit: number): Buffer[];
  /** Writes every entry of `keys`/`values` (concatenated, fixed sizes) in one syscall; returns the count. */
  mapUpdateBatch(fd: number, keys: Buffer, keySize: number, values: Buffer, valueSize: number): number;
  /** Deletes every key of `keys` (concatenated); each must exist. */
  mapDeleteBatch(fd: number, keys: Buffer, keySize: number): number;
  linkCreate(progFd: number, targetFd: number, attachType: number): number;
  netnsListen(netnsPath: string, ip: string, port: number, backlog: number): number;
  possibleCpus(): number;
  mountBpffs(path: string): void;
  layout: {
    tuple4Size: number;
    tuple6Size: number;
    origDstSize: number;
    origDst6Size: number;
    configSize: number;
    cidr4KeySize: number;
    cidr6KeySize: number;
    podSize: number;
    configAccelOffset: number;
    counterMax: number;
    maxConns: number;
  };
  attachTypes: {
    cgroupInet4Connect: number;
    cgroupInet6Connect: number;
    cgroupSockOps: number;
    cgroupInetIngress: number;
    skMsgVerdict: number;
    skLookup: number;
    flagAllowMulti: number;
  };
}

/** Errors thrown by the addon carry the failing call and errno. */
export interface AddonError extends Error {
  errno?: number;
  syscall?: string;
  libbpfLog?: string;
}

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;

const here = dirname(fileURLToPath(import.meta.url));
/** Source tree root of bpf-sockops (this file may run from dist/ too). */
export const BPF_SOCKOPS_DIR = here.includes(`${join('dist', 'bpf-sockops')}`)
  ? join(here, '..', '..', 'bpf-sockops')
  : here;
export const ADDON_PATH = join(BPF_SOCKOPS_DIR, 'addon', 'build', 'Release', 'sockmesh_bpf.node');
export const OBJ_DIR = join(BPF_SOCKOPS_DIR, 'obj');

let cached: BpfAddon | undefined;

export function loadAddon(path: string = ADDON_PATH): BpfAddon {
  if (cached) return cached;
  if (!existsSync(path)) {
    throw new SockmeshError('SOCKMESH_E_NOT_BUILT', `BPF loader addon not built (${path} missing)`, {
      hint: 'run `npm run build:addon` (needs libbpf-dev and node headers)',
    });
  }
  const require = createRequire(import.meta.url);
  cached = require(path) as BpfAddon;
  return cached;
}

export function errnoOf(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null && typeof (err as AddonError).errno === 'number'
    ? (err as AddonError).errno
    : undefined;
}

export const ENOENT = 2;
export const EEXIST = 17;
export const EPERM = 1;
