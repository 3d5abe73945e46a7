import type { Command } from '../command.js';

/** A verb as `sockmesh --help` lists it; its module is loaded only when it runs. */
export interface CommandEntry {
  name: string;
  summary: string;
  load(): Promise<Command>;
}

/**
 * Every verb of `sockmesh`, in the order `sockmesh --help` lists them. Loading
 * lazily keeps each process to what its verb needs: a node agent does not
 * load the control plane, the lab or the CLI tables.
 */
export const commands: CommandEntry[] = [
  {
    name: 'up',
    summary: 'start the local mesh: nodes and pods as namespaces, control plane, agents, example workloads',
    load: async () => (await import('./up.js')).upCommand,
  },
  {
    name: 'down',
    summary: 'remove a local mesh: every namespace, cgroup, pin and process it made',
    load: async () => (await import('./lab.js')).downCommand,
  },
  {
    name: 'exec',
    summary: 'run a command inside a pod (its netns, cgroup and /etc/hosts)',
    load: async () => (await import('./lab.js')).execCommand,
  },
  {
    name: 'status',
    summary: 'nodes, agents, meshed pods, identities, config version and BPF counters of the local mesh',
    load: async () => (await import('./mesh.js')).statusCommand,
  },
  {
    name: 'label',
    summary: 'put a namespace into the mesh or take it out (mesh=...), or set its mTLS mode (mtls=...), live',
    load: async () => (await import('./mesh.js')).labelCommand,
  },
  {
    name: 'apply',
    summary: 'validate manifests and apply them to the running control plane, printing what changed',
    load: async () => (await import('./mesh.js')).applyCommand,
  },
  {
    name: 'canary',
    summary:
      "canary guards (state, weight, last decision), or an HTTPRoute's or GRPCRoute's live per-backend share and latency",
    load: async () => (await import('./canary.js')).canaryCommand,
  },
  {
    name: 'explain',
    summary:
      'what happens to a connection from a pod to a Service or pod, end to end, from the live state (route, split, endpoints, mTLS, authorization)',
    load: async () => (await import('./explain.js')).explainCommand,
  },
  {
    name: 'dashboard',
    summary:
      'a live view of the mesh in the browser: service graph with rates, success, p99 (and TCP health), canary splits, denials',
    load: async () => (await import('./dashboard.js')).dashboardCommand,
  },
  {
    name: 'kubectl',
    summary: "kubectl against the local mesh's Kubernetes API server (a mesh started with up --kube)",
    load: async () => (await import('./kube.js')).kubectlCommand,
  },
  {
    name: 'restart-agent',
    summary: "replace a node's agent in the local mesh without refusing a connection (or --kill: a crash)",
    load: async () => (await import('./restart-agent.js')).restartAgentCommand,
  },
  {
    name: 'bpf',
    summary: 'inspect or remove the kernel dataplane of a node (status, counters, detach)',
    load: async () => (await import('./bpf.js')).bpfCommand,
  },
  {
    name: 'control-plane',
    summary: 'run the xDS control plane in the foreground (manifests dir -> Envoy v3 over ADS)',
    load: async () => (await import('./controlplane.js')).controlPlaneCommand,
  },
  {
    name: 'agent',
    summary: 'run the node agent in the foreground (BPF capture, proxy, mTLS tunnel, metrics)',
    load: async () => (await import('./agent.js')).agentCommand,
  },
  {
    name: 'ca',
    summary: 'create, import or show the certificate authority of the trust domain',
    load: async () => (await import('./ca.js')).caCommand,
  },
  {
    name: 'identity',
    summary: 'issue, inspect and list X.509-SVIDs (SPIFFE identities)',
    load: async () => (await import('./identity.js')).identityCommand,
  },
  {
    name: 'lab-kube',
    summary: "internal to 'up --kube': the local mesh's Kubernetes control plane and lab kubelet",
    load: async () => (await import('./kube.js')).labKubeCommand,
  },
];
