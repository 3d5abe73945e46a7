import { readFileSync } from 'node:fs';
import path from 'node:path';
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import { AdminServer } from '../../xds/server/admin.js';
import { ControlPlane, type ListenAddress, type TlsConfig } from '../../xds/server/control-plane.js';
import { DirectorySource } from '../../xds/sources/directory.js';
import {
  inClusterAvailable,
  inClusterConnection,
  type KubeConnection,
  loadKubeconfig,
} from '../../xds/sources/kube/config.js';
import { LeaderElector } from '../../xds/sources/kube/leader.js';
import { KubernetesSource } from '../../xds/sources/kubernetes.js';
import type { ConfigSource } from '../../xds/sources/source.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `cannot read ${what} ${file}`, {
      hint: 'check the --tls-* paths',
      cause: err,
    });
  }
}

function leaderOf(
  values: {
    'leader-lease'?: string;
    'leader-lease-duration'?: string;
    'leader-id'?: string;
    'leader-address'?: string;
  },
  connection: KubeConnection,
  logger: Logger,
  address: () => string | undefined,
): LeaderElector | undefined {
  const lease = values['leader-lease'];
  if (lease === undefined) {
    if (
      values['leader-lease-duration'] !== undefined ||
      values['leader-id'] !== undefined ||
      values['leader-address'] !== undefined
    )
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        '--leader-lease-duration, --leader-id and --leader-address need --leader-lease',
      );
    return undefined;
  }
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/.exec(lease);
  if (!m)
    throw new SockmeshError('SOCKMESH_E_USAGE', `--leader-lease expects <namespace>/<name>, got '${lease}'`);
  const d = values['leader-lease-duration'] ?? '15s';
  const seconds = /^([1-9][0-9]{0,4})s$/.exec(d);
  if (!seconds)
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `--leader-lease-duration expects whole seconds like 15s, got '${d}'`,
    );
  return new LeaderElector({
    connection,
    namespace: m[1]!,
    name: m[3]!,
    identity: values['leader-id'],
    leaseDurationMs: Number(seconds[1]) * 1000,
    address,
    logger,
  });
}

