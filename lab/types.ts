/**
 * The local mesh test bed: a small cluster built from network namespaces and
 * cgroups on one Linux machine. Used by `sockmesh up`, the examples and every
 * integration test. Every object it creates carries the run's unique prefix and
 * is recorded in a state file, so teardown removes exactly what this run made.
 */

export interface LabNode {
  /** Logical name, e.g. `node1`. */
  name: string;
  /** 1-based; picks the pod CIDR 10.244.<index>.0/24 and underlay IP 10.10.0.<index>. */
  index: number;
  /** Network namespace name (under /run/netns). */
  netns: string;
  /** The node's address on the underlay shared by all nodes (no encapsulation). */
  underlayIp: string;
  /** e.g. `10.244.1.0/24`. */
  podCidr: string;
  /** The node bridge address, gateway of every pod on it, reachable from pods: the proxy binds here. */
  gatewayIp: string;
  /** cgroup v2 directory of the node; pods live in `<cgroupPath>/pods/<ns>.<pod>`. */
  cgroupPath: string;
  /** cgroup for the node's own daemons (agent, proxy): never meshed. */
  systemCgroupPath: string;
  /** bpffs directory reserved for this node's pins. */
  bpffsDir: string;
}

export interface LabPod {
  name: string;
  namespace: string;
  node: string;
  netns: string;
  ip: string;
  cgroupPath: string;
  /** cgroup v2 id (the directory's inode number), what bpf_get_current_cgroup_id() returns. */
  cgroupId: bigint;
  labels: Record<string, string>;
  serviceAccount: string;
  /** Child cgroups of the pod cgroup, one per container (the kubelet layout), by container name. */
  containerCgroups?: Record<string, string>;
}

export interface PodSpec {
  name: string;
  namespace: string;
  node: string;
  labels?: Record<string, string>;
  serviceAccount?: string;
  /** Fixed IP inside the node's pod CIDR; the next free one otherwise. */
  ip?: string;
  /**
   * The pod's cgroup relative to the node's cgroup, e.g. the kubelet's
   * `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`; missing parents
   * are made (and removed with the bed). Default `pods/<ns>.<pod>`.
   */
  cgroup?: string;
  /** Container cgroups to make below the pod's, by container name -> directory name. */
  containerCgroups?: Record<string, string>;
}

export interface TestBedOptions {
  /** Node names, or a count (`node1`..`nodeN`). Default 2. */
  nodes?: string[] | number;
  /** Overrides the random run id (lowercase alnum, <= 8 chars). */
  runId?: string;
  /** Where state files live; default /run/sockmesh. */
  stateDir?: string;
}

/** The machine itself: root network namespace, in the run's own cgroup (the control plane lives here). */
export interface LabHost {
  kind: 'host';
  netns: undefined;
  systemCgroupPath: string;
}

/** Where a process runs: inside a pod (its netns and cgroup), on a node (node netns, system cgroup) or on the host. */
export type LabTarget = LabPod | LabNode | LabHost;

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the process after this many ms (exec only). */
  timeoutMs?: number;
  /** Bytes written to stdin (exec only). */
  input?: string | Buffer;
  /** spawn only: append stdout and stderr to this file and detach, so the process outlives its parent. */
  logFile?: string;
}
