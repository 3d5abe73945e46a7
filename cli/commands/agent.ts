import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ENDPOINT_ENV } from '../../certs/index.js';
import { SockmeshError } from '../../lib/errors.js';
import { type AgentOptions, MeshAgent, PORTS, requireAgentPaths } from '../../mesh-agent/agent/agent.js';
import { kubeletRootDir, parseCgroupDriver } from '../../mesh-agent/agent/pod-cgroups.js';
import { DEFAULT_DRAIN_TIMEOUT_MS } from '../../mesh-agent/handoff/upgrade.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';

const IPV4 = /^(\d{1,3})(\.\d{1,3}){3}$/;

export interface AgentCommandOptions {
  agent: AgentOptions;
  /** Present while this process serves on its own sockets (see --ready-file). */
  readyFile?: string;
}

/**
 * Whether this very process serves, from its status: a complete config and the listeners its own
 * (a fresh start, or a handoff that took over), not draining for a successor. The admin port's
 * /ready cannot say it during an overlap: it answers for whichever agent holds that socket.
 */
export function servesItself(status: Record<string, unknown>): boolean {
  const xds = status.xds as { versions?: Record<string, unknown> } | undefined;
  const versions = Object.values(xds?.versions ?? {});
  const complete = versions.length > 0 && versions.every((v) => v !== undefined);
  const handoff = status.handoff as { state?: string } | null | undefined;
  return complete && (handoff === null || handoff === undefined || handoff.state === 'serving');
}

/**
 * The --ready-file. A file left by an earlier container of the same pod (an emptyDir outlives a
 * container restart) is removed first: only this process's serving may create it.
 */
export class ReadyFile {
  private present = false;

  constructor(readonly path: string) {
    rmSync(path, { force: true });
  }

  set(ready: boolean): void {
    if (ready === this.present) return;
    if (ready) writeFileSync(this.path, `${process.pid}\n`);
    else rmSync(this.path, { force: true });
    this.present = ready;
  }
}

