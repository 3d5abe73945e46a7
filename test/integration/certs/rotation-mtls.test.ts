import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { SvidRotator } from '../../../certs/rotator.js';
import type { X509Svid } from '../../../certs/svid.js';
import { createMtlsServer, mtlsConnect } from '../../../certs/tls.js';
import { nullLogger } from '../../../lib/log.js';

const SERVER_ID = 'spiffe://example.org/ns/shop/sa/server';

function normSerial(s: string): string {
  return s.toLowerCase().replace(/^0+/, '');
}

async function echo(socket: TLSSocket, msg: string): Promise<string> {
  const got = once(socket, 'data');
  socket.write(msg);
  const [data] = (await got) as [Buffer];
  return data.toString();
}

async function connect(port: number, identity: SvidRotator, expected = SERVER_ID): Promise<TLSSocket> {
  const s = mtlsConnect({ host: '127.0.0.1', port, identity, expectedServerId: expected });
  await once(s, 'secureConnect');
  return s;
}

describe('SVID rotation under an open TLS 1.3 mTLS connection', () => {
  it('keeps the established connection and serves the new SVID to new connections', async (t) => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const serverRot = new SvidRotator({
      fetch: () => ca.issueSvid({ namespace: 'shop', serviceAccount: 'server' }, { ttlMs: 3000 }),
      logger: nullLogger,
    });
    const clientRot = new SvidRotator({
      fetch: () => ca.issueSvid({ namespace: 'shop', serviceAccount: 'client' }, { ttlMs: 3000 }),
      logger: nullLogger,
    });
    t.after(() => {
      serverRot.stop();
      clientRot.stop();
    });
    const firstServer = await serverRot.start();
    await clientRot.start();

    const peers: string[] = [];
    const sockets = new Set<TLSSocket>();
    const server = createMtlsServer({
      rotator: serverRot,
      onConnection: (socket, peer) => {
        peers.push(peer);
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => {});
        socket.pipe(socket);
      },
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const { port } = server.address() as AddressInfo;

    const c1 = await connect(port, clientRot);
    t.after(() => c1.destroy());
    assert.equal(c1.getProtocol(), 'TLSv1.3');
    assert.equal(normSerial(c1.getPeerCertificate().serialNumber), normSerial(firstServer.serial));
    assert.equal(await echo(c1, 'before'), 'before');
    assert.deepEqual(peers, ['spiffe://example.org/ns/shop/sa/client']);

    // Real timers: the 3 s SVID renews at its half-life.
    const rotated = new Promise<X509Svid>((resolve) => {
      const off = serverRot.subscribe((svid) => {
        if (svid) {
          off();
          resolve(svid);
        }
      });
    });
    const second = await rotated;
    assert.notEqual(second.serial, firstServer.serial);
    assert.ok(second.notAfter > firstServer.notAfter);

    assert.equal(c1.destroyed, false, 'the established connection survived the rotation');
    assert.equal(await echo(c1, 'after'), 'after');

    const c2 = await connect(port, clientRot);
    t.after(() => c2.destroy());
    assert.equal(normSerial(c2.getPeerCertificate().serialNumber), normSerial(second.serial));
    assert.equal(await echo(c2, 'new'), 'new');
    assert.equal(await echo(c1, 'still'), 'still');
  });

  it('refuses a server that does not prove the expected SPIFFE ID', async (t) => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const serverRot = new SvidRotator({
      fetch: () => ca.issueSvid({ namespace: 'shop', serviceAccount: 'server' }, { ttlMs: 60_000 }),
      logger: nullLogger,
    });
    const clientRot = new SvidRotator({
      fetch: () => ca.issueSvid({ namespace: 'shop', serviceAccount: 'client' }, { ttlMs: 60_000 }),
      logger: nullLogger,
    });
    t.after(() => {
      serverRot.stop();
      clientRot.stop();
    });
    await serverRot.start();
    await clientRot.start();
    const server = createMtlsServer({ rotator: serverRot, onConnection: (s) => s.end() });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const { port } = server.address() as AddressInfo;
    const s = mtlsConnect({
      host: '127.0.0.1',
      port,
      identity: clientRot,
      expectedServerId: 'spiffe://example.org/ns/shop/sa/other',
    });
    const [err] = (await once(s, 'error').catch((e: unknown) => [e])) as [Error & { code?: string }];
    s.destroy();
    assert.equal(err.code, 'SPIFFE_UNEXPECTED_SPIFFE_ID');
  });

  it('refuses a client from a foreign trust domain', async (t) => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const foreign = await CertificateAuthority.createRoot({ trustDomain: 'evil.example' });
    const serverRot = new SvidRotator({
      fetch: () => ca.issueSvid({ namespace: 'shop', serviceAccount: 'server' }),
      logger: nullLogger,
    });
    t.after(() => serverRot.stop());
    await serverRot.start();
    const refused: string[] = [];
    let accepted = 0;
    const server = createMtlsServer({
      rotator: serverRot,
      onConnection: () => accepted++,
      onRefused: (_reason, code) => refused.push(code),
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const { port } = server.address() as AddressInfo;
    const svid = await foreign.issueSvid({ namespace: 'shop', serviceAccount: 'client' });
    // The foreign client trusts our bundle too, so only the server's check can stop it.
    const s = mtlsConnect({
      host: '127.0.0.1',
      port,
      identity: svid,
      federatedBundles: [ca.bundle],
      expectedServerId: SERVER_ID,
    });
    const closed = once(s, 'close');
    s.on('error', () => {});
    await closed;
    assert.equal(accepted, 0);
    assert.deepEqual(refused, ['handshake']);
  });
});

