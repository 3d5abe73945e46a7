/**
 * The lab kubelet: what a kubelet does for the pods bound to the lab's nodes,
 * against a real API server. It registers each test bed node as a core v1
 * Node, and realizes every Pod whose spec.nodeName is a lab node as a netns +
 * cgroup of the test bed, with the cgroup laid out as the kubelet's systemd
 * driver lays it out (kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice,
 * one <container>.scope per container below it). It starts the containers'
 * processes, reports podIP, Running and Ready through the status subresource,
 * and on delete kills the pod, removes its netns and cgroups, then deletes the
 * object for good (grace period 0, as kubelet does once the pod is stopped).
 *
 * Level-triggered: every event only marks a pod dirty; one loop compares what
 * the API says with what the bed holds and converges. A relist after a watch
 * error therefore repairs anything missed.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger } from '../../lib/log.js';
import { kubeletPodCgroup, type QosClass } from '../../mesh-agent/agent/pod-cgroups.js';
import { KubeApiError, type KubeClient, type KubeObject } from '../../xds/sources/kube/client.js';
import { Reflector } from '../../xds/sources/kube/reflector.js';
import type { TestBed } from '../testbed.js';
import type { LabNode, LabPod } from '../types.js';
import { podQosClass } from './qos.js';

const ROOT = join(
  dirname(fileURLToPath(import.meta.url)),
  import.meta.url.endsWith('.ts') ? '../..' : '../../..',
);
const EXAMPLE_APP = join(ROOT, 'examples', 'shop', 'app', 'server.mjs');
const PROBE = join(ROOT, 'lab', 'probe.mjs');

/** Fixes a pod's IP (the demo's output stays the same from run to run); the next free one otherwise. */
export const POD_IP_ANNOTATION = 'lab.sockmesh.io/pod-ip';
const EXTRA_KEY = 'labKubelet';

interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number }[];
}

interface PodObject extends KubeObject {
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    containers?: Container[];
    [k: string]: unknown;
  };
  status?: { qosClass?: string; [k: string]: unknown };
}

interface Realized {
  uid: string;
  qos: QosClass;
  ready: boolean;
}

export interface LabKubeletOptions {
  bed: TestBed;
  client: KubeClient;
  /** Per-pod process logs go to `<logsDir>/pod-<ns>-<name>.log`. */
  logsDir: string;
  clusterDomain?: string;
  log?: Logger;
}

export class LabKubelet {
  private readonly log: Logger;
  private readonly realized = new Map<string, Realized>();
  private readonly dirty = new Set<string>();
  private pods: Reflector | undefined;
  private services: Reflector | undefined;
  private draining: Promise<void> | undefined;
  private stopped = false;
  private hostsJson = '';
  private readonly upstreams: Record<string, string[]>;

