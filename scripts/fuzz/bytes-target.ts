/**
 * The proxy's three listeners in a process of their own, so an attack can be
 * measured from outside it (alive, RSS from /proc, answers to other clients):
 *   - outbound: the OutboundServer as the agent wires it (test/integration/mesh-agent/
 *     fixtures/outbound-harness.ts: real MeshStateStore, planner, authorization), every captured
 *     connection sent to the reviews VIP, routed per request (HTTP/1.1 and h2c) to the
 *     upstream the parent runs on 127.0.0.1:<upstream>;
 *   - tunnel: a TunnelServer (mTLS 1.3, HTTP/2 CONNECT) handing streams to that node's
 *     InboundServer, which parses them (no sender identity in the baggage) and delivers them
 *     to the same upstream;
 *   - plaintext: the permissive listener: its sockets go to InboundServer.handlePlaintext.
 *     It listens on 127.0.0.2:<upstream>, so its local end is the "pod" port, as sk_lookup
 *     leaves it in a pod's netns, and the pod is the upstream on 127.0.0.1:<upstream>.
 * Started by fork() with an IPC channel; prints nothing, sends `{ ready }` once listening and
 * answers `gc` with its memory. Test-sized HTTP limits come as JSON in SOCKMESH_ATTACK_LIMITS.
 *
 *   node --import tsx --expose-gc scripts/fuzz/bytes-target.ts <upstream port>
 */
import net from 'node:net';
import { CertificateAuthority } from '../../certs/ca/authority.js';
import { bundlePem, svidChainPem, svidKeyPem } from '../../certs/svid.js';
import type { HttpLimits } from '../../mesh-agent/io/http-limits.js';
import { identitySni } from '../../mesh-agent/tunnel/peer.js';
import { TunnelServer } from '../../mesh-agent/tunnel/server.js';
import {
  DEST_ID,
  localCluster,
  reviewsRoutes,
  startOutbound,
} from '../../test/integration/mesh-agent/fixtures/outbound-harness.js';

export interface TargetReady {
  ready: {
    outbound: number;
    tunnel: number;
    plaintext: { host: string; port: number };
    /** The client side of the tunnel: an SVID of the same trust domain, and the SNI to ask for. */
    client: { cert: string; key: string; ca: string; sni: string };
  };
}

export interface TargetMemory {
  memory: { rss: number; heapUsed: number; handles: Record<string, number> };
}

const upstream = Number(process.argv[2]);
const limits = JSON.parse(process.env.SOCKMESH_ATTACK_LIMITS ?? '{}') as Partial<HttpLimits>;

const harness = await startOutbound(
  {
    vip: { http: true },
    routes: reviewsRoutes([{ match: { prefix: '/' }, route: { cluster: 'up' } }]),
    clusters: [localCluster('up', [upstream])],
  },
  { limits },
);

const ca = await CertificateAuthority.createRoot({ trustDomain: 'outbound.test' });
const served = await ca.issueSvid(DEST_ID);
const caller = await ca.issueSvid('spiffe://outbound.test/ns/shop/sa/attacker');
const tunnel = new TunnelServer({
  identities: {
    svidBySni: (sni) => (sni === identitySni(DEST_ID) ? served : undefined),
    bundle: () => ca.bundle,
  },
  handler: harness.inbound,
  ...(limits.headersTimeoutMs ? { handshakeTimeoutMs: limits.headersTimeoutMs } : {}),
  ...(limits.idleTimeoutMs ? { idleTimeoutMs: limits.idleTimeoutMs } : {}),
});
const tunnelAddr = await tunnel.listen(0, '127.0.0.1');

const plaintext = net.createServer((s) => harness.inbound.handlePlaintext(s));
await new Promise<void>((resolve) => plaintext.listen(upstream, '127.0.0.2', resolve));

process.on('message', (m: unknown) => {
  if (m !== 'gc') return;
  (globalThis as { gc?: () => void }).gc?.();
  const handles: Record<string, number> = {};
  for (const h of process.getActiveResourcesInfo()) handles[h] = (handles[h] ?? 0) + 1;
  const mem = process.memoryUsage();
  process.send?.({ memory: { rss: mem.rss, heapUsed: mem.heapUsed, handles } } satisfies TargetMemory);
});
// A parent that dies (a test runner killed mid-run) leaves no agent behind.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  plaintext.close();
  void Promise.all([tunnel.close(), harness.close()]).finally(() => process.exit(0));
});

process.send?.({
  ready: {
    outbound: harness.port,
    tunnel: tunnelAddr.port,
    plaintext: { host: '127.0.0.2', port: upstream },
    client: {
      cert: svidChainPem(caller),
      key: svidKeyPem(caller),
      ca: bundlePem(ca.bundle),
      sni: identitySni(DEST_ID),
    },
  },
} satisfies TargetReady);
