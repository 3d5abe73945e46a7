/**
 * The HAProxy baseline: one haproxy per node doing the same node-to-node hop as the sockmesh
 * tunnel. node1's accepts plaintext from the (unmeshed) client pod and originates TLS 1.3 with a
 * client certificate; node2's terminates mutual TLS (client cert required, same CA) and forwards
 * to the server pod. Three listener pairs: L4 (mode tcp), L7 (mode http, server connections
 * reused) and bulk (mode tcp to the sink). Certificates are P-256, like the SVIDs the agents use.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestBed } from '../../lab/testbed.js';
import type { LabNode } from '../../lab/types.js';
import { cgroupPids, comm } from './proc.js';

export const HAPROXY_PORTS = { l4: 18080, l7: 18081, bulk: 18082 } as const;
const TUNNEL_PORTS = { l4: 18443, l7: 18444, bulk: 18445 } as const;

export interface HaproxyPair {
  /** Where the client connects (a second address on node1's bridge, reachable from its pods). */
  entry: { host: string; ports: typeof HAPROXY_PORTS };
  pids: { node1: number[]; node2: number[] };
  stop(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A throwaway CA and one client+server certificate per node, SPIFFE-style URI SANs. */
export function makeCerts(dir: string, trustDomain: string): void {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key']);
  openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    '/O=sockmesh-bench-ca',
    '-days',
    '1',
    '-out',
    'ca.pem',
    '-addext',
    'basicConstraints=critical,CA:true',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  for (const n of ['node1', 'node2']) {
    openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${n}.key`]);
    openssl(dir, ['req', '-new', '-key', `${n}.key`, '-subj', `/O=${n}`, '-out', `${n}.csr`]);
    writeFileSync(
      join(dir, `${n}.ext`),
      `subjectAltName=URI:spiffe://${trustDomain}/ns/plain/sa/haproxy-${n}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n`,
    );
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${n}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      `${n}.ext`,
      '-out',
      `${n}.crt`,
    ]);
    execFileSync('sh', ['-c', `cat ${n}.crt ${n}.key > ${n}.pem`], { cwd: dir });
  }
}

const GLOBAL = `global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
`;

/**
 * The haproxys use a second bridge address per node (.2), not the node gateway (.1): the kernel
 * side accelerates (sk_msg) every local socket pair whose one end is the gateway address, as that
 * is where the agent listens and connects from, and the baseline must not borrow the mesh's trick.
 */
export function sideAddress(gatewayIp: string): string {
  return gatewayIp.replace(/\.1$/, '.2');
}

export function entryConfig(dir: string, gateway: string, peer: string): string {
  const tls = `ssl crt ${join(dir, 'node1.pem')} ca-file ${join(dir, 'ca.pem')} verify required`;
  const pair = (name: keyof typeof HAPROXY_PORTS, mode: 'tcp' | 'http') => `
frontend ${name}
  mode ${mode}
  bind ${gateway}:${HAPROXY_PORTS[name]}
  default_backend ${name}
backend ${name}
  mode ${mode}${mode === 'http' ? '\n  http-reuse always' : ''}
  server peer ${peer}:${TUNNEL_PORTS[name]} ${tls}
`;
  return GLOBAL + pair('l4', 'tcp') + pair('l7', 'http') + pair('bulk', 'tcp');
}

export function exitConfig(dir: string, underlay: string, server: string, source: string): string {
  const tls = `ssl crt ${join(dir, 'node2.pem')} ca-file ${join(dir, 'ca.pem')} verify required`;
  const pair = (name: keyof typeof HAPROXY_PORTS, mode: 'tcp' | 'http', port: number) => `
frontend ${name}
  mode ${mode}
  bind ${underlay}:${TUNNEL_PORTS[name]} ${tls}
  default_backend ${name}
backend ${name}
  mode ${mode}${mode === 'http' ? '\n  http-reuse always' : ''}
  server app ${server}:${port} source ${source}
`;
  return GLOBAL + pair('l4', 'tcp', 8080) + pair('l7', 'http', 8080) + pair('bulk', 'tcp', 5201);
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-1500);
  } catch {
    return '(no log)';
  }
}

async function haproxyPids(node: LabNode, timeoutMs = 5000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = cgroupPids(node.systemCgroupPath).filter((p) => comm(p) === 'haproxy');
    if (pids.length > 0 || Date.now() > deadline) return pids;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startHaproxyPair(
  bed: TestBed,
  opts: { dir: string; serverIp: string; trustDomain: string },
): Promise<HaproxyPair> {
  const n1 = bed.node('node1');
  const n2 = bed.node('node2');
  mkdirSync(opts.dir, { recursive: true });
  makeCerts(opts.dir, opts.trustDomain);
  const c1 = join(opts.dir, 'node1.cfg');
  const c2 = join(opts.dir, 'node2.cfg');
  const entry = sideAddress(n1.gatewayIp);
  const source = sideAddress(n2.gatewayIp);
  for (const [node, addr] of [
    [n1, entry],
    [n2, source],
  ] as const) {
    execFileSync('ip', ['-n', node.netns, 'addr', 'add', `${addr}/32`, 'dev', 'cbr0']);
  }
  writeFileSync(c1, entryConfig(opts.dir, entry, n2.underlayIp));
  writeFileSync(c2, exitConfig(opts.dir, n2.underlayIp, opts.serverIp, source));
  for (const [node, cfg] of [
    [n2, c2],
    [n1, c1],
  ] as const) {
    bed.spawn(node, ['haproxy', '-db', '-f', cfg], { logFile: join(opts.dir, `${node.name}.log`) });
  }
  const probe = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'lab', 'probe.mjs');
  for (const [node, host, ports] of [
    [n1, entry, Object.values(HAPROXY_PORTS)],
    [n2, n2.underlayIp, Object.values(TUNNEL_PORTS)],
  ] as const) {
    const probes = ports.map((port) => ({ kind: 'tcp', host, port }));
    const res = await bed.exec(node, [process.execPath, probe, '5000', JSON.stringify(probes)], {
      timeoutMs: 10_000,
    });
    if (res.code !== 0) {
      throw new Error(
        `haproxy on ${node.name} is not listening: ${readLog(join(opts.dir, `${node.name}.log`))}`,
      );
    }
  }
  const pids = { node1: await haproxyPids(n1), node2: await haproxyPids(n2) };
  if (pids.node1.length === 0 || pids.node2.length === 0) {
    throw new Error(`haproxy did not start; see ${opts.dir}/node*.log`);
  }
  return {
    entry: { host: entry, ports: HAPROXY_PORTS },
    pids,
    stop() {
      for (const pid of [...pids.node1, ...pids.node2]) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
    },
  };
}
