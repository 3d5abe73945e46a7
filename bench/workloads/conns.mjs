// Connection scale: opens <idle> connections that stay silent, then <active> connections that each
// send 100 B and wait for the echo once per <intervalMs>, for <activeSeconds>. Prints one JSON line
// per phase ({"phase":"idle"|"active"|"done", ...}); the orchestrator samples the agents' RSS and
// CPU between them. stdin closing (or "next\n") moves from the idle hold to the active phase.
//   node conns.mjs <host> <port> <idle> <active> <intervalMs> <activeSeconds>
import { connect } from 'node:net';

const [host = '', portS = '7000', idleS = '10000', activeS = '1000', intervalS = '1000', secsS = '10'] =
  process.argv.slice(2);
const port = Number(portS);
const MSG = Buffer.alloc(100, 0x61);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const keep = [];
let failed = 0;

function open() {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setNoDelay(true);
    s.once('connect', () => resolve(s));
    s.once('error', () => {
      failed++;
      resolve(undefined);
    });
  });
}

async function openMany(n, parallel) {
  const out = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (i < n) {
        i++;
        const s = await open();
        if (s) out.push(s);
      }
    }),
  );
  return out;
}

const t0 = Date.now();
const idle = await openMany(Number(idleS), 64);
keep.push(...idle);
say({ phase: 'idle', open: idle.length, failed, seconds: (Date.now() - t0) / 1000 });
await new Promise((r) => {
  process.stdin.once('data', r);
  process.stdin.once('end', r);
});

const active = await openMany(Number(activeS), 64);
const interval = Number(intervalS);
const rtts = [];
let sent = 0;
let lost = 0;
const timers = active.map((s, k) => {
  let pending = 0;
  let t = 0n;
  s.on('data', (b) => {
    pending -= b.length;
    if (pending <= 0 && t !== 0n) {
      rtts.push(Number(process.hrtime.bigint() - t) / 1e6);
      t = 0n;
    }
  });
  s.on('error', () => {});
  const ping = () => {
    if (t !== 0n) lost++;
    pending = MSG.length;
    t = process.hrtime.bigint();
    sent++;
    s.write(MSG);
  };
  // Spread the active connections evenly over the interval.
  return setTimeout(
    () => {
      ping();
      timers[k] = setInterval(ping, interval);
    },
    (k * interval) / active.length,
  );
});
say({ phase: 'active', open: active.length, failed });
await new Promise((r) => setTimeout(r, Number(secsS) * 1000));
for (const t of timers) clearInterval(t);
rtts.sort((a, b) => a - b);
const p = (q) => rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))] ?? null;
say({
  phase: 'done',
  sent,
  answered: rtts.length,
  lost,
  rttMs: { p50: p(0.5), p99: p(0.99) },
  stillOpen: [...idle, ...active].filter((s) => !s.destroyed).length,
});
process.exit(0);
