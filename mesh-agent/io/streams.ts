import net from 'node:net';
import { Duplex } from 'node:stream';

/** The other end of a spliced stream, read by the shared listeners below. */
const peerOf = Symbol('sockmesh.splicePeer');
type Spliced = Duplex & { [peerOf]: Duplex };

// One set of listener functions for every spliced connection (each finds its peer on `this`): two
// pipe()s cost 18 closures, their contexts and two pipe states per connection, which at 10 000
// idle connections is a sixth of the agent's heap.
function forward(this: Spliced, chunk: Buffer): void {
  if (!this[peerOf].write(chunk)) this.pause();
}
function resumePeer(this: Spliced): void {
  this[peerOf].resume();
}
function endPeer(this: Spliced): void {
  this[peerOf].end();
}
function destroyBoth(this: Spliced): void {
  this.destroy();
  this[peerOf].destroy();
}

/**
 * Pipes two byte streams both ways, keeping half-close (an end is passed on as an end),
 * backpressure (a reader pauses while its peer's write queue is full) and tearing both down on
 * error. Both start flowing, as pipe() starts them.
 */
export function splice(a: Duplex, b: Duplex): void {
  (a as Spliced)[peerOf] = b;
  (b as Spliced)[peerOf] = a;
  for (const s of [a, b]) {
    s.on('data', forward);
    s.on('drain', resumePeer);
    s.on('end', endPeer);
    s.on('error', destroyBoth);
  }
  a.resume();
  b.resume();
}

/** An 'error' listener for streams whose errors end in 'close', handled there. */
export function ignoreError(): void {}

/**
 * Wraps a Duplex (an HTTP/2 stream) in a plain one. node:http's server writes
 * through internals an Http2Stream shares but must not be used for, which
 * corrupts the response head; a plain Duplex keeps it on the generic path.
 */
export function asPlainDuplex(inner: Duplex): Duplex {
  const outer = new Duplex({
    read() {
      inner.resume();
    },
    write(chunk, encoding, cb) {
      inner.write(chunk, encoding, cb);
    },
    // node:http corks the head and the body of a response together: one write (one DATA frame) for both.
    writev(chunks, cb) {
      inner.cork();
      for (let i = 0; i < chunks.length; i++) {
        const c = chunks[i]!;
        if (i === chunks.length - 1) inner.write(c.chunk, c.encoding, cb);
        else inner.write(c.chunk, c.encoding);
      }
      inner.uncork();
    },
    final(cb) {
      inner.end();
      cb();
    },
    destroy(err, cb) {
      inner.destroy(err ?? undefined);
      cb(err);
    },
  });
  inner.on('data', (c: Buffer) => {
    if (!outer.push(c)) inner.pause();
  });
  inner.on('end', () => outer.push(null));
  inner.on('error', (e) => outer.destroy(e));
  inner.on('close', () => {
    if (!outer.destroyed) outer.destroy();
  });
  return outer;
}

/** A TCP connection to ip:port, failing after timeoutMs (code UND_ERR_CONNECT_TIMEOUT, as undici names it). */
export function connectTcp(ip: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port, noDelay: true });
    const timer = setTimeout(
      () => s.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })),
      timeoutMs,
    );
    // Both listeners go once connected: left on, they would keep the timer and this closure for the connection's life.
    const failed = (err: Error) => {
      clearTimeout(timer);
      s.off('connect', connected);
      reject(err);
    };
    const connected = () => {
      clearTimeout(timer);
      s.off('connect', connected);
      s.off('error', failed);
      // Until the caller listens: an error must not throw (the old once-listener swallowed it too).
      s.on('error', ignoreError);
      resolve(s);
    };
    s.on('connect', connected);
    s.on('error', failed);
  });
}
