#!/usr/bin/env -S node --import tsx
import type { ChildProcess } from 'node:child_process';
// Re-runs the README's journeys for real and writes their actual output back into README.md.
// Run as root from the repo: node --import tsx scripts/refresh-readme.ts
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliShim, END, runStep, START, stopBackground } from './journeys.js';

const repo = fileURLToPath(new URL('../', import.meta.url));
const readmePath = join(repo, 'README.md');
const readme = readFileSync(readmePath, 'utf8');
const s = readme.indexOf(START);
const e = readme.indexOf(END);
const env = {
  ...process.env,
  PATH: `${cliShim(repo)}:${process.env.PATH}`,
  SOCKMESH_STATE_DIR: mkdtempSync(join(tmpdir(), 'sockmesh-readme-')),
};
let section = readme.slice(s, e);
const background: ChildProcess[] = [];
try {
  section = section.replace(/```console\n([\s\S]*?)```/g, (_all, body: string) => {
    const out: string[] = [];
    for (const line of body.split('\n')) {
      if (!line.startsWith('$ ')) continue;
      const { output, status, background: bg } = runStep(line.slice(2), env, repo);
      if (bg) background.push(bg);
      // A failing step would document the failure: stop and leave README.md as it was.
      if (status !== 0) throw new Error(`\`${line.slice(2)}\` exited ${status}:\n${output}`);
      // Show the state directory users get, not this run's temporary one.
      const shown = output.replaceAll(env.SOCKMESH_STATE_DIR, '/run/sockmesh');
      out.push(
        line,
        ...shown
          .trimEnd()
          .split('\n')
          .filter((l) => l !== ''),
      );
      process.stderr.write(`ran: ${line}\n`);
    }
    return `\`\`\`console\n${out.join('\n')}\n\`\`\``;
  });
} finally {
  for (const bg of background) stopBackground(bg);
  runStep('sockmesh down --all', env, repo);
}
writeFileSync(readmePath, readme.slice(0, s) + section + readme.slice(e));
