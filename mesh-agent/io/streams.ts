import net from 'node:net';
import { Duplex } from 'node:stream';

/** Pipes two byte streams both ways, keeping half-close and tearing both down on error. */
export function splice(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  const kill = () => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
}

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
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
