/**
 * The agent's identity layer in Workload API mode against `sockmesh identity serve`
 * running as its own process (a SPIRE-agent stand-in): the tunnel presents what
 * the Workload API serves, follows its rotations, fails closed for an identity it
 * does not grant, and keeps the last SVIDs through a server restart.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { saveAuthority } from '../../../certs/ca/store.js';
import { WorkloadApiClient } from '../../../certs/workload-api/client.js';
import { cgroupV2PathOf } from '../../../certs/workload-api/resolver.js';
import { nullLogger } from '../../../lib/log.js';
import { NodeIdentities, WorkloadApiSupply } from '../../../mesh-agent/agent/identities.js';
import { identitySni } from '../../../mesh-agent/tunnel/peer.js';
import { TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import { type TunnelRequest, TunnelServer } from '../../../mesh-agent/tunnel/server.js';
import { startIdentityServe } from '../../helpers/identity-serve.js';

const TD = 'wlapi.test';
const FRONTEND = `spiffe://${TD}/ns/shop/sa/frontend`;
const REVIEWS = `spiffe://${TD}/ns/shop/sa/reviews`;
const RATINGS = `spiffe://${TD}/ns/shop/sa/ratings`;

async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The certificate a TLS server presents for this SNI (TLS 1.3 sends it before judging our client cert). */
function presented(port: number, sni: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: sni, rejectUnauthorized: false });
    s.once('secureConnect', () => {
      const raw = s.getPeerCertificate().raw;
      s.destroy();
      resolve(new X509Certificate(raw));
    });
    s.once('error', reject);
  });
}

