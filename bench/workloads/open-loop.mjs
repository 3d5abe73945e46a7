// Open-loop (fixed-rate) HTTP/1.1 load generator, coordinated-omission safe: request i is due at
// t0 + i/rate whether or not earlier ones have finished, and its latency is measured from that
// intended time, so a stalled path is charged for every request it delayed (as wrk2 does).
//   node open-loop.mjs <url> <rate> <seconds> <connections> <warmupSeconds>
// Prints one JSON object: latency percentiles (ms, from the intended time), the service time
// (from the actual send) and how late the generator itself sent (its own timer lag).
import { Pool } from 'undici';

const [url = '', rateS = '1000', secondsS = '10', connsS = '16', warmS = '2'] = process.argv.slice(2);
const rate = Number(rateS);
const seconds = Number(secondsS);
const warm = Number(warmS);
const u = new URL(url);
const pool = new Pool(u.origin, {
  connections: Number(connsS),
  pipelining: 1,
  keepAliveTimeout: 60_000,
  // A broken path must fail its requests, not hang the run for undici's 300 s default.
  headersTimeout: 10_000,
  bodyTimeout: 10_000,
});
const path = u.pathname + u.search;

const total = Math.round(rate * (seconds + warm));
const warmCount = Math.round(rate * warm);
const intended = new Float64Array(total);
const latency = new Float64Array(total).fill(Number.NaN);
const service = new Float64Array(total).fill(Number.NaN);
const lag = new Float64Array(total);
let errors = 0;
let done = 0;
let next = 0;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const t0 = nowMs() + 50;
const interval = 1000 / rate;

function fire(i) {
  const sent = nowMs();
  lag[i] = sent - intended[i];
  pool.request({ path, method: 'GET' }).then(
    async ({ statusCode, body }) => {
      for await (const _ of body);
      const end = nowMs();
      if (statusCode !== 200) errors++;
      latency[i] = end - intended[i];
      service[i] = end - sent;
      if (++done === total) finish();
    },
    () => {
      errors++;
      if (++done === total) finish();
    },
  );
}

function tick() {
  const now = nowMs();
  while (next < total && t0 + next * interval <= now) {
    intended[next] = t0 + next * interval;
    fire(next++);
  }
  if (next < total) setTimeout(tick, Math.max(0, t0 + next * interval - nowMs() - 0.5));
}

function pct(arr, ps) {
  const v = Array.from(arr.subarray(warmCount))
    .filter((x) => !Number.isNaN(x))
    .sort((a, b) => a - b);
  const out = {};
  for (const p of ps)
    out[`p${String(p * 100).replace('.', '')}`] = v[Math.min(v.length - 1, Math.floor(p * v.length))] ?? null;
  out.max = v[v.length - 1] ?? null;
  out.mean = v.reduce((a, b) => a + b, 0) / (v.length || 1);
  return out;
}

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  const end = nowMs();
  const measured = total - warmCount;
  process.stdout.write(
    `${JSON.stringify({
      requests: measured,
      errors,
      rate,
      achievedRps: (total / (end - t0)) * 1000,
      latencyMs: pct(latency, [0.5, 0.9, 0.99, 0.999]),
      serviceMs: pct(service, [0.5, 0.9, 0.99]),
      sendLagMs: pct(lag, [0.5, 0.99]),
    })}\n`,
  );
  pool.destroy().then(() => process.exit(0));
}

setTimeout(tick, 50);
// A path that cannot keep up queues requests without bound: report what finished by then, and
// count the rest as errors (their latency is at least this long).
setTimeout(
  () => {
    errors += total - done;
    done = total;
    finish();
  },
  (seconds + warm + 30) * 1000,
).unref();