/** The agent's options from its command line; every usage error is thrown here, before anything starts. */
export function agentOptions(argv: string[]): AgentCommandOptions {
  const { values: v } = parseCommandArgs(
    argv,
    {
      node: { type: 'string' },
      'control-plane': { type: 'string' },
      'control-plane-tls-cert': { type: 'string' },
      'control-plane-tls-key': { type: 'string' },
      'control-plane-tls-ca': { type: 'string' },
      'proxy-ip': { type: 'string' },
      'tunnel-ip': { type: 'string' },
      cgroup: { type: 'string' },
      'pods-cgroup': { type: 'string' },
      'kubelet-cgroup-root': { type: 'string' },
      'cgroup-driver': { type: 'string' },
      bpffs: { type: 'string' },
      'ca-dir': { type: 'string' },
      'workload-api': { type: 'string' },
      'spire-admin-socket': { type: 'string' },
      'svid-ttl': { type: 'string' },
      workers: { type: 'string' },
      'admin-host': { type: 'string' },
      'access-log': { type: 'boolean' },
      accelerate: { type: 'boolean' },
      'no-tcp-health': { type: 'boolean' },
      'trust-tunnel-senders': { type: 'boolean' },
      otlp: { type: 'string' },
      'handoff-socket': { type: 'string' },
      'drain-timeout': { type: 'string' },
      'ready-file': { type: 'string' },
    },
    false,
  );
  for (const k of ['node', 'control-plane', 'proxy-ip', 'tunnel-ip', 'cgroup', 'bpffs'] as const) {
    if (!v[k])
      throw new SockmeshError('SOCKMESH_E_USAGE', `--${k} is required`, {
        hint: 'see sockmesh agent --help',
      });
  }
  const spireAdmin = v['spire-admin-socket'];
  const chosen = (['ca-dir', 'workload-api', 'spire-admin-socket'] as const).filter((k) => v[k]);
  if (chosen.length > 1) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `--${chosen.join(' and --')} exclude each other`, {
      hint: "SVIDs come from one of: the embedded CA, a Workload API, SPIRE's Delegated Identity API",
    });
  }
  const workloadApi =
    v['workload-api'] ?? (v['ca-dir'] || spireAdmin ? undefined : process.env[ENDPOINT_ENV]);
  if (!workloadApi && !v['ca-dir'] && !spireAdmin) {
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      '--ca-dir, --workload-api or --spire-admin-socket is required',
      {
        hint: `pass the embedded CA directory, a Workload API socket (or set ${ENDPOINT_ENV}), or a SPIRE agent's admin socket`,
      },
    );
  }
  for (const k of ['proxy-ip', 'tunnel-ip'] as const) {
    if (!IPV4.test(v[k]!))
      throw new SockmeshError('SOCKMESH_E_USAGE', `--${k} must be an IPv4 address, got '${v[k]}'`);
  }
  const ttl = v['svid-ttl'] === undefined ? undefined : Number(v['svid-ttl']);
  if (ttl !== undefined && !(Number.isFinite(ttl) && ttl >= 2)) {
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `--svid-ttl must be a number of seconds >= 2, got '${v['svid-ttl']}'`,
    );
  }
  const drainS =
    v['drain-timeout'] === undefined ? DEFAULT_DRAIN_TIMEOUT_MS / 1000 : Number(v['drain-timeout']);
  if (!(Number.isFinite(drainS) && drainS >= 0 && drainS <= 3600)) {
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `--drain-timeout must be a number of seconds from 0 to 3600, got '${v['drain-timeout']}'`,
    );
  }
  const workers = v.workers === undefined ? undefined : Number(v.workers);
  if (workers !== undefined && !(Number.isInteger(workers) && workers >= 1 && workers <= 256)) {
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `--workers must be an integer from 1 to 256, got '${v.workers}'`,
    );
  }
  const tlsFlags = ['control-plane-tls-cert', 'control-plane-tls-key', 'control-plane-tls-ca'] as const;
  if (tlsFlags.some((k) => v[k] !== undefined) && !tlsFlags.every((k) => v[k] !== undefined)) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `--${tlsFlags.join(', --')} go together`);
  }
  const controlPlaneTls = v['control-plane-tls-cert']
    ? {
        cert: readPem(v['control-plane-tls-cert'], '--control-plane-tls-cert'),
        key: readPem(v['control-plane-tls-key']!, '--control-plane-tls-key'),
        ca: readPem(v['control-plane-tls-ca']!, '--control-plane-tls-ca'),
      }
    : undefined;
  const agent: AgentOptions = {
    nodeName: v.node!,
    controlPlane: v['control-plane']!,
    ...(controlPlaneTls ? { controlPlaneTls } : {}),
    proxyIp: v['proxy-ip']!,
    tunnelIp: v['tunnel-ip']!,
    cgroupPath: v.cgroup!,
    podsCgroup: v['pods-cgroup'] ?? `${v.cgroup}/pods`,
    ...(v['kubelet-cgroup-root'] ? { kubeletCgroupRoot: kubeletRootDir(v['kubelet-cgroup-root']) } : {}),
    cgroupDriver: parseCgroupDriver(v['cgroup-driver']),
    bpffsDir: v.bpffs!,
    ...(spireAdmin
      ? { spireAdminSocket: spireAdmin }
      : workloadApi
        ? { workloadApi }
        : { caDir: v['ca-dir']! }),
    ...(ttl === undefined ? {} : { svidTtlMs: ttl * 1000 }),
    ...(workers === undefined ? {} : { workers }),
    ...(v['admin-host'] ? { adminHost: v['admin-host'] } : {}),
    accessLog: v['access-log'] === true,
    accelerate: v.accelerate === true,
    tcpHealth: v['no-tcp-health'] !== true,
    ...(v['trust-tunnel-senders'] ? { trustTunnelSenders: true } : {}),
    ...(v.otlp ? { otlpEndpoint: v.otlp } : {}),
    handoff: {
      socketPath: v['handoff-socket'] ?? `/run/sockmesh/agent-${v.node}.sock`,
      drainTimeoutMs: drainS * 1000,
    },
  };
  return { agent, ...(v['ready-file'] ? { readyFile: v['ready-file'] } : {}) };
}

