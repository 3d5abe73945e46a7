// Long-lived bulk TCP: one connection, 64 KiB writes for <seconds>, then send an end marker and wait for
// the sink's 8-byte count.
// The end is an 'E' byte, not a FIN: payload bytes are 'b', so the sink cannot mistake it. Prints {"bytes", "seconds", "gbps"} (payload bits the sink received).
//   node bulk.mjs <host> <port> <seconds>
import { connect } from 'node:net';

const [host = '', portS = '5201', secondsS = '5'] = process.argv.slice(2);
const chunk = Buffer.alloc(64 * 1024, 0x62);
const sock = connect({ host, port: Number(portS) });
const reply = [];
sock.on('data', (b) => reply.push(b));
sock.on('end', () => {
  if (Buffer.concat(reply).length < 8) {
    process.stderr.write('the sink closed without a count\n');
    process.exit(1);
  }
});
sock.on('error', (e) => {
  process.stderr.write(`${e}\n`);
  process.exit(1);
});
sock.on('connect', () => {
  const t0 = process.hrtime.bigint();
  const stopAt = t0 + BigInt(Math.round(Number(secondsS) * 1e9));
  const pump = () => {
    while (process.hrtime.bigint() < stopAt) {
      if (!sock.write(chunk)) return void sock.once('drain', pump);
    }
    sock.write('E');
  };
  let got = 0;
  sock.on('data', (d) => {
    got += d.length;
    if (got < 8) return;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const bytes = Number(Buffer.concat(reply).readBigUInt64LE(0));
    process.stdout.write(`${JSON.stringify({ bytes, seconds: secs, gbps: (bytes * 8) / secs / 1e9 })}\n`);
    process.exit(0);
  });
  pump();
});
