import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { createMtlsServer, mtlsConnect } from '../../../certs/tls.js';
import { WorkloadApiClient } from '../../../certs/workload-api/client.js';
import { EmbeddedSvidProvider } from '../../../certs/workload-api/provider.js';
import { WorkloadApiServer } from '../../../certs/workload-api/server.js';
import { WorkloadApiSvidSource } from '../../../certs/workload-api/x509-source.js';
import { nullLogger } from '../../../lib/log.js';

describe('an SVID from the Workload API drives mTLS (the agent path)', () => {
  it('serves TLS with the streamed SVID and follows its rotation', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'sockmesh-test-wlm-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'agent.sock');
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    const provider = new EmbeddedSvidProvider(ca, { ttlMs: 3000, logger: nullLogger });
    // The caller is this very process, as SO_PEERCRED reports it.
    const server = new WorkloadApiServer({
      socketPath,
      provider,
      logger: nullLogger,
      resolver: {
        resolve: async (pid) =>
          pid === process.pid ? { namespace: 'shop', serviceAccount: 'server', podName: 'server-0' } : null,
      },
    });
    await server.start();
    t.after(async () => {
      await server.stop();
      provider.close();
    });

    const client = new WorkloadApiClient({ address: `unix://${socketPath}` });
    const source = new WorkloadApiSvidSource(client, { logger: nullLogger });
    t.after(() => {
      source.stop();
      client.close();
    });
    const first = await source.start();
    assert.equal(first.spiffeId.uri, 'spiffe://example.org/ns/shop/sa/server');

    const sockets = new Set<TLSSocket>();
    const tlsServer = createMtlsServer({
      rotator: source,
      onConnection: (s) => {
        sockets.add(s);
        s.on('error', () => {});
        s.pipe(s);
      },
    });
    tlsServer.listen(0, '127.0.0.1');
    await once(tlsServer, 'listening');
    t.after(() => {
      for (const s of sockets) s.destroy();
      tlsServer.close();
    });
    const { port } = tlsServer.address() as AddressInfo;
    const clientSvid = await ca.issueSvid({ namespace: 'shop', serviceAccount: 'client' });
    const connect = async () => {
      const s = mtlsConnect({
        host: '127.0.0.1',
        port,
        identity: clientSvid,
        expectedServerId: 'spiffe://example.org/ns/shop/sa/server',
      });
      await once(s, 'secureConnect');
      t.after(() => s.destroy());
      return s;
    };
    const c1 = await connect();
    assert.equal(
      c1.getPeerCertificate().serialNumber.toLowerCase().replace(/^0+/, ''),
      first.serial.replace(/^0+/, ''),
    );

    const next = await new Promise<X509Svid>((resolve) => {
      const off = source.subscribe((s) => {
        if (s && s.serial !== first.serial) {
          off();
          resolve(s);
        }
      });
    });
    const c2 = await connect();
    assert.equal(
      c2.getPeerCertificate().serialNumber.toLowerCase().replace(/^0+/, ''),
      next.serial.replace(/^0+/, ''),
    );
    const echoed = once(c1, 'data');
    c1.write('ping');
    assert.equal(String(((await echoed) as [Buffer])[0]), 'ping', 'the first connection survived');
  });
});
