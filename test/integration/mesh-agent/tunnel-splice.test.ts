/**
 * The L4 data path end to end on loopback: an app socket spliced into a tunnel stream (as the
 * outbound side's forwardTcp does), the real TunnelServer + InboundServer splicing it to the pod.
 * Bulk bytes, a pod that stops reading, half-close and resets: what the splice's write coalescing
 * and its write-queue bound must not change.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import type { X509Svid } from '../../../certs/svid.js';
import { splice } from '../../../mesh-agent/io/streams.js';
import { TunnelPool } from '../../../mesh-agent/tunnel/pool.js';
import {
  type InboundTunnel,
  openAsSender,
  reviewsPod,
  startInboundTunnel,
} from './fixtures/inbound-tunnel.js';

const TD = 'splice.test';
const FRONTEND = `spiffe://${TD}/ns/shop/sa/frontend`;
const REVIEWS = `spiffe://${TD}/ns/shop/sa/reviews`;

describe('L4 splice through the tunnel', () => {
  let ca: CertificateAuthority;
  let frontend: X509Svid;
  let dst: InboundTunnel;
  let pool: TunnelPool;
  /** The sending node's listener: each app connection spliced into its own CONNECT stream. */
  let sender: net.Server;
  /** Bytes the sending side read from its app connections (what it took off the app). */
  let takenFromApp = 0;
  let pod: net.Server;
  let onPodConnection: (s: net.Socket) => void = () => {};
  /** Every socket a test opened or the pod accepted: half-open ones would keep the run alive. */
  const sockets = new Set<net.Socket>();

  before(async () => {
    ca = await CertificateAuthority.createRoot({ trustDomain: TD });
    frontend = await ca.issueSvid(FRONTEND);
    dst = await startInboundTunnel({
      ca,
      svids: [await ca.issueSvid(REVIEWS)],
      workloads: { byIp: (ip) => (ip === '127.0.0.1' ? reviewsPod(REVIEWS, () => 'tcp') : undefined) },
      authz: { check: () => ({ allowed: true }), needsHttp: () => false },
    });
    pod = net
      .createServer({ allowHalfOpen: true }, (s) => {
        sockets.add(s);
        onPodConnection(s);
      })
      .listen(0, '127.0.0.1');
    await once(pod, 'listening');
    const podPort = (pod.address() as net.AddressInfo).port;
    pool = new TunnelPool();
    sender = net.createServer({ pauseOnConnect: true, noDelay: true }, (app) => {
      app.on('error', () => {});
      app.on('data', (b: Buffer) => {
        takenFromApp += b.length;
      });
      openAsSender(pool, {
        source: frontend,
        nodeAddress: dst.address,
        expectedServerId: REVIEWS,
        authority: `127.0.0.1:${podPort}`,
        protocol: 'tcp',
      }).then(
        (up) => {
          up.once('error', () => app.resetAndDestroy());
          splice(app, up);
          app.resume();
        },
        () => app.destroy(),
      );
    });
    sender.listen(0, '127.0.0.1');
    await once(sender, 'listening');
  });

  after(async () => {
    for (const s of sockets) s.destroy();
    pool.close();
    sender.close();
    pod.close();
    await dst.close();
  });

  const dial = async () => {
    const s = net.connect((sender.address() as net.AddressInfo).port, '127.0.0.1');
    sockets.add(s);
    await once(s, 'connect');
    return s;
  };
  const nextPodConnection = () =>
    new Promise<net.Socket>((resolve) => {
      onPodConnection = resolve;
    });

  it('carries 32 MiB both ways intact, in order', async () => {
    const payload = randomBytes(32 << 20);
    const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const podSide = nextPodConnection();
    const app = await dial();
    const conn = await podSide;
    // The pod echoes: the DATA frames a TLS read hands over are coalesced on both agents' writes.
    conn.pipe(conn);
    const back: Buffer[] = [];
    app.on('data', (b: Buffer) => back.push(b));
    const ended = once(app, 'end');
    app.end(payload);
    await ended;
    const got = Buffer.concat(back);
    assert.equal(got.length, payload.length);
    assert.equal(digest(got), digest(payload));
  });

  it('a pod that stops reading stops the sender: what the agents hold stays bounded, nothing is lost', async () => {
    const total = 160 << 20;
    const podSide = nextPodConnection();
    const app = await dial();
    const conn = await podSide;
    conn.pause();
    let atPod = 0;
    conn.on('data', (b: Buffer) => {
      atPod += b.length;
    });
    const before = takenFromApp;
    // The app writes as a well-behaved client does: on 'drain'.
    const chunk = Buffer.alloc(64 << 10, 0x62);
    let written = 0;
    const pumpApp = () => {
      while (written < total) {
        written += chunk.length;
        if (!app.write(chunk)) return void app.once('drain', pumpApp);
      }
      app.end();
    };
    pumpApp();
    // Wait until the sender stops taking bytes off the app (backpressure reached it).
    let last = -1;
    for (let stable = 0; stable < 3; ) {
      await sleep(300);
      const now = takenFromApp - before;
      stable = now === last ? stable + 1 : 0;
      last = now;
    }
    const held = takenFromApp - before - atPod;
    // Kernel buffers of four sockets, the tunnel stream's 4 MiB window and two splice queues; a
    // splice that ignored backpressure would have taken all 160 MiB into the agents.
    assert.ok(held < 40 << 20, `${held} bytes taken off the app and not delivered`);
    assert.ok(takenFromApp - before < total, 'the sender stopped reading the app');
    const done = once(conn, 'end');
    conn.resume();
    await done;
    assert.equal(atPod, total);
  });

  it('half-close: the app ends its side, the pod answers and ends, the app gets both', async () => {
    const podSide = nextPodConnection();
    const app = await dial();
    const conn = await podSide;
    const asked: Buffer[] = [];
    conn.on('data', (b: Buffer) => asked.push(b));
    conn.once('end', () => conn.end(`answer to ${Buffer.concat(asked).toString()}`));
    const got: Buffer[] = [];
    app.on('data', (b: Buffer) => got.push(b));
    const ended = once(app, 'end');
    app.end('question');
    await ended;
    assert.equal(Buffer.concat(got).toString(), 'answer to question');
  });

  it('a pod that resets its connection closes the app connection', async () => {
    const podSide = nextPodConnection();
    const app = await dial();
    app.on('error', () => {});
    const conn = await podSide;
    app.write('hello');
    await once(conn, 'data');
    const closed = once(app, 'close');
    conn.resetAndDestroy();
    await closed;
    assert.equal(app.destroyed, true);
  });
});
