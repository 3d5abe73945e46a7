/**
 * Re-renders bench/results/<name>.md from its JSON (verdicts recomputed), after a change to the
 * report's format or to how a target is judged; the measurements themselves are not touched.
 *
 *   node --import tsx bench/render.ts [bench|bench-quick]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderMarkdown } from './lib/report.js';
import { verdictsFor } from './lib/targets.js';
import type { Report } from './lib/types.js';

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results');
const name = process.argv[2] ?? 'bench';
const file = join(RESULTS, `${name}.json`);
const report = JSON.parse(readFileSync(file, 'utf8')) as Report;
report.verdicts = verdictsFor(report.results);
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
writeFileSync(join(RESULTS, `${name}.md`), renderMarkdown(report));
process.stdout.write(`re-rendered bench/results/${name}.{json,md}\n`);