describe('node identities from a Workload API (identity serve as a separate process)', () => {
  let dir = '';
  let socket = '';
  let regFile = '';
  let caDir = '';
  let ca: CertificateAuthority;
  let server: ChildProcess | undefined;
  let identities: NodeIdentities;
  let tunnel: TunnelServer;
  let tunnelPort = 0;
  const pool = new TunnelPool();
  const seen: Array<{ principal: string; clientSerial: string }> = [];

  async function startServer(): Promise<void> {
    const served = await startIdentityServe({ socket, registrations: regFile, caDir });
    server = served.child;
    assert.match(
      served.banner,
      /serving the SPIFFE Workload API on .*: 1 registration entries, 2 SPIFFE IDs/,
    );
  }

  async function stopServer(signal: NodeJS.Signals): Promise<void> {
    const child = server;
    server = undefined;
    if (!child || child.exitCode !== null) return;
    child.kill(signal);
    await once(child, 'exit');
  }

  /** What the Workload API gives this process right now, as a second, independent client. */
  async function servedSerials(): Promise<Record<string, string>> {
    const client = new WorkloadApiClient({ address: `unix://${socket}` });
    try {
      const ctx = await client.fetchX509Context();
      return Object.fromEntries(ctx.svids.map((s) => [s.spiffeId.uri, s.serial]));
    } finally {
      client.close();
    }
  }

  /** A real tunnel round trip: the client presents FRONTEND, the server must prove REVIEWS. */
  async function tunnelCall(): Promise<{ principal: string; clientSerial: string }> {
    const source = identities.svidFor(FRONTEND);
    assert.ok(source, 'the agent holds an SVID for frontend');
    const stream = await pool.open({
      source,
      nodeAddress: `127.0.0.1:${tunnelPort}`,
      expectedServerId: REVIEWS,
      authority: '127.0.0.1:9',
    });
    stream.destroy();
    return seen.at(-1)!;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sockmesh-test-agent-wl-'));
    socket = join(dir, 'spire-agent.sock');
    regFile = join(dir, 'registrations.yaml');
    caDir = join(dir, 'ca');
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    await saveAuthority(caDir, ca, 'generated');
    // The agent is this test process: registered by its cgroup and uid, as SPIRE would register a node proxy.
    const cgroup = await cgroupV2PathOf(process.pid);
    await writeFile(
      regFile,
      `entries:\n  - selectors: {cgroup: ${JSON.stringify(cgroup)}, uid: ${process.getuid?.() ?? 0}}\n` +
        `    spiffeIds: [${FRONTEND}, ${REVIEWS}]\n`,
    );
    await startServer();
    identities = new NodeIdentities(
      new WorkloadApiSupply(socket, nullLogger, { backoff: { initialMs: 50, maxMs: 300 } }),
      nullLogger,
    );
    tunnel = new TunnelServer({
      identities: { svidBySni: (sni) => identities.svidBySni(sni), bundle: () => identities.bundle()! },
      handler: {
        handle(req: TunnelRequest) {
          const sock = req.stream.session?.socket as tls.TLSSocket | undefined;
          seen.push({
            principal: req.sourcePrincipal,
            clientSerial: (sock?.getPeerCertificate().serialNumber ?? '').toLowerCase(),
          });
          req.stream.respond({ ':status': 200 });
          req.stream.end();
        },
      },
    });
    tunnelPort = (await tunnel.listen(0, '127.0.0.1')).port;
    await identities.reconcile([FRONTEND, REVIEWS, RATINGS]);
  });

  after(async () => {
    pool.close();
    await tunnel?.close();
    identities?.stop();
    await stopServer('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('presents the SVIDs the Workload API serves, on both ends of the tunnel', async () => {
    const served = await servedSerials();
    assert.deepEqual(Object.keys(served).sort(), [FRONTEND, REVIEWS]);
    const cert = await presented(tunnelPort, identitySni(REVIEWS));
    assert.equal(cert.serialNumber.toLowerCase(), served[REVIEWS]);
    const caCert = new X509Certificate(await readFile(join(caDir, 'ca.crt')));
    assert.equal(cert.issuer, caCert.subject, 'issued by the CA behind the Workload API');
    assert.ok(cert.verify(caCert.publicKey));
    const call = await tunnelCall();
    assert.equal(call.principal, FRONTEND);
    assert.equal(call.clientSerial, served[FRONTEND]);
    assert.equal(
      identities.bundle()?.certs[0]?.equals(ca.bundle.certs[0]!),
      true,
      'trust bundle from the API',
    );
  });

  it('fails closed for an identity the Workload API does not grant: no SVID, no handshake, reported', async () => {
    assert.equal(identities.svidFor(RATINGS), undefined);
    // No certificate for that name: the server ends the handshake (not a timeout, not another identity).
    await assert.rejects(
      presented(tunnelPort, identitySni(RATINGS)),
      (err: Error & { code?: string }) =>
        err.code === 'ECONNRESET' && /before secure TLS connection was established/.test(err.message),
    );
    const missing = identities.missing();
    assert.deepEqual(
      missing.map((m) => m.spiffeId),
      [RATINGS],
    );
    assert.match(missing[0]!.reason, /does not grant/);
    const status = identities.status() as { kind: string; missing: unknown[]; granted: string[] };
    assert.equal(status.kind, 'workload-api');
    assert.deepEqual(status.granted.sort(), [FRONTEND, REVIEWS]);
  });

  it('picks up a rotation on the server side for new connections', async () => {
    const before = await servedSerials();
    const rotated = new Set<string>();
    identities.onRotate((id) => rotated.add(id));
    server!.kill('SIGHUP');
    await until('both identities rotated', () => rotated.has(FRONTEND) && rotated.has(REVIEWS));
    const after = await servedSerials();
    assert.notEqual(after[REVIEWS], before[REVIEWS]);
    assert.equal(
      (await presented(tunnelPort, identitySni(REVIEWS))).serialNumber.toLowerCase(),
      after[REVIEWS],
    );
    const call = await tunnelCall();
    assert.equal(call.clientSerial, after[FRONTEND], 'a new tunnel session presents the rotated client SVID');
  });

  it('keeps the last SVIDs in use while the Workload API is down, then follows the restarted one', async () => {
    const held = identities.svidFor(REVIEWS)!.serial;
    const heldFrontend = identities.svidFor(FRONTEND)!.serial;
    await stopServer('SIGKILL');
    await until(
      'the agent noticed',
      () => (identities.status() as { connected: boolean }).connected === false,
    );
    assert.equal(identities.svidFor(REVIEWS)?.serial, held);
    assert.equal((await presented(tunnelPort, identitySni(REVIEWS))).serialNumber.toLowerCase(), held);
    assert.equal((await tunnelCall()).clientSerial, heldFrontend);

    await startServer();
    assert.ok(existsSync(socket));
    await until('reconnected', () => (identities.status() as { connected: boolean }).connected === true);
    const fresh = await servedSerials();
    await until('new SVIDs taken', () => identities.svidFor(REVIEWS)?.serial === fresh[REVIEWS]);
    assert.notEqual(fresh[REVIEWS], held);
    assert.equal(
      (await presented(tunnelPort, identitySni(REVIEWS))).serialNumber.toLowerCase(),
      fresh[REVIEWS],
    );
  });
});
