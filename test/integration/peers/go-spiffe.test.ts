/**
 * Interop: go-spiffe v2 (the SPIFFE reference library, built from the Go module proxy) against
 * `sockmesh identity serve` run as its own process. Its workloadapi X509Source gets the SVIDs and the
 * bundle (go-spiffe parses them by the X509-SVID profile, so a non-conforming SVID fails here), follows
 * a rotation, and spiffetls mTLS between go-spiffe peers, and between go-spiffe and sockmesh's own
 * mTLS server, verifies the SPIFFE IDs issued by the embedded CA.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { saveAuthority } from '../../../certs/ca/store.js';
import { createMtlsServer, SvidRotator } from '../../../certs/index.js';
import { cgroupV2PathOf } from '../../../certs/workload-api/resolver.js';
import { nullLogger } from '../../../lib/log.js';
import { startIdentityServe } from '../../helpers/identity-serve.js';
import { goPeersBin, runPeer, startPeer } from './go-peers.js';

const TD = 'gospiffe.test';
const FRONTEND = `spiffe://${TD}/ns/shop/sa/frontend`;
const REVIEWS = `spiffe://${TD}/ns/shop/sa/reviews`;
const RATINGS = `spiffe://${TD}/ns/shop/sa/ratings`;

describe('go-spiffe v2 against sockmesh identity serve', () => {
  let dir = '';
  let socket = '';
  let caDir = '';
  let ca: CertificateAuthority;
  let bin = '';
  let server: ChildProcess | undefined;

  before(async () => {
    bin = await goPeersBin();
    dir = await mkdtemp(join(tmpdir(), 'sockmesh-test-gospiffe-'));
    socket = join(dir, 'workload.sock');
    caDir = join(dir, 'ca');
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    await saveAuthority(caDir, ca, 'generated');
    // The Go peers are children of this process: same cgroup, same uid, so this entry is theirs.
    const cgroup = await cgroupV2PathOf(process.pid);
    const regFile = join(dir, 'registrations.yaml');
    await writeFile(
      regFile,
      `entries:\n  - selectors: {cgroup: ${JSON.stringify(cgroup)}, uid: ${process.getuid?.() ?? 0}}\n` +
        `    spiffeIds: [${FRONTEND}, ${REVIEWS}]\n`,
    );
    const served = await startIdentityServe({ socket, registrations: regFile, caDir });
    server = served.child;
    assert.match(served.banner, /serving the SPIFFE Workload API on /);
  });

  after(async () => {
    if (server && server.exitCode === null && server.signalCode === null) {
      process.kill(server.pid!, 'SIGKILL');
      await once(server, 'exit');
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('X509Source: gets its SVID and the bundle, all SVIDs of the entry, and follows a rotation', async (t) => {
    const peer = startPeer(t, bin, 'spiffe-peer', ['svid', '-socket', `unix://${socket}`, '-updates', '1']);
    const first = (await peer.waitLines(2))[0]!;
    assert.equal(first.event, 'svid', JSON.stringify(peer.lines));
    // The default SVID is the entry's first ID; the bundle is the CA's root, byte for byte.
    assert.equal(first.spiffeId, FRONTEND);
    assert.equal(first.trustDomain, `spiffe://${TD}`);
    assert.equal(first.keyType, '*ecdsa.PrivateKey');
    const leaf = new X509Certificate(String(first.chainPem));
    assert.equal(leaf.subjectAltName, `URI:${FRONTEND}`);
    const caCert = new X509Certificate(await readFile(join(caDir, 'ca.crt')));
    assert.ok(leaf.verify(caCert.publicKey), 'the leaf is signed by the embedded CA');
    assert.equal(new X509Certificate(String(first.bundlePem)).fingerprint256, caCert.fingerprint256);
    assert.deepEqual(peer.lines[1], {
      event: 'all',
      spiffeIds: [FRONTEND, REVIEWS],
      bundles: 1,
      x509BundlesRpc: [`spiffe://${TD}`],
      jwtSvid: 'Unimplemented',
    });

    // SIGHUP renews every SVID at once: the open stream pushes them and the source follows.
    process.kill(server!.pid!, 'SIGHUP');
    const [code] = (await once(peer.child, 'exit')) as [number];
    await peer.closed;
    assert.equal(code, 0, peer.stderr());
    const update = peer.lines[2]!;
    assert.equal(update.event, 'update');
    assert.equal(update.spiffeId, FRONTEND);
    assert.notEqual(update.serial, first.serial, 'a new SVID after the rotation');
  });

  it('spiffetls mTLS between go-spiffe peers: each side authorizes the other by SPIFFE ID', async (t) => {
    const wl = `unix://${socket}`;
    const [ok] = await runPeer(t, bin, 'spiffe-peer', [
      'mtls',
      '-socket',
      wl,
      '-server-id',
      REVIEWS,
      '-client-id',
      FRONTEND,
    ]);
    assert.deepEqual(ok, {
      event: 'mtls',
      ok: true,
      serverSawClient: FRONTEND,
      clientSawServer: REVIEWS,
      reply: `pong from ${REVIEWS} to ${FRONTEND}`,
      tlsVersion: 'TLS 1.3',
    });
    // A client that requires another server ID refuses the handshake.
    const [refused] = await runPeer(t, bin, 'spiffe-peer', [
      'mtls',
      '-socket',
      wl,
      '-server-id',
      REVIEWS,
      '-client-id',
      FRONTEND,
      '-expect-server-id',
      RATINGS,
    ]);
    assert.equal(refused!.ok, false);
    assert.match(String(refused!.clientError), new RegExp(`unexpected ID "${REVIEWS}"`));
  });

  it("go-spiffe's mTLS client and sockmesh's mTLS server verify each other", async (t) => {
    const rotator = new SvidRotator({
      fetch: () => ca.issueSvid({ namespace: 'shop', serviceAccount: 'reviews' }, { ttlMs: 600_000 }),
      logger: nullLogger,
    });
    t.after(() => rotator.stop());
    await rotator.start();
    const peers: string[] = [];
    const server = createMtlsServer({
      rotator,
      authorize: (id) => id === FRONTEND,
      onConnection: (sock, peer) => {
        peers.push(peer);
        sock.on('error', () => {});
        sock.once('data', () => sock.end(`pong ${peer}\n`));
      },
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const addr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const wl = `unix://${socket}`;

    const [ok] = await runPeer(t, bin, 'spiffe-peer', [
      'dial',
      '-socket',
      wl,
      '-addr',
      addr,
      '-expect-server-id',
      REVIEWS,
    ]);
    assert.deepEqual(ok, { event: 'dial', ok: true, clientSawServer: REVIEWS, reply: `pong ${FRONTEND}` });
    assert.deepEqual(peers, [FRONTEND]);

    // go-spiffe requires the ID it was told to, whatever the CA signed.
    const [wrongId] = await runPeer(t, bin, 'spiffe-peer', [
      'dial',
      '-socket',
      wl,
      '-addr',
      addr,
      '-expect-server-id',
      RATINGS,
    ]);
    assert.equal(wrongId!.ok, false);
    assert.match(String(wrongId!.clientError), /unexpected ID/);
    // sockmesh's server refuses a client the policy does not admit (REVIEWS is not FRONTEND).
    const [denied] = await runPeer(t, bin, 'spiffe-peer', [
      'dial',
      '-socket',
      wl,
      '-addr',
      addr,
      '-expect-server-id',
      REVIEWS,
      '-client-id',
      REVIEWS,
    ]);
    assert.equal(denied!.ok, false, JSON.stringify(denied));
    assert.deepEqual(peers, [FRONTEND]);
  });
});