  constructor(private readonly opts: LabKubeletOptions) {
    this.log = opts.log ?? createLogger('lab-kubelet');
    const f = join(dirname(EXAMPLE_APP), 'upstreams.json');
    this.upstreams = existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, string[]>) : {};
    // A restarted kubelet adopts the pods it realized before (the bed keeps them).
    const before = opts.bed.getExtra<Record<string, Realized>>(EXTRA_KEY) ?? {};
    const present = new Set(opts.bed.pods.map((p) => `${p.namespace}/${p.name}`));
    for (const [k, v] of Object.entries(before)) if (present.has(k)) this.realized.set(k, v);
  }

  /** Registers the nodes, lists pods and services, realizes what is bound here, and keeps watching. */
  async start(): Promise<void> {
    for (const node of this.opts.bed.nodes) await this.registerNode(node);
    const c = this.opts.client;
    this.services = new Reflector(
      c,
      { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', namespaced: true },
      {
        replaced: () => this.writeHosts(),
        upserted: () => this.writeHosts(),
        deleted: () => this.writeHosts(),
      },
      this.log,
    );
    this.pods = new Reflector(
      c,
      { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods', namespaced: true },
      {
        replaced: (store) => this.markDirty([...store.keys(), ...this.realized.keys()]),
        upserted: (key) => this.markDirty([key]),
        deleted: (key) => this.markDirty([key]),
      },
      this.log,
    );
    await this.services.list();
    await this.pods.list();
    this.services.start();
    this.pods.start();
    await this.idle();
  }

  /** Resolves once every pod event seen so far has been acted on. */
  async idle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([this.pods?.stop(), this.services?.stop()]);
    await this.idle();
  }

  private markDirty(keys: Iterable<string>): void {
    for (const k of keys) this.dirty.add(k);
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
  }

  private async drain(): Promise<void> {
    while (this.dirty.size > 0 && !this.stopped) {
      const key = this.dirty.values().next().value as string;
      this.dirty.delete(key);
      try {
        await this.sync(key);
      } catch (err) {
        this.log.error('pod sync failed; retrying', { pod: key, err: String(err) });
        setTimeout(() => this.markDirty([key]), 1000).unref();
      }
    }
  }

  /** Converges one pod: realize it, tear it down, or finish its deletion. */
  private async sync(key: string): Promise<void> {
    const obj = this.pods?.store.get(key) as PodObject | undefined;
    const mine = obj !== undefined && this.isLabNode(obj.spec?.nodeName);
    const have = this.realized.get(key);
    const uid = obj?.metadata?.uid ?? '';
    if (have && (!mine || have.uid !== uid || obj?.metadata?.deletionTimestamp)) await this.teardown(key);
    if (!mine || !obj) return;
    if (obj.metadata?.deletionTimestamp) {
      // The pod is stopped and gone from the node: now the object may go (kubelet's final delete).
      await this.deletePodObject(obj);
      return;
    }
    if (!this.realized.has(key)) await this.realize(key, obj);
  }

  private isLabNode(name: string | undefined): boolean {
    return name !== undefined && this.opts.bed.nodes.some((n) => n.name === name);
  }

  private async realize(key: string, obj: PodObject): Promise<void> {
    const { bed } = this.opts;
    const md = obj.metadata ?? {};
    const spec = obj.spec ?? {};
    const uid = md.uid!;
    const qos = podQosClass(spec);
    if (obj.status?.qosClass && obj.status.qosClass !== qos) {
      this.log.warn('QoS class differs from the API server', {
        pod: key,
        computed: qos,
        status: obj.status.qosClass,
      });
    }
    const containers = spec.containers ?? [];
    const containerCgroups: Record<string, string> = {};
    for (const c of containers) containerCgroups[c.name] = `sockmesh-${scopeId(uid, c.name)}.scope`;
    const annotations = (md.annotations ?? {}) as Record<string, string>;
    const fixedIp = annotations[POD_IP_ANNOTATION];
    const pod = bed.addPodSync({
      name: md.name!,
      namespace: md.namespace!,
      node: spec.nodeName!,
      labels: { ...(md.labels ?? {}) },
      serviceAccount: spec.serviceAccountName ?? 'default',
      ...(fixedIp && !bed.pods.some((p) => p.ip === fixedIp) ? { ip: fixedIp } : {}),
      cgroup: kubeletPodCgroup('systemd', qos, uid),
      containerCgroups,
    });
    const state: Realized = { uid, qos, ready: false };
    this.realized.set(key, state);
    this.saveRealized();
    this.log.info('pod realized', { pod: key, ip: pod.ip, qos, cgroup: pod.cgroupPath });
    const ports: number[] = [];
    for (const c of containers) {
      const port = this.startContainer(pod, c);
      if (port !== undefined) ports.push(port);
    }
    const node = bed.node(pod.node);
    await this.patchStatus(obj, pod, node, false);
    // Ready once every container that listens accepts connections (a readiness probe on its port).
    void this.markReady(key, obj, pod, node, ports);
  }

  private async markReady(
    key: string,
    obj: PodObject,
    pod: LabPod,
    node: LabNode,
    ports: number[],
  ): Promise<void> {
    try {
      if (ports.length > 0) {
        const probes = ports.map((port) => ({ kind: 'tcp', host: pod.ip, port }));
        const res = await this.opts.bed.exec(
          node,
          [process.execPath, PROBE, '30000', JSON.stringify(probes)],
          {
            timeoutMs: 35_000,
          },
        );
        if (res.code !== 0) throw new Error(`readiness probe failed: ${res.stderr.trim()}`);
      }
      const r = this.realized.get(key);
      if (!r || r.uid !== obj.metadata?.uid || this.stopped) return;
      await this.patchStatus(obj, pod, node, true);
      r.ready = true;
      this.log.info('pod ready', { pod: key });
    } catch (err) {
      this.log.error('pod did not become ready', { pod: key, err: String(err) });
    }
  }

  /** The container's process: its command, or the example app when it only declares ports. */
  private startContainer(pod: LabPod, c: Container): number | undefined {
    const port = c.ports?.[0]?.containerPort;
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
    let argv: string[] | undefined;
    if (c.command && c.command.length > 0) argv = [...c.command, ...(c.args ?? [])];
    else if (port !== undefined) {
      argv = [process.execPath, EXAMPLE_APP];
      const service = pod.labels.app ?? pod.name;
      Object.assign(env, {
        SERVICE: service,
        VERSION: pod.labels.version ?? 'v1',
        PORT: String(port),
        UPSTREAMS: (this.upstreams[service] ?? []).join(','),
      });
      const grpc = c.ports?.find((p) => p.name === 'grpc')?.containerPort;
      if (grpc !== undefined) env.H2C_PORT = String(grpc);
    }
    if (!argv) return undefined; // nothing to run: a pod others exec into
    const cgroupPath = pod.containerCgroups?.[c.name] ?? pod.cgroupPath;
    this.opts.bed.spawn({ ...pod, cgroupPath }, argv, {
      env: { POD_NAME: pod.name, POD_NAMESPACE: pod.namespace, NODE_NAME: pod.node, ...env },
      logFile: join(this.opts.logsDir, `pod-${pod.namespace}-${pod.name}.log`),
    });
    return c.command ? undefined : port;
  }

  private async teardown(key: string): Promise<void> {
    const [ns, name] = key.split('/') as [string, string];
    if (this.opts.bed.pods.some((p) => p.namespace === ns && p.name === name)) {
      await this.opts.bed.removePod(ns, name);
    }
    this.realized.delete(key);
    this.saveRealized();
    this.log.info('pod removed from its node', { pod: key });
  }

  private async deletePodObject(obj: PodObject): Promise<void> {
    const md = obj.metadata ?? {};
    try {
      await this.opts.client.json('DELETE', `/api/v1/namespaces/${md.namespace}/pods/${md.name}`, {
        body: {
          kind: 'DeleteOptions',
          apiVersion: 'v1',
          gracePeriodSeconds: 0,
          preconditions: { uid: md.uid },
        },
      });
    } catch (err) {
      // Gone already, or replaced by a new pod of the same name (the uid precondition fails): nothing to do.
      if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) return;
      throw err;
    }
  }

  private async patchStatus(obj: PodObject, pod: LabPod, node: LabNode, ready: boolean): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const md = obj.metadata ?? {};
    const cond = (type: string, status: boolean) => ({
      type,
      status: status ? 'True' : 'False',
      lastTransitionTime: now,
      lastProbeTime: null,
    });
    const containers = obj.spec?.containers ?? [];
    const status = {
      phase: 'Running',
      hostIP: node.underlayIp,
      hostIPs: [{ ip: node.underlayIp }],
      podIP: pod.ip,
      podIPs: [{ ip: pod.ip }],
      startTime: now,
      qosClass: obj.status?.qosClass ?? podQosClass(obj.spec ?? {}),
      conditions: [
        cond('PodReadyToStartContainers', true),
        cond('Initialized', true),
        cond('Ready', ready),
        cond('ContainersReady', ready),
        cond('PodScheduled', true),
      ],
      containerStatuses: containers.map((c) => ({
        name: c.name,
        image: c.image ?? '',
        imageID: '',
        containerID: `sockmesh://${scopeId(md.uid ?? '', c.name)}`,
        ready,
        started: true,
        restartCount: 0,
        state: { running: { startedAt: now } },
      })),
    };
    try {
      await this.opts.client.json('PATCH', `/api/v1/namespaces/${md.namespace}/pods/${md.name}/status`, {
        body: { metadata: { uid: md.uid }, status },
        contentType: 'application/merge-patch+json',
      });
    } catch (err) {
      if (err instanceof KubeApiError && (err.status === 404 || err.status === 409)) return;
      throw err;
    }
  }

  /** A lab node as a core v1 Node: InternalIP = its underlay address, Ready. */
  private async registerNode(node: LabNode): Promise<void> {
    const c = this.opts.client;
    try {
      await c.json('POST', '/api/v1/nodes', {
        body: {
          apiVersion: 'v1',
          kind: 'Node',
          metadata: {
            name: node.name,
            labels: {
              'kubernetes.io/hostname': node.name,
              'kubernetes.io/os': 'linux',
              'sockmesh.io/lab-run': this.opts.bed.runId,
            },
          },
          spec: { podCIDR: node.podCidr, podCIDRs: [node.podCidr] },
        },
      });
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 409)) throw err;
    }
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const capacity = {
      cpu: String(cpus().length),
      memory: `${Math.floor(totalmem() / 1024)}Ki`,
      pods: '110',
    };
    await c.json('PATCH', `/api/v1/nodes/${node.name}/status`, {
      contentType: 'application/merge-patch+json',
      body: {
        status: {
          addresses: [
            { type: 'InternalIP', address: node.underlayIp },
            { type: 'Hostname', address: node.name },
          ],
          capacity,
          allocatable: capacity,
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              reason: 'KubeletReady',
              message: 'sockmesh lab kubelet is posting ready status',
              lastHeartbeatTime: now,
              lastTransitionTime: now,
            },
          ],
          nodeInfo: {
            kubeletVersion: 'sockmesh-lab',
            containerRuntimeVersion: 'sockmesh-lab://netns',
            operatingSystem: 'linux',
            architecture: process.arch === 'x64' ? 'amd64' : process.arch,
            machineID: '',
            systemUUID: '',
            bootID: '',
            kernelVersion: release(),
            osImage: 'sockmesh lab',
            kubeProxyVersion: '',
          },
        },
      },
    });
    this.log.info('node registered', { node: node.name, internalIP: node.underlayIp });
  }

  /** Service names -> cluster IPs in every pod's /etc/hosts (the lab's stand-in for cluster DNS). */
  private writeHosts(): void {
    const domain = this.opts.clusterDomain ?? 'cluster.local';
    const hosts: Record<string, string> = {};
    for (const s of this.services?.store.values() ?? []) {
      const ip = (s.spec as { clusterIP?: string } | undefined)?.clusterIP;
      const { name, namespace } = s.metadata ?? {};
      if (!ip || ip === 'None' || !name || !namespace) continue;
      for (const n of [
        `${name}.${namespace}.svc.${domain}`,
        `${name}.${namespace}.svc`,
        `${name}.${namespace}`,
      ])
        hosts[n] = ip;
    }
    const json = JSON.stringify(Object.entries(hosts).sort());
    if (json === this.hostsJson) return;
    this.hostsJson = json;
    this.opts.bed.setHosts(hosts);
  }

  private saveRealized(): void {
    this.opts.bed.setExtra(EXTRA_KEY, Object.fromEntries(this.realized));
  }
}

/** A stable container id for a pod's container (what a runtime's `<id>.scope` would carry). */
function scopeId(uid: string, container: string): string {
  return createHash('sha256').update(`${uid}/${container}`).digest('hex').slice(0, 16);
}