describe('an expired server SVID is never presented', () => {
  it('fails new handshakes once the SVID expired without renewal', async (t) => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    let failing = false;
    const serverRot = new SvidRotator({
      fetch: async () => {
        if (failing) throw new Error('CA down');
        return ca.issueSvid({ namespace: 'shop', serviceAccount: 'server' }, { ttlMs: 2000 });
      },
      backoff: { initialMs: 200, maxMs: 400 },
      logger: nullLogger,
    });
    t.after(() => serverRot.stop());
    const first = await serverRot.start();
    failing = true;
    const clientSvid = await ca.issueSvid({ namespace: 'shop', serviceAccount: 'client' });
    let accepted = 0;
    let onAccept: () => void = () => {};
    const server = createMtlsServer({
      rotator: serverRot,
      onConnection: (s) => {
        accepted++;
        onAccept();
        s.end();
      },
    });
    server.on('tlsClientError', () => {});
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const { port } = server.address() as AddressInfo;
    const acceptedOnce = new Promise<void>((resolve) => {
      onAccept = resolve;
    });
    const ok = mtlsConnect({ host: '127.0.0.1', port, identity: clientSvid, expectedServerId: SERVER_ID });
    ok.on('error', () => {});
    await acceptedOnce;
    ok.destroy();
    assert.equal(accepted, 1);

    const expired = new Promise<void>((resolve) => {
      const off = serverRot.subscribe((s) => {
        if (s === null) {
          off();
          resolve();
        }
      });
    });
    await expired;
    assert.ok(Date.now() >= first.notAfter.getTime());
    const late = mtlsConnect({ host: '127.0.0.1', port, identity: clientSvid, expectedServerId: SERVER_ID });
    let sawPeerCert = false;
    late.on('secureConnect', () => {
      sawPeerCert = true;
    });
    const [err] = (await once(late, 'error')) as [Error];
    late.destroy();
    // The server had no certificate to offer: the handshake fails before any certificate is seen.
    // Alert 40 (handshake_failure): OpenSSL 3.0 (Node 20) names it SSLV3_ALERT_..., 3.5 (Node 24) SSL/TLS_ALERT_...
    assert.match(
      (err as Error & { code?: string }).code ?? '',
      /^ERR_SSL_(SSLV3|SSL\/TLS)_ALERT_HANDSHAKE_FAILURE$/,
      err.message,
    );
    assert.equal(sawPeerCert, false);
    assert.equal(accepted, 1);
  });
});
