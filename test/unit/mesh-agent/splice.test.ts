/**
 * splice() on real loopback TCP: app <-> proxy (a) spliced to proxy (b) <-> pod, as the agent's L4
 * path joins a pod's connection to its upstream. Bytes, half-close, backpressure, resets, and that
 * a spliced connection carries no closures of its own (10 000 idle ones are the agent's RSS goal).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { splice } from '../../../mesh-agent/io/streams.js';

interface Spliced {
  /** The app's socket (the pod that called). */
  app: net.Socket;
  /** The proxy's two ends: a (accepted from the app) and b (dialled to the pod). */
  a: net.Socket;
  b: net.Socket;
  /** The destination pod's socket. */
  pod: net.Socket;
}

describe('splice (L4, real loopback TCP)', { timeout: 30_000 }, () => {
  let proxy: net.Server;
  let podServer: net.Server;
  let nextPod: (s: net.Socket) => void = () => {};
  let nextProxied: (p: { a: net.Socket; b: net.Socket }) => void = () => {};
  const open: net.Socket[] = [];

  before(async () => {
    podServer = net.createServer({ allowHalfOpen: true }, (s) => nextPod(s)).listen(0, '127.0.0.1');
    await once(podServer, 'listening');
    const podPort = (podServer.address() as net.AddressInfo).port;
    proxy = net
      .createServer({ allowHalfOpen: true, pauseOnConnect: true }, (a) => {
        const b = net.connect({ host: '127.0.0.1', port: podPort, allowHalfOpen: true });
        b.once('connect', () => {
          splice(a, b);
          nextProxied({ a, b });
        });
      })
      .listen(0, '127.0.0.1');
    await once(proxy, 'listening');
  });

  after(() => {
    for (const s of open) s.destroy();
    proxy.close();
    podServer.close();
  });

  async function connect(): Promise<Spliced> {
    const pod = new Promise<net.Socket>((r) => {
      nextPod = r;
    });
    const proxied = new Promise<{ a: net.Socket; b: net.Socket }>((r) => {
      nextProxied = r;
    });
    const app = net.connect({
      host: '127.0.0.1',
      port: (proxy.address() as net.AddressInfo).port,
      allowHalfOpen: true,
    });
    const [p, { a, b }] = await Promise.all([pod, proxied]);
    open.push(app, p, a, b);
    for (const s of [app, p]) s.on('error', () => {});
    return { app, a, b, pod: p };
  }

  function collect(s: net.Socket): Promise<Buffer> {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    return once(s, 'end').then(() => Buffer.concat(chunks));
  }

  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it('carries bytes both ways intact', async () => {
    const { app, pod } = await connect();
    const up = randomBytes(3 << 20);
    const down = randomBytes(2 << 20);
    const atPod = collect(pod);
    const atApp = collect(app);
    app.end(up);
    pod.end(down);
    assert.equal(sha(await atPod), sha(up));
    assert.equal(sha(await atApp), sha(down));
  });

  it('passes a half-close on: the pod answers after the app has ended its side', async () => {
    const { app, pod } = await connect();
    const atPod = collect(pod);
    app.end('request');
    assert.equal((await atPod).toString(), 'request', 'the pod reads the end of the request');
    const atApp = collect(app);
    pod.write('answer after the FIN');
    pod.end();
    assert.equal((await atApp).toString(), 'answer after the FIN');
  });

  it('pauses the reading side while the other side does not read, then delivers everything', async () => {
    const { app, a, b, pod } = await connect();
    pod.pause();
    const total = 48 << 20;
    const data = randomBytes(1 << 20);
    let written = 0;
    const writeAll = async () => {
      while (written < total) {
        written += data.length;
        if (!app.write(data)) await once(app, 'drain');
      }
      app.end();
    };
    const writing = writeAll();
    // Long enough for the kernel's buffers on both legs to fill up.
    await new Promise((r) => setTimeout(r, 700));
    assert.ok(written < total, 'the app is held back: its writes wait');
    assert.equal(a.isPaused(), true, 'the proxy stopped reading the app');
    assert.ok(b.writableLength <= 2 << 20, `bounded queue in the proxy: ${b.writableLength} bytes`);
    let got = 0;
    pod.on('data', (c: Buffer) => {
      got += c.length;
    });
    pod.resume();
    await Promise.all([writing, once(pod, 'end')]);
    assert.equal(got, total);
  });

  it('a reset on one side tears the other down', async () => {
    const { app, a, b, pod } = await connect();
    // The app is half-open capable: it sees the end (the proxy's FIN), and 'close' only once it ends too.
    const appEnded = once(app, 'end');
    app.resume();
    pod.resetAndDestroy();
    await appEnded;
    assert.equal(a.destroyed, true);
    assert.equal(b.destroyed, true);
  });

  it('a reset from the app ends the pod side', async () => {
    const { app, a, b, pod } = await connect();
    const podEnded = once(pod, 'end');
    pod.resume();
    app.resetAndDestroy();
    await podEnded;
    assert.equal(a.destroyed, true);
    assert.equal(b.destroyed, true);
  });

  it('holds no closures of its own per connection: every spliced socket shares the same listeners', async () => {
    const one = await connect();
    const two = await connect();
    for (const ev of ['data', 'end', 'error', 'drain'] as const) {
      const first = one.a.listeners(ev).at(-1);
      assert.equal(typeof first, 'function', ev);
      for (const s of [one.b, two.a, two.b]) assert.equal(s.listeners(ev).at(-1), first, ev);
    }
  });
});