function readPem(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `cannot read ${flag} ${file}`, {
      hint: 'mount the control plane client certificate (the chart does: sockmesh-xds-client Secret)',
      cause: err,
    });
  }
}

export const agentCommand: Command = {
  usage: `Usage: sockmesh agent --node <name> --control-plane <addr> --proxy-ip <ip> --tunnel-ip <ip>
                      --cgroup <dir> --bpffs <dir>
                      (--ca-dir <dir> | --workload-api <socket> | --spire-admin-socket <socket>)
                      [options]

Runs one node's agent: loads (or adopts) the BPF programs on the node's cgroup,
follows the control plane over ADS, holds the SVIDs of the node's meshed pods
and proxies their traffic. Stops on SIGINT/SIGTERM; the BPF programs stay
pinned so established connections survive a restart.

  --node <name>            node name (the xDS node id)
  --control-plane <addr>   ADS address: unix:/path or host:port
  --control-plane-tls-cert <pem>  client certificate chain } mTLS to a TCP control plane
  --control-plane-tls-key <pem>   client private key       } (it refuses plaintext off
  --control-plane-tls-ca <pem>    CA of its server cert    }  loopback); all three or none
  --proxy-ip <ip>          address pods reach the proxy at (their gateway);
                           the capture listener binds <ip>:${PORTS.outbound}
  --tunnel-ip <ip>         underlay address; the mTLS tunnel binds <ip>:${PORTS.tunnel}
  --cgroup <dir>           the node's cgroup v2 directory (BPF attach point)
  --pods-cgroup <dir>      where pods without a UID (directory manifests) have their
                           cgroups, as <ns>.<pod> (default <cgroup>/pods)
  --kubelet-cgroup-root <path>
                           the kubelet's --cgroup-root, relative to the cgroup v2 mount
                           (found in /proc/mounts) or as a directory below it; pods with
                           a UID are found there as the kubelet lays them out, for every
                           QoS class (default: the --cgroup directory)
  --cgroup-driver <d>      the kubelet's cgroup driver: systemd, cgroupfs or auto (default:
                           whichever of kubepods.slice / kubepods exists)
  --bpffs <dir>            bpffs directory for this node's pins
  --ca-dir <dir>           embedded CA directory (see 'sockmesh ca init')
  --workload-api <socket>  take the SVIDs of local workloads and the trust bundle from a
                           SPIFFE Workload API (e.g. a SPIRE agent) instead of the CA:
                           /path/agent.sock or unix:///path/agent.sock; the agent's
                           process must be registered for every local workload's
                           SPIFFE ID (default: $${ENDPOINT_ENV} when --ca-dir is absent)
  --spire-admin-socket <socket>
                           take them from SPIRE's Delegated Identity API on the SPIRE
                           agent's admin socket (its admin_socket_path): the agent asks
                           for each local identity by its pods' selectors (k8s:ns:<ns>,
                           k8s:sa:<sa>); SPIRE must list the agent's own SPIFFE ID in
                           authorized_delegates, and needs no entry per pod for it
  --svid-ttl <seconds>     SVID lifetime with --ca-dir (default 3600)
  --workers <n>            proxy worker processes sharing the listeners (default: one
                           per core with 4+ cores, else 1: the proxy in the agent process)
  --admin-host <ip>        where metrics/health listen (:${PORTS.admin}); default 0.0.0.0
  --access-log             write one JSON access log line per request/connection to stdout
  --accelerate             splice same-node hops with sk_msg (off by default: see
                           docs/kernel-dataplane.md, "Backpressure on the sk_msg path")
  --no-tcp-health          do not measure kernel TCP health per workload pair (RTT,
                           jitter, retransmits, RTOs, failures; docs/observability.md)
  --trust-tunnel-senders   relay tunnelled HTTP to pods as bytes when the sending agent
                           says it wrote the caller's identity (one L7 hop per request);
                           only sound when no workload can hold an SVID (docs/identity.md)
  --otlp <url>             export spans to this OTLP/HTTP endpoint
  --handoff-socket <path>  unix socket of the hitless upgrade (default
                           /run/sockmesh/agent-<node>.sock); see below
  --drain-timeout <s>      after handing over, how long open connections may stay
                           (default ${DEFAULT_DRAIN_TIMEOUT_MS / 1000}); then the agent exits and closes them.
                           SIGTERM while draining does not cut it short (a DaemonSet
                           deletes the old pod as soon as the new one is ready)
  --ready-file <path>      create <path> while this process serves on its own sockets
                           with a complete config, remove it when it hands over or
                           stops: a readiness check for this process (during an
                           overlap :${PORTS.admin}/ready answers for the old agent)

Upgrade (hitless): start the new agent with the same options while the old one
runs. It asks the old one over --handoff-socket for its listening sockets
(capture ${PORTS.outbound}, tunnel ${PORTS.tunnel}, admin ${PORTS.admin}, and each permissive pod's
${PORTS.inboundPlaintext}), which are passed as file descriptors (SCM_RIGHTS): the very same
kernel sockets, so no connect is ever refused. It adopts the pinned BPF programs
(a different map layout is refused before anything changes: the old agent keeps
serving), gets its config and SVIDs, serves on those sockets, then tells the old
agent, which stops accepting, answers its HTTP/1.1 keep-alive clients with
'Connection: close' and sends GOAWAY on HTTP/2 and tunnel sessions, drains open
connections up to --drain-timeout and exits. A new agent that fails before it
serves changes nothing. kill -9 is not an upgrade: docs/agent.md says what it costs.

Exit codes: 0 stopped, 1 failure, 2 usage, 3 precondition (root, kernel, cgroup, bpffs).`,
  async run({ argv, stderr }) {
    const { agent: opts, readyFile } = agentOptions(argv);
    requireAgentPaths(opts);
    const agent = new MeshAgent(opts);
    const ready = readyFile ? new ReadyFile(readyFile) : undefined;
    await agent.start();
    const poll = setInterval(() => ready?.set(servesItself(agent.status())), 500);
    const why = await new Promise<string>((resolve) => {
      const onSignal = (signal: string): void => {
        if ((agent.status().handoff as { state?: string } | null)?.state === 'draining') {
          stderr.write(`sockmesh agent: ${signal} while draining for a successor: finishing the drain\n`);
          process.once(signal, () => resolve('stopping (second signal)'));
          return;
        }
        resolve('stopping');
      };
      process.once('SIGINT', () => onSignal('SIGINT'));
      process.once('SIGTERM', () => onSignal('SIGTERM'));
      agent.handedOver.then((h) =>
        resolve(
          `handed over to pid ${h.successorPid}, drained in ${h.drainMs} ms${h.boundHit ? ' (bound reached: closing the rest)' : ''}`,
        ),
      );
    });
    clearInterval(poll);
    ready?.set(false);
    stderr.write(`sockmesh agent: ${why}\n`);
    // Whatever still holds the event loop (a connection left at the bound) must not keep the process.
    const stopped = agent.stop().then(() => true);
    const inTime = await Promise.race([
      stopped,
      new Promise<boolean>((r) => setTimeout(() => r(false), 5000).unref()),
    ]);
    if (!inTime) stderr.write('sockmesh agent: stop took longer than 5 s; exiting\n');
    process.exit(EXIT.OK);
  },
};
