/**
 * Which DATA frame sizes Node's HTTP/2 puts on the wire when both ends advertise a larger
 * SETTINGS_MAX_FRAME_SIZE (issue 16, bulk: "fewer DATA frames per TLS record"). An h2c client
 * uploads --mib MiB in 64 KiB writes (the bulk workload's writes) with the tunnel's windows
 * (4 MiB per stream, 16 MiB per session) to an h2c server through a TCP relay that parses the frame
 * headers; plaintext so the frames can be read, the sender's framing (nghttp2 in Node) is the same
 * under TLS. Prints one JSON line per size: the DATA payload sizes seen and how often.
 *
 *   node --import tsx bench/h2-frame-sizes.ts [--sizes 16384,65536,262144,1048576] [--mib 50]
 *
 * Listens on 127.0.0.1 only (ports chosen by the kernel).
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';

const FRAME_HEADER = 9;
const PREFACE = 24;
const DATA = 0;

/** Counts DATA frame payload sizes in a client-to-server HTTP/2 byte stream. */
function frameCounter(): { feed(chunk: Buffer): void; sizes: Map<number, number> } {
  const sizes = new Map<number, number>();
  let pending: Buffer = Buffer.alloc(0);
  let prefaceLeft = PREFACE;
  return {
    sizes,
    feed(chunk) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      if (prefaceLeft > 0) {
        const skip = Math.min(prefaceLeft, pending.length);
        prefaceLeft -= skip;
        pending = pending.subarray(skip);
      }
      while (pending.length >= FRAME_HEADER) {
        const len = pending.readUIntBE(0, 3);
        if (pending.length < FRAME_HEADER + len) break;
        if (pending[3] === DATA) sizes.set(len, (sizes.get(len) ?? 0) + 1);
        pending = pending.subarray(FRAME_HEADER + len);
      }
    },
  };
}

async function probe(maxFrameSize: number, mib: number): Promise<Record<string, unknown>> {
  const settings = { initialWindowSize: 4 << 20, maxFrameSize };
  const server = http2.createServer({ settings });
  server.on('session', (s) => s.setLocalWindowSize(16 << 20));
  const received = new Promise<void>((resolve) =>
    server.on('stream', (stream) => {
      stream.resume();
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end();
        resolve();
      });
    }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const counter = frameCounter();
  const relay = net.createServer((down) => {
    const up = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    down.on('data', (c: Buffer) => counter.feed(c));
    down.pipe(up).pipe(down);
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  const session = http2.connect(`http://127.0.0.1:${(relay.address() as net.AddressInfo).port}`, {
    settings,
  });
  try {
    await once(session, 'connect');
    const upload = session.request({ ':method': 'POST', ':path': '/' });
    upload.resume();
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < mib * 16; i++) if (!upload.write(chunk)) await once(upload, 'drain');
    upload.end();
    await received;
    const sizes = [...counter.sizes].sort((a, b) => b[1] - a[1]);
    return {
      node: process.version,
      maxFrameSize,
      dataFrames: sizes.reduce((n, [, c]) => n + c, 0),
      largestPayload: Math.max(...counter.sizes.keys()),
      payloadSizes: Object.fromEntries(sizes.slice(0, 4)),
    };
  } finally {
    session.destroy();
    relay.close();
    server.close();
    for (const s of [relay, server]) s.unref();
  }
}

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '16384,65536,262144,1048576' },
    mib: { type: 'string', default: '50' },
  },
});
for (const size of values.sizes.split(',').map(Number)) {
  process.stdout.write(`${JSON.stringify(await probe(size, Number(values.mib)))}\n`);
}
process.exit(0);
