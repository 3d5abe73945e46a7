#!/usr/bin/env node
// Runs every *.test.ts under the given folders (default: test/) with node's own test runner.
// Node 20's --test takes no globs, so the files are listed here.
//   --node=24     run them on Node 24 LTS from the npm registry (scripts/node24.sh installs it into a
//                 cache dir); it is first on the PATH, so the processes the tests start run on it too.
//   --skip=<dir>  leave out the files under <dir> (repeatable).
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function collect(dir, out) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2).filter((a) => !a.startsWith('--node=') && !a.startsWith('--skip='));
const skipped = process.argv
  .slice(2)
  .filter((a) => a.startsWith('--skip='))
  .map((a) => join(a.slice('--skip='.length), '/'));
const wanted = process.argv
  .slice(2)
  .find((a) => a.startsWith('--node='))
  ?.slice('--node='.length);
const roots = args.filter((a) => !a.startsWith('-'));
const extra = args.filter((a) => a.startsWith('-'));
let node = process.execPath;
const env = { ...process.env };
if (wanted !== undefined) {
  if (wanted !== '24') {
    console.error(`run-tests: --node=${wanted}: only --node=24 is known (scripts/node24.sh)`);
    process.exit(2);
  }
  const bin = execFileSync('bash', [join(import.meta.dirname, 'node24.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  node = join(bin, 'node');
  env.PATH = `${bin}:${env.PATH ?? ''}`;
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
  console.log(`run-tests: on Node ${version} (${node})`);
}
const files = (roots.length ? roots : ['test'])
  .flatMap((r) => (statSync(r).isDirectory() ? collect(r, []) : [r]))
  .filter((f) => !skipped.some((d) => join(f).startsWith(d)));
if (files.length === 0) {
  console.error('run-tests: no *.test.ts files found');
  process.exit(1);
}
const res = spawnSync(
  node,
  [
    '--import',
    'tsx',
    '--test',
    '--test-reporter=spec',
    '--test-concurrency=1',
    '--test-timeout=300000',
    ...extra,
    ...files,
  ],
  { stdio: 'inherit', env },
);
process.exit(res.status ?? 1);
