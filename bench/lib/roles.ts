/**
 * The loopback micro benches (tunnel-micro, conn-memory, h2-per-request) run each proxy as a
 * forked copy of their own script, in a "role" read from one environment variable, which says
 * where it listens over IPC; and they share the stand-ins for what xDS would give the agent.
 */
import { type ChildProcess, fork } from 'node:child_process';
import http2 from 'node:http2';
import { dirname, join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { svidSecureContextOptions, type X509Svid } from '../../certs/index.js';
import type { Endpoint, UpstreamCluster } from '../../mesh-agent/outbound/plan.js';
import { identitySni } from '../../mesh-agent/tunnel/peer.js';

/** bench/workloads (the bench server, the open-loop load), also from dist/bench/lib as the agents ship. */
export const WORKLOADS = import.meta.url.endsWith('.ts')
  ? join(dirname(fileURLToPath(import.meta.url)), '..', 'workloads')
  : join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'workloads');

/** Forks `script --role` with `env` as JSON in `envVar`; resolves once the role says where it listens. */
export function forkRole(
  script: string,
  envVar: string,
  env: { role: string },
  execArgv: string[] = [],
  extraEnv: Record<string, string> = {},
): Promise<{ child: ChildProcess; address: string }> {
  const child = fork(script, ['--role'], {
    env: { ...process.env, ...extraEnv, [envVar]: JSON.stringify(env) },
    execArgv: [...process.execArgv, ...execArgv],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (m: { listening: string }) => resolve({ child, address: m.listening }));
    child.once('exit', (code) => reject(new Error(`${env.role} exited with ${code}`)));
  });
}

/** A role tells the orchestrator where it listens. */
export function announce(address: string): void {
  process.send?.({ listening: address });
}

/** One HTTP/2 session over mTLS to a destination role, with the SNI the mesh's tunnel uses. */
export function mtlsSession(tunnel: string, svid: X509Svid, serverId: string): http2.ClientHttp2Session {
  const [host, port] = tunnel.split(':');
  return http2.connect(`https://${tunnel}`, {
    createConnection: () => {
      const socket = tls.connect({
        host,
        port: Number(port),
        ...svidSecureContextOptions(svid),
        servername: identitySni(serverId),
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
      });
      socket.setNoDelay(true);
      return socket;
    },
  });
}

/**
 * The destination role's side of `mtlsSession`: an HTTP/2 server over mTLS with its SVID, which
 * listens on `ip` and announces itself once its `stream` handler is set by the caller.
 */
export function mtlsServer(svid: X509Svid, ip: string): http2.Http2SecureServer {
  const server = http2.createSecureServer({
    ...svidSecureContextOptions(svid),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ['h2'],
  });
  server.on('secureConnection', (s) => s.setNoDelay(true));
  server.listen(0, ip, () => {
    const { port } = server.address() as { port: number };
    announce(`${ip}:${port}`);
  });
  return server;
}

/** A workload on the destination role's node, reached through its tunnel. */
export function remoteEndpoint(
  ip: string,
  port: number,
  tunnel: string,
  spiffeId: string,
  workload: string,
): Endpoint {
  return {
    key: `${ip}:${port}`,
    ip,
    port,
    node: 'dst',
    local: false,
    tunnelAddress: tunnel,
    spiffeId,
    version: 'v1',
    workload,
    namespace: 'bench',
  };
}

/** A cluster of that one endpoint, with no breaker, outlier detection or balancing in the way. */
export function oneEndpointCluster(name: string, service: string, endpoint: Endpoint): UpstreamCluster {
  return {
    name,
    pick: () => endpoint,
    tryAcquire: () => () => {},
    report: () => {},
    track: () => () => {},
    connectTimeoutMs: 5000,
    service,
    version: undefined,
  };
}

/** The calling workload every bench source proxy serves. */
export function benchSource(spiffeId: string) {
  return {
    ip: '127.0.0.1',
    namespace: 'bench',
    name: 'client',
    serviceAccount: 'client',
    spiffeId,
    version: 'v1',
  };
}