export const controlPlaneCommand: Command = {
  usage: `Usage: sockmesh control-plane (--manifests <dir> | --kubeconfig <file>) [options]

Serves the Kubernetes-style manifests in <dir> (watched; edits apply live), or
the objects of a Kubernetes API server, as Envoy v3 resources over ADS
(envoy.service.discovery.v3.AggregatedDiscoveryService). From a directory, an
invalid edit is rejected with file:line: field: reason and the last good
configuration keeps being served; from Kubernetes, each object is accepted on
its own and its status says why not. Stops on SIGINT/SIGTERM.

  --manifests <dir>        directory of *.yaml / *.yml manifests
  --kubeconfig <file>      read a Kubernetes API server instead (informers on
                           Namespace, Service, Pod, EndpointSlice, Node,
                           HTTPRoute, GRPCRoute, TCPRoute and the sockmesh
                           CRDs). In a pod
                           (KUBERNETES_SERVICE_HOST set) and without either
                           flag, the pod's service account is used.
  --context <name>         kubeconfig context (default: its current-context)
  --leader-lease <ns>/<name>  run as one of several replicas: the holder of
                           this coordination.k8s.io/v1 Lease writes status and
                           decides canaries; every replica serves xDS
  --leader-lease-duration <n>s  lease duration (default 15s; renewed every
                           2/15 of it, given up after 2/3 without renewal)
  --leader-id <id>         holderIdentity (default <hostname>_<random>)
  --leader-address <h:p>   where the other replicas reach this one (written on
                           the Lease while leading; followers forward their
                           agents' load reports there). Default: the first
                           --listen address, unless it is 0.0.0.0
  --listen <host:port>     TCP listener; repeatable. Needs --tls-* unless loopback.
  --unix <path>            plaintext unix-socket listener (for agents and
                           proxyless gRPC clients on this machine)
  --tls-cert <pem>         server certificate chain  } mTLS for every --listen
  --tls-key <pem>          server private key        } (clients must present a
  --tls-ca <pem>           CA bundle for clients     }  certificate from --tls-ca)
  --insecure-listen <h:p>  extra plaintext TCP listener, loopback only (for
                           grpc-js-xds, whose bootstrap supports only insecure)
  --admin <addr>           admin endpoint (apply/status/config dump):
                           unix:/path or 127.0.0.1:port; default: none
  --trust-domain <td>      SPIFFE trust domain (default cluster.local)
  --cluster-domain <d>     service DNS suffix (default cluster.local)
  --node <name>=<ip>       a node's underlay address; repeatable (Node
                           manifests and agents' node.metadata.underlayIp also work)

Default when no listener is given: --listen 127.0.0.1:15010.

Exit codes: 0 stopped cleanly, 1 failure (e.g. invalid manifests at start), 2 usage.`,
  async run({ argv, stdout }) {
    const { values } = parseCommandArgs(
      argv,
      {
        manifests: { type: 'string' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        'leader-lease': { type: 'string' },
        'leader-lease-duration': { type: 'string' },
        'leader-id': { type: 'string' },
        'leader-address': { type: 'string' },
        listen: { type: 'string', multiple: true },
        unix: { type: 'string' },
        'insecure-listen': { type: 'string', multiple: true },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        admin: { type: 'string' },
        'trust-domain': { type: 'string' },
        'cluster-domain': { type: 'string' },
        node: { type: 'string', multiple: true },
      },
      false,
    );
    if (values.manifests && values.kubeconfig)
      throw new SockmeshError('SOCKMESH_E_USAGE', '--manifests and --kubeconfig exclude each other');
    const inCluster = !values.manifests && !values.kubeconfig && inClusterAvailable();
    if (!values.manifests && !values.kubeconfig && !inCluster)
      throw new SockmeshError('SOCKMESH_E_USAGE', '--manifests <dir> or --kubeconfig <file> is required', {
        hint: 'see --help',
      });
    const tlsFlags = [values['tls-cert'], values['tls-key'], values['tls-ca']];
    if (tlsFlags.some((v) => v !== undefined) && !tlsFlags.every((v) => v !== undefined)) {
      throw new SockmeshError('SOCKMESH_E_USAGE', '--tls-cert, --tls-key and --tls-ca go together');
    }
    const tls: TlsConfig | undefined = values['tls-cert']
      ? {
          cert: readPem(values['tls-cert'], 'certificate'),
          key: readPem(values['tls-key']!, 'private key'),
          ca: readPem(values['tls-ca']!, 'CA bundle'),
        }
      : undefined;
    const nodes: Record<string, string> = {};
    for (const n of values.node ?? []) {
      const m = /^([a-z0-9.-]+)=(\d+\.\d+\.\d+\.\d+)$/.exec(n);
      if (!m) throw new SockmeshError('SOCKMESH_E_USAGE', `--node expects <name>=<ipv4>, got '${n}'`);
      nodes[m[1]!] = m[2]!;
    }
    const listen: ListenAddress[] = [];
    for (const a of values.listen ?? []) listen.push(tls ? { address: a, tls } : { address: a });
    for (const a of values['insecure-listen'] ?? []) listen.push({ address: a });
    if (values.unix) listen.push({ address: `unix:${path.resolve(values.unix)}` });
    if (listen.length === 0) listen.push({ address: '127.0.0.1:15010' });

    const log = createLogger('xds');
    let cp: ControlPlane | undefined;
    let leader: LeaderElector | undefined;
    let source: ConfigSource;
    let what: string;
    if (values.manifests) {
      source = new DirectorySource(path.resolve(values.manifests));
      what = values.manifests;
    } else {
      const connection = inCluster
        ? inClusterConnection()
        : loadKubeconfig(path.resolve(values.kubeconfig!), values.context);
      leader = leaderOf(values, connection, log, () => {
        if (values['leader-address']) return values['leader-address'];
        const first = cp?.addresses().find((a) => !a.startsWith('unix:'));
        return first && !/^(0\.0\.0\.0|\[?::\]?):/.test(first) ? first : undefined;
      });
      const kube = new KubernetesSource({ connection, logger: log, leader });
      // Lists everything once: an unreachable server or a missing CRD fails here, named.
      await kube.sync().catch(async (err: unknown) => {
        await kube.close();
        throw err;
      });
      source = kube;
      what = `${connection.server} (${connection.description})`;
    }
    cp = new ControlPlane({
      source,
      listen,
      model: { trustDomain: values['trust-domain'], clusterDomain: values['cluster-domain'], nodes },
      logger: log,
    });
    // A lone replica leads from its first snapshot: the first election attempt comes before it.
    await leader?.start();
    await cp.start();
    const admin = values.admin ? new AdminServer(cp) : undefined;
    const adminAddr = admin ? await admin.listen(values.admin!) : undefined;
    // Handlers before the line that says we serve: whoever reads it may signal at once (a SIGTERM
    // in between killed the process instead of stopping it, seen on Node 24).
    const stopped = new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    stdout.write(
      `control plane serving ${what} (version ${cp.snapshot?.version}) on ${cp.addresses().join(', ')}` +
        `${adminAddr ? `; admin on ${adminAddr}` : ''}\n`,
    );
    await stopped;
    await admin?.close();
    await cp.close();
    return EXIT.OK;
  },
};
