/**
 * The README's user journeys are executable: every ```console block between the
 * journeys markers is a shell session. This module parses them, runs them for
 * real (a `sockmesh` shim on PATH, an isolated state directory) and compares
 * outputs with ids and times masked and canary shares compared within a tolerance.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
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

/**
 * A line reduced to what must match exactly, plus its percentages, which must
 * match within a tolerance: a documented 90/10 canary has to come out about
 * 90/10, and a 403 has to stay a 403. Only what truly changes from run to run
 * is masked: run ids, serials, dates, durations and latencies, counter values
 * (`name=N`), config and xDS versions, and the request counts that sit next to
 * a share (the share is what is compared).
 */
export interface Normalised {
  template: string;
  /** Each percentage, with the sample size behind it when the line shows its count. */
  percents: Array<{ value: number; samples?: number }>;
}

/** The least tolerance, in percentage points. */
export const PERCENT_TOLERANCE = 5;

const NUMBER = /(?<![\w.])(\d+(?:\.\d+)?)(%?)(?![\w.])/g;

export function normalise(line: string): Normalised {
  const masked = line
    .replace(/\/tmp\/sockmesh-[\w-]+|\/run\/sockmesh/g, 'STATE')
    .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, 'TIME')
    .replace(/\b(?=[0-9a-f]*[a-f])[0-9a-f]{6,}\b|\b\d{6,}\b/g, 'ID')
    .replace(/\b\d+m\d+s\b|\b\d+(?:\.\d+)?(?:ms|s)\b/g, 'DUR')
    .replace(/\b(\w+)=\d+\b/g, '$1=N')
    .replace(/\b(version|connected) v?\d+\b/g, '$1 N')
    .replace(/\b(last DUR,) \d+ requests\b/g, '$1 N requests');
  const numbers = [...masked.matchAll(NUMBER)].map((m) => ({ value: Number(m[1]), percent: m[2] === '%' }));
  const percents: Normalised['percents'] = [];
  numbers.forEach((n, i) => {
    if (!n.percent) return;
    // A share's sample size: the request count printed next to it (count = share x samples).
    const count = [numbers[i - 1], numbers[i + 1]].find((c) => c !== undefined && !c.percent);
    const samples = count && n.value > 0 ? Math.round((count.value * 100) / n.value) : undefined;
    percents.push(samples === undefined ? { value: n.value } : { value: n.value, samples });
  });
  // With a share on the line, its counts are as random as the share: the share is compared instead.
  const template = masked.replace(NUMBER, (_m, _v: string, pct: string) =>
    pct === '%' ? 'P%' : percents.length > 0 ? 'N' : _m,
  );
  return { template: template.replace(/\s+/g, ' ').trim(), percents };
}

/**
 * How far a measured share may be from the documented one, in points: PERCENT_TOLERANCE, or
 * 4.5 standard deviations of the difference of the two samples when both sizes are known (a
 * 90/10 split over 200 requests sits within 2.1 points of 90 only two times in three).
 */
export function shareTolerance(documented: Normalised['percents'][number], samples?: number): number {
  if (documented.samples === undefined || samples === undefined) return PERCENT_TOLERANCE;
  const p = documented.value / 100;
  const sd = Math.sqrt(p * (1 - p) * (1 / documented.samples + 1 / samples));
  return Math.max(PERCENT_TOLERANCE, 450 * sd);
}

/** Whether an actual line matches a documented one: same text, shares within their tolerance. */
export function lineMatches(expected: string, actual: string): boolean {
  const e = normalise(expected);
  const a = normalise(actual);
  return (
    e.template === a.template &&
    e.percents.length === a.percents.length &&
    e.percents.every((p, i) => {
      const got = a.percents[i]!;
      return Math.abs(p.value - got.value) <= shareTolerance(p, got.samples);
    })
  );
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

/**
 * Runs one documented command. A command the README sends to the background (`... &`) is
 * started on its own, in its own process group, with no pipe to wait on (a backgrounded child
 * holding the output pipe would keep the step from ever finishing); stop it with stopBackground().
 */
export function runStep(
  command: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  timeoutMs = 120_000,
): { output: string; status: number | null; background?: ChildProcess } {
  const bg = /^(.*[^&])&\s*$/s.exec(command);
  if (bg) {
    const child = spawn('/bin/sh', ['-c', bg[1]!], { env, cwd, stdio: 'ignore', detached: true });
    child.unref();
    return { output: '', status: 0, background: child };
  }
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

/** Stops a background step and everything it started (its process group, by its id). */
export function stopBackground(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    // Already gone.
  }
}

/** Expected lines missing from the actual output, compared as lineMatches() does and in any order. */
export function missingLines(expected: string[], actual: string): string[] {
  const got = actual.split('\n');
  return expected.filter((l) => !got.some((a) => lineMatches(l, a)));
}
