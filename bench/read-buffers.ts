/**
 * Issue 16, bulk: does reading the plaintext pod socket into a reused buffer (net's `onread`) pay
 * on the splice into the tunnel? A measured process reads one TCP connection (64 KiB writes, as
 * fast as it takes them) and writes each chunk into an HTTP/2 stream over mTLS (the caller's half
 * of the L4 splice: pod socket -> tunnel stream, with the splice's 256 KiB queue bound), in three
 * ways: `data` events (a new buffer per read, what the agent does), `onread64` (one shared 64 KiB
 * buffer, each read copied out: an HTTP/2 stream write completes later, so a queued chunk must own
 * its bytes) and `onread256` (the same with 256 KiB reads). Prints CPU-seconds per GB of the
 * measured process, reads per MB and Gbit/s, modes interleaved per round.
 *
 *   node --import tsx bench/read-buffers.ts [--seconds 6] [--rounds 3]
 *
 * The source and the sink run in this process; only the reader is measured. Listens on 127.0.0.1.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CertificateAuthority } from '../certs/ca/authority.js';
import { type SvidWire, svidFromWire, svidToWire } from '../certs/index.js';
import { mtlsServer, mtlsSession } from './lib/roles.js';

const TD = 'reads.bench';
const SINK = `spiffe://${TD}/ns/bench/sa/sink`;
const QUEUE_BYTES = 256 * 1024;
const MODES = ['data', 'onread64', 'onread256'] as const;
type Mode = (typeof MODES)[number];

interface ReaderEnv {
  mode: Mode;
  source: number;
  sink: string;
  svid: SvidWire;
  seconds: number;
}

function runReader(env: ReaderEnv): void {
  const session = mtlsSession(env.sink, svidFromWire(env.svid), SINK);
  session.once('connect', () => {
    session.setLocalWindowSize(16 << 20);
    const stream = session.request({ ':method': 'POST', ':path': '/' });
    stream.on('error', () => {});
    let bytes = 0;
    let reads = 0;
    let sock: net.Socket;
    if (env.mode === 'data') {
      sock = net.connect({ port: env.source, host: '127.0.0.1', noDelay: true });
      sock.on('data', (c: Buffer) => {
        bytes += c.length;
        reads++;
        if (!stream.write(c) && stream.writableLength >= QUEUE_BYTES) sock.pause();
      });
    } else {
      const shared = Buffer.allocUnsafeSlow(env.mode === 'onread256' ? 256 * 1024 : 64 * 1024);
      sock = net.connect({
        port: env.source,
        host: '127.0.0.1',
        noDelay: true,
        onread: {
          buffer: shared,
          callback: (n, buf) => {
            bytes += n;
            reads++;
            const own = Buffer.allocUnsafeSlow(n);
            own.set(buf.subarray(0, n));
            // false pauses the socket until 'drain' resumes it.
            return stream.write(own) || stream.writableLength < QUEUE_BYTES;
          },
        },
      });
    }
    sock.on('error', () => {});
    stream.on('drain', () => sock.resume());
    // One second of warm-up (handshake, window growth), then the measured window.
    setTimeout(() => {
      const cpu0 = process.cpuUsage();
      const [b0, r0] = [bytes, reads];
      setTimeout(() => {
        const cpu = process.cpuUsage(cpu0);
        const gb = (bytes - b0) / 1e9;
        process.send?.({
          mode: env.mode,
          cpuPerGb: +((cpu.user + cpu.system) / 1e6 / gb).toFixed(3),
          gbps: +((gb * 8) / env.seconds).toFixed(3),
          readsPerMB: +((reads - r0) / (gb * 1000)).toFixed(2),
        });
        process.exit(0);
      }, env.seconds * 1000);
    }, 1000);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: 'boolean', default: false },
      seconds: { type: 'string', default: '6' },
      rounds: { type: 'string', default: '3' },
    },
  });
  if (values.role) return runReader(JSON.parse(process.env.READS_ROLE ?? '{}') as ReaderEnv);
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const sink = mtlsServer(await ca.issueSvid(SINK), '127.0.0.1');
  sink.on('session', (s) => s.setLocalWindowSize(16 << 20));
  sink.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    stream.resume();
    stream.on('error', () => {});
  });
  const chunk = Buffer.alloc(64 * 1024, 1);
  const source = net.createServer((s) => {
    const fill = () => {
      while (s.write(chunk));
    };
    s.on('drain', fill);
    s.on('error', () => {});
    fill();
  });
  source.listen(0, '127.0.0.1');
  await Promise.all([once(source, 'listening'), sink.listening ? undefined : once(sink, 'listening')]);
  const readerSvid = svidToWire(await ca.issueSvid(`spiffe://${TD}/ns/bench/sa/reader`));
  try {
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const mode of MODES) {
        const env: ReaderEnv = {
          mode,
          source: (source.address() as net.AddressInfo).port,
          sink: `127.0.0.1:${(sink.address() as net.AddressInfo).port}`,
          svid: readerSvid,
          seconds: Number(values.seconds),
        };
        const reader = fork(fileURLToPath(import.meta.url), ['--role'], {
          env: { ...process.env, READS_ROLE: JSON.stringify(env) },
          execArgv: process.execArgv,
        });
        try {
          const [result] = (await once(reader, 'message')) as [Record<string, unknown>];
          const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
          process.stdout.write(`${JSON.stringify({ round, load, node: process.version, ...result })}\n`);
        } finally {
          reader.kill('SIGKILL');
        }
      }
    }
  } finally {
    source.close();
    sink.close();
  }
  process.exit(0);
}

await main();
