/**
 * The README's user journeys are executable: every ```console block between the
 * journeys markers is a shell session. This module parses them, runs them for
 * real (a `sockmesh` shim on PATH, an isolated state directory) and compares
 * outputs with ids, numbers and times normalised.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const START = '<!-- journeys:start -->';
export const END = '<!-- journeys:end -->';

export interface Step {
  command: string;
  expected: string[];
}

/** Every `$ command` with the output lines documented under it, in order. */
export function parseJourneys(readme: string): Step[] {
  const s = readme.indexOf(START);
  const e = readme.indexOf(END);
  if (s < 0 || e < s) throw new Error('README has no journeys markers');
  const steps: Step[] = [];
  for (const block of readme.slice(s, e).matchAll(/```console\n([\s\S]*?)```/g)) {
    for (const line of block[1]!.split('\n')) {
      if (line.startsWith('$ ')) steps.push({ command: line.slice(2), expected: [] });
      else if (line.trim() !== '' && steps.length > 0) steps.at(-1)!.expected.push(line);
    }
  }
  return steps;
}

/** Strips what changes from run to run: run ids, serials, counts, percentages, times. */
export function normalise(line: string): string {
  return line
    .replace(/\/tmp\/sockmesh-[\w-]+|\/run\/sockmesh/g, 'STATE')
    .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME')
    .replace(/\b[0-9a-f]{6,}\b/g, 'ID')
    .replace(/\d+(\.\d+)?/g, 'N')
    .replace(/\s+/g, ' ')
    .trim();
}

/** A directory with a `sockmesh` executable that runs this checkout's CLI from source. */
export function cliShim(repo: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sockmesh-bin-'));
  const shim = join(dir, 'sockmesh');
  writeFileSync(
    shim,
    `#!/bin/sh\nexec "${process.execPath}" --import tsx "${join(repo, 'cli', 'main.ts')}" "$@"\n`,
  );
  chmodSync(shim, 0o755);
  return dir;
}

export function runStep(
  command: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  timeoutMs = 120_000,
): { output: string; status: number | null } {
  const res = spawnSync(
    '/bin/sh',
    [
      '-c',
      `{ ${command}
} 2>&1`,
    ],
    {
      env,
      cwd,
      encoding: 'utf8',
      timeout: timeoutMs,
    },
  );
  return { output: res.stdout ?? '', status: res.status };
}

/** Expected lines missing from the actual output, compared normalised and in any order. */
export function missingLines(expected: string[], actual: string): string[] {
  const got = new Set(actual.split('\n').map(normalise));
  return expected.filter((l) => !got.has(normalise(l)));
}
