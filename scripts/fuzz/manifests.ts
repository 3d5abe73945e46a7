/**
 * The long manifest fuzz run (the test suite runs a short one):
 *   node --import tsx scripts/fuzz/manifests.ts --count 1000 --seed 17 [--json out.json]
 * Prints a summary and every finding; exits 1 when there is one.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runManifestFuzz } from './manifest-fuzz.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '1000' },
    seed: { type: 'string', default: '17' },
    json: { type: 'string' },
  },
});
const count = Number(values.count);
const seed = Number(values.seed);
const report = await runManifestFuzz({ seed, count });
for (const f of report.findings) {
  console.log(
    `#${f.index} ${f.path} ${f.kind}: ${f.seed} ${f.mutation} (${f.detail}): ${f.message.split('\n')[0]}`,
  );
}
console.log(
  `${report.count} mutants (seed ${seed}) in ${(report.ms / 1000).toFixed(1)} s: ` +
    `apply accepted ${report.accepted.apply}, rejected ${report.rejected.apply}; ` +
    `directory accepted ${report.accepted.directory}, rejected ${report.rejected.directory}; ` +
    `${report.mustReject} invalid by construction; findings ${report.findings.length}`,
);
for (const [k, v] of Object.entries(report.byMutation).sort())
  console.log(
    `  ${k.padEnd(18)} ${String(v.tried).padStart(5)} tried, accepted: apply ${v.acceptedApply}, directory ${v.acceptedDirectory}`,
  );
if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
process.exit(report.findings.length > 0 ? 1 : 0);
