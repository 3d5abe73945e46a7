/**
 * Where a pod's cgroup is, from its UID, the way the kubelet lays pod cgroups
 * out (Cilium's cgroup path providers are the model). Resolution is by path and
 * stateless: a pod that started before the agent is found exactly like one that
 * starts after it, and nothing is cached that could go stale.
 */
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { SockmeshError } from '../../lib/errors.js';

/** Kubernetes' pod QoS classes (`status.qosClass`). */
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';
export const QOS_CLASSES: readonly QosClass[] = ['Guaranteed', 'Burstable', 'BestEffort'];

/** The kubelet's `--cgroup-driver`. */
export type CgroupDriver = 'systemd' | 'cgroupfs';

export interface PodCgroupRef {
  namespace: string;
  name: string;
  /** `metadata.uid`; without it only the lab's `<ns>.<pod>` layout can be tried. */
  uid?: string | undefined;
  /** `status.qosClass`, when known: tried first. Every class is tried otherwise. */
  qosClass?: QosClass | undefined;
}

export interface PodCgroupLayoutOptions {
  /**
   * The kubelet's cgroup root as a directory: the one holding `kubepods.slice` (systemd driver) or
   * `kubepods` (cgroupfs driver). On a node that is the cgroup2 mount (kubelet `--cgroup-root=/`).
   */
  kubeletRoot: string;
  /** The kubelet's driver; `auto` (default) decides from which of the two top directories exists. */
  driver?: CgroupDriver | 'auto';
  /** The lab's directory manifests: pods without a UID live in `<labPodsDir>/<ns>.<pod>`. */
  labPodsDir?: string | undefined;
  /** Tests: whether a directory exists. */
  isDir?: (path: string) => boolean;
}

export type PodCgroupMatch =
  | { found: true; dir: string; layout: CgroupDriver | 'lab' }
  | { found: false; tried: string[] };

const UID = /^[0-9a-fA-F-]{1,64}$/;

function defaultIsDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * A pod's cgroup directory relative to the kubelet root, for one driver and QoS class, as
 * kubelet's cgroup manager names it: systemd escapes `-` in the UID to `_` and nests slices
 * (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`); cgroupfs uses
 * plain directories (`kubepods/burstable/pod<uid>`). Guaranteed pods sit directly under kubepods.
 */
export function kubeletPodCgroup(driver: CgroupDriver, qos: QosClass, uid: string): string {
  if (!UID.test(uid)) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `pod UID '${uid}' is not a Kubernetes UID`);
  }
  const q = qos.toLowerCase();
  if (driver === 'systemd') {
    const u = uid.replace(/-/g, '_');
    return qos === 'Guaranteed'
      ? join('kubepods.slice', `kubepods-pod${u}.slice`)
      : join('kubepods.slice', `kubepods-${q}.slice`, `kubepods-${q}-pod${u}.slice`);
  }
  return qos === 'Guaranteed' ? join('kubepods', `pod${uid}`) : join('kubepods', q, `pod${uid}`);
}

/** The top directory of each driver under the kubelet root. */
const TOP: Record<CgroupDriver, string> = { systemd: 'kubepods.slice', cgroupfs: 'kubepods' };

/** Finds pods' cgroups under one kubelet root; see PodCgroupLayoutOptions. */
export class PodCgroupLayout {
  private readonly isDir: (p: string) => boolean;

  constructor(private readonly opts: PodCgroupLayoutOptions) {
    this.isDir = opts.isDir ?? defaultIsDir;
  }

  get kubeletRoot(): string {
    return this.opts.kubeletRoot;
  }

  /** The drivers to try, in order: the configured one, or those whose top directory exists now. */
  drivers(): CgroupDriver[] {
    const d = this.opts.driver ?? 'auto';
    if (d !== 'auto') return [d];
    return (['systemd', 'cgroupfs'] as const).filter((x) => this.isDir(join(this.opts.kubeletRoot, TOP[x])));
  }

  /** Every directory the pod's cgroup may be, most likely first. */
  candidates(pod: PodCgroupRef): { dir: string; layout: CgroupDriver | 'lab' }[] {
    const out: { dir: string; layout: CgroupDriver | 'lab' }[] = [];
    if (pod.uid !== undefined && UID.test(pod.uid)) {
      const classes = pod.qosClass
        ? [pod.qosClass, ...QOS_CLASSES.filter((q) => q !== pod.qosClass)]
        : QOS_CLASSES;
      for (const driver of this.drivers()) {
        for (const qos of classes) {
          out.push({
            dir: join(this.opts.kubeletRoot, kubeletPodCgroup(driver, qos, pod.uid)),
            layout: driver,
          });
        }
      }
    }
    if (this.opts.labPodsDir !== undefined) {
      out.push({ dir: join(this.opts.labPodsDir, `${pod.namespace}.${pod.name}`), layout: 'lab' });
    }
    return out;
  }

  /** The pod's cgroup directory if it exists now. */
  resolve(pod: PodCgroupRef): PodCgroupMatch {
    const tried: string[] = [];
    for (const c of this.candidates(pod)) {
      if (this.isDir(c.dir)) return { found: true, dir: c.dir, layout: c.layout };
      tried.push(c.dir);
    }
    return { found: false, tried };
  }
}

/** The cgroup v2 mount point from /proc/mounts (hybrid hosts mount it at .../unified): never assumed. */
export function cgroup2Mount(mountsFile = '/proc/mounts'): string {
  for (const line of readFileSync(mountsFile, 'utf8').split('\n')) {
    const [, target, type] = line.split(' ');
    if (type === 'cgroup2' && target) {
      return target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    }
  }
  throw new SockmeshError(
    'SOCKMESH_E_NO_CGROUP2',
    'no cgroup v2 hierarchy is mounted (none in /proc/mounts)',
    {
      hint: 'mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`',
    },
  );
}

/**
 * The directory of a kubelet `--cgroup-root` value: kubelet names it relative to the cgroup
 * hierarchy (`/` is the default), so it is joined to the cgroup2 mount unless it already is a
 * path below that mount.
 */
export function kubeletRootDir(cgroupRoot: string, mount: string = cgroup2Mount()): string {
  const m = mount.replace(/\/+$/, '');
  if (isAbsolute(cgroupRoot) && (cgroupRoot === m || cgroupRoot.startsWith(`${m}/`))) return cgroupRoot;
  return join(m, cgroupRoot).replace(/(.)\/+$/, '$1');
}

export function parseCgroupDriver(v: string | undefined): CgroupDriver | 'auto' {
  if (v === undefined || v === 'auto') return 'auto';
  if (v === 'systemd' || v === 'cgroupfs') return v;
  throw new SockmeshError(
    'SOCKMESH_E_USAGE',
    `--cgroup-driver must be systemd, cgroupfs or auto, got '${v}'`,
  );
}

export function parseQosClass(v: unknown): QosClass | undefined {
  return typeof v === 'string' && (QOS_CLASSES as readonly string[]).includes(v)
    ? (v as QosClass)
    : undefined;
}
