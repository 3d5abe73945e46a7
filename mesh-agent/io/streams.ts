import net from 'node:net';
import { Duplex } from 'node:stream';

/**
 * At most this many bytes wait in one direction's write queue before the reading side pauses.
 * Above the writable high-water mark (16 KiB) so a 64 KiB socket read does not pause and resume
 * the reader each time (an epoll_ctl pair per chunk), and small enough to bound a slow reader.
 */
export const SPLICE_QUEUE_BYTES = 256 * 1024;

/** A chunk this large from an HTTP/2 stream means bulk: its pieces are worth one writev. */
const COALESCE_FROM_BYTES = 4096;

/** The other end of a spliced stream, read by the shared listeners below. */
const peerOf = Symbol('sockmesh.splicePeer');
type Spliced = Duplex & { [peerOf]: Duplex };

/** Writables corked during this turn of the event loop, uncorked by one shared setImmediate. */
const corked: Duplex[] = [];
let flushScheduled = false;

function uncorkAll(): void {
  flushScheduled = false;
  for (let i = 0; i < corked.length; i++) corked[i]!.uncork();
  corked.length = 0;
}

// One set of listener functions for every spliced connection (each finds its peer on `this`): two
// pipe()s cost 18 closures, their contexts and two pipe states per connection, which at 10 000
// idle connections is a sixth of the agent's heap.
/**
 * An HTTP/2 stream hands over the DATA frames of one TLS read as separate pieces, each in its own
 * callback (about 5 per 16 KiB record: 5 write syscalls); in bulk they are corked until the loop's
 * I/O callbacks are done and go out in one writev. A small piece (a request, an answer) is written
 * as it comes: a setImmediate per request cost the L4 path 15 % CPU. A socket's read is one chunk.
 */
function forward(this: Spliced, chunk: Buffer): void {
  const to = this[peerOf];
  if (chunk.length >= COALESCE_FROM_BYTES && !(this instanceof net.Socket) && !to.writableCorked) {
    to.cork();
    corked.push(to);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(uncorkAll);
    }
  }
  // write() returned false, so 'drain' will come to resume this side.
  if (!to.write(chunk) && to.writableLength >= SPLICE_QUEUE_BYTES) this.pause();
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
 * backpressure (a reader pauses while its peer's write queue holds SPLICE_QUEUE_BYTES) and tearing
 * both down on error. Both start flowing, as pipe() starts them.
 */
export function splice(a: Duplex, b: Duplex): void {
  (a as Spliced)[peerOf] = b;
  (b as Spliced)[peerOf] = a;
  for (const s of [a, b]) {
    // The splice passes each FIN on itself: a socket must not end its own sending side when its
    // peer's FIN arrives (net's default), or the answer to a client that half-closed is lost.
    s.allowHalfOpen = true;
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
