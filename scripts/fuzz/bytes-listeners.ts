/**
 * The long byte-fuzz run against the proxy's listeners (the test suite runs a short one):
 *   node --import tsx scripts/fuzz/bytes-listeners.ts --count 2000 --seed 17 [--concurrency 16] [--json out.json] [--only 440,537]
 * Prints a summary per listener and family; exits 1 when a connection was left open, a probe
 * failed or the agent died.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runBytesFuzz } from './bytes-fuzz.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '2000' },
    seed: { type: 'string', default: '17' },
    concurrency: { type: 'string', default: '16' },
    json: { type: 'string' },
    // Rerun some cases of the same seed and count by index (the ones a run left open, say).
    only: { type: 'string' },
  },
});
const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
let done = 0;
const report = await runBytesFuzz({
  seed: Number(values.seed),
  count: Number(values.count),
  concurrency: Number(values.concurrency),
  ...(values.only ? { only: values.only.split(',').map(Number) } : {}),
  onCase: () => {
    if (++done % 100 === 0) console.error(`${done} cases`);
  },
});
for (const [k, v] of Object.entries(report.byFamily).sort())
  console.log(
    `  ${k.padEnd(36)} ${String(v.tried).padStart(5)} tried, ${String(v.closedByAgent).padStart(5)} closed by the agent`,
  );
for (const l of report.leftOpen) console.log(`left open: #${l.index} ${l.listener} ${l.family}`);
for (const f of report.probes.failures) console.log(`probe failed: ${f}`);
console.log(
  `${report.count} cases (seed ${report.seed}) in ${(report.ms / 1000).toFixed(0)} s: agent ${report.alive ? 'alive' : 'DEAD'}, ` +
    `${report.leftOpen.length} connections left open, probes ${report.probes.ok} ok / ${report.probes.failed} failed, ` +
    `${report.forwardedUpstream} fuzzer requests reached the upstream; RSS before ${mib(report.rss.before)}, ` +
    `peak ${mib(report.rss.peak)}, after ${mib(report.rss.after)} (heap ${mib(report.heapUsed.before)} -> ${mib(report.heapUsed.after)})`,
);
if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
process.exit(report.alive && report.leftOpen.length === 0 && report.probes.failed === 0 ? 0 : 1);
