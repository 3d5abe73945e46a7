import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { carrierGoaway } from '../../../mesh-agent/io/h2c.js';
import { identitySni } from '../../../mesh-agent/tunnel/peer.js';
import { TunnelError, TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import { type TunnelRequest, TunnelServer } from '../../../mesh-agent/tunnel/server.js';

const TD = 'tunnel.test';
const FRONTEND = `spiffe://${TD}/ns/shop/sa/frontend`;
const REVIEWS = `spiffe://${TD}/ns/shop/sa/reviews`;

/** Inbound stand-in: records each CONNECT and splices it to the requested loopback address. */
class SpliceHandler {
  seen: Array<Omit<TunnelRequest, 'stream'>> = [];
  deny = new Set<string>();
  handle(req: TunnelRequest): void {
    const { stream, ...rest } = req;
    this.seen.push(rest);
    if (this.deny.has(req.sourcePrincipal)) {
      stream.respond({ ':status': 403 }, { endStream: true });
      return;
    }
    const up = net.connect(req.destPort, req.destIp, () => {
      stream.respond({ ':status': 200 });
      stream.pipe(up).pipe(stream);
    });
    up.on('error', () => stream.close(http2.constants.NGHTTP2_CONNECT_ERROR));
  }
}

async function roundTrip(
  s: NodeJS.ReadWriteStream & { end(b?: Buffer | string): void },
  payload: Buffer,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  s.end(payload);
  await once(s, 'end');
  return Buffer.concat(chunks);
}

describe('mTLS HTTP/2 CONNECT tunnel', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let reviews: X509Svid;
  let echo: net.Server;
  let echoPort: number;
  let server: TunnelServer;
  let tunnelAddr: string;
  const handler = new SpliceHandler();
  const served = new Map<string, X509Svid>();

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(FRONTEND);
    reviews = await ca.issueSvid(REVIEWS);
    served.set(identitySni(REVIEWS), reviews);
    echo = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
    await once(echo, 'listening');
    echoPort = (echo.address() as net.AddressInfo).port;
    server = new TunnelServer({
      identities: { svidBySni: (sni) => served.get(sni), bundle: () => ca.bundle },
      handler,
    });
    const addr = await server.listen(0, '127.0.0.1');
    tunnelAddr = `127.0.0.1:${addr.port}`;
  });

  after(async () => {
    await server.close();
    echo.close();
  });

  it('carries bytes both ways and tells the inbound side who is calling', async () => {
    const pool = new TunnelPool();
    try {
      const stream = await pool.open({
        source: frontend,
        nodeAddress: tunnelAddr,
        expectedServerId: REVIEWS,
        authority: `127.0.0.1:${echoPort}`,
        forwardedFor: '10.244.1.10:40000',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        baggage: 'source.namespace=shop',
      });
      const payload = Buffer.alloc(300_000, 7);
      const back = await roundTrip(stream, payload);
      assert.ok(back.equals(payload));
      const last = handler.seen.at(-1)!;
      assert.equal(last.sourcePrincipal, FRONTEND);
      assert.equal(last.forwardedFor, '10.244.1.10:40000');
      assert.equal(last.destPort, echoPort);
      assert.equal(last.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
      assert.equal(last.baggage, 'source.namespace=shop');
    } finally {
      pool.close();
    }
  });

  it('a stream watched for GOAWAY leaves no listener on its session once closed (sessions outlive thousands of streams)', async () => {
    const pool = new TunnelPool();
    try {
      const target = {
        source: frontend,
        nodeAddress: tunnelAddr,
        expectedServerId: REVIEWS,
        authority: `127.0.0.1:${echoPort}`,
      };
      const first = await pool.open(target);
      const session = first.session!;
      const baseline = session.listenerCount('goaway');
      let fired = 0;
      for (let i = 0; i < 20; i++) {
        const s = i === 0 ? first : await pool.open(target);
        carrierGoaway(s, () => fired++);
        await roundTrip(s, Buffer.from('x'));
        if (!s.closed) await once(s, 'close');
      }
      assert.equal(session.listenerCount('goaway'), baseline);
      const open = await pool.open(target);
      carrierGoaway(open, () => fired++);
      assert.equal(session.listenerCount('goaway'), baseline + 1, 'an open stream is watched');
      open.destroy();
    } finally {
      pool.close();
    }
  });

  it('multiplexes concurrent streams over one session per identity pair', async () => {
    const pool = new TunnelPool();
    try {
      const results = await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const s = await pool.open({
            source: frontend,
            nodeAddress: tunnelAddr,
            expectedServerId: REVIEWS,
            authority: `127.0.0.1:${echoPort}`,
          });
          return (await roundTrip(s, Buffer.from(`msg-${i}`))).toString();
        }),
      );
      assert.deepEqual(
        results,
        Array.from({ length: 40 }, (_, i) => `msg-${i}`),
      );
      assert.equal(pool.size, 1);
    } finally {
      pool.close();
    }
  });

  it('refuses a server that is not the expected workload', async () => {
    const pool = new TunnelPool();
    const ratings = `spiffe://${TD}/ns/shop/sa/ratings`;
    served.set(identitySni(ratings), reviews); // a node answering for ratings with reviews' certificate
    try {
      await assert.rejects(
        pool.open({
          source: frontend,
          nodeAddress: tunnelAddr,
          expectedServerId: ratings,
          authority: `127.0.0.1:${echoPort}`,
        }),
        (err) =>
          err instanceof TunnelError && err.kind === 'connect' && /unexpected-spiffe-id/.test(err.message),
      );
    } finally {
      served.delete(identitySni(ratings));
      pool.close();
    }
  });

  it('refuses a client from a foreign trust domain', async () => {
    const foreign = await CertificateAuthority.createRoot({ trustDomain: 'evil.example' });
    const intruder = await foreign.issueSvid('spiffe://evil.example/ns/shop/sa/frontend');
    // The intruder trusts our CA so that only the server's check can stop it.
    const spoofed = { ...intruder, bundle: ca.bundle } as X509Svid;
    const pool = new TunnelPool();
    try {
      await assert.rejects(
        pool.open({
          source: spoofed,
          nodeAddress: tunnelAddr,
          expectedServerId: REVIEWS,
          authority: `127.0.0.1:${echoPort}`,
          connectTimeoutMs: 2000,
        }),
        // TLS 1.3: the client's handshake completes before the server has checked its certificate;
        // the server then drops the session without answering the CONNECT (not a timeout, not a refusal).
        (err) =>
          err instanceof TunnelError && err.kind === 'reset' && /closed before an answer/.test(err.message),
      );
    } finally {
      pool.close();
    }
  });

  it('passes the refusal of the inbound side through as a status', async () => {
    handler.deny.add(FRONTEND);
    const pool = new TunnelPool();
    try {
      await assert.rejects(
        pool.open({
          source: frontend,
          nodeAddress: tunnelAddr,
          expectedServerId: REVIEWS,
          authority: `127.0.0.1:${echoPort}`,
        }),
        (err) => err instanceof TunnelError && err.kind === 'refused' && err.status === 403,
      );
    } finally {
      handler.deny.delete(FRONTEND);
      pool.close();
    }
  });

  it('answers anything but CONNECT with 400', async () => {
    const client = http2.connect(`https://${tunnelAddr}`, {
      servername: identitySni(REVIEWS),
      ca: (await import('../../../certs/svid.js')).bundlePem(ca.bundle),
      cert: (await import('../../../certs/svid.js')).svidChainPem(frontend),
      key: (await import('../../../certs/svid.js')).svidKeyPem(frontend),
      checkServerIdentity: () => undefined,
    });
    try {
      const req = client.request({ ':method': 'GET', ':path': '/' });
      const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      assert.equal(headers[':status'], 400);
      req.close();
    } finally {
      client.close();
    }
  });

  it('keeps an open stream across source SVID rotation, and new streams use the new SVID', async () => {
    const pool = new TunnelPool();
    try {
      const first = await pool.open({
        source: frontend,
        nodeAddress: tunnelAddr,
        expectedServerId: REVIEWS,
        authority: `127.0.0.1:${echoPort}`,
      });
      const rotated = await ca.issueSvid(FRONTEND);
      assert.notEqual(rotated.serial, frontend.serial);
      const second = await pool.open({
        source: rotated,
        nodeAddress: tunnelAddr,
        expectedServerId: REVIEWS,
        authority: `127.0.0.1:${echoPort}`,
      });
      const peerSerial = (s: http2.ClientHttp2Stream) =>
        (s.session!.socket as import('node:tls').TLSSocket).getCertificate() as {
          serialNumber?: string;
        } | null;
      const strip = (hex: string | undefined) => hex?.toLowerCase().replace(/^0+/, '');
      assert.equal(strip(peerSerial(second)?.serialNumber), strip(rotated.serial));
      assert.equal((await roundTrip(first, Buffer.from('old'))).toString(), 'old');
      assert.equal((await roundTrip(second, Buffer.from('new'))).toString(), 'new');
    } finally {
      pool.close();
    }
  });
  it('survives a rotation while the old session is still in its handshake: both opens succeed', async () => {
    // ea21a3e: open() with serial A then B closed A's session during its handshake, and its
    // 'connect' handler then threw ERR_HTTP2_INVALID_SESSION out of an event callback: the process died.
    const rotated = await ca.issueSvid(FRONTEND);
    for (let i = 0; i < 3; i++) {
      const pool = new TunnelPool();
      try {
        const target = {
          nodeAddress: tunnelAddr,
          expectedServerId: REVIEWS,
          authority: `127.0.0.1:${echoPort}`,
        };
        const [a, b] = await Promise.all([
          pool.open({ ...target, source: frontend }),
          pool.open({ ...target, source: rotated }),
        ]);
        assert.equal((await roundTrip(a, Buffer.from('a'))).toString(), 'a');
        assert.equal((await roundTrip(b, Buffer.from('b'))).toString(), 'b');
      } finally {
        pool.close();
      }
    }
    // A session closed outright during its handshake fails its opens, and only them.
    const pool = new TunnelPool();
    const opening = pool.open({
      source: frontend,
      nodeAddress: tunnelAddr,
      expectedServerId: REVIEWS,
      authority: `127.0.0.1:${echoPort}`,
    });
    pool.close();
    await assert.rejects(opening, (err: unknown) => err instanceof TunnelError && err.kind === 'connect');
  });
});
