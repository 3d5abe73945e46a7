import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  cliShim,
  lineMatches,
  missingLines,
  parseJourneys,
  runStep,
  stopBackground,
} from '../../scripts/journeys.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

describe('README journeys, exactly as documented', () => {
  it('parses the documented sessions', () => {
    const steps = parseJourneys(readFileSync(join(REPO, 'README.md'), 'utf8'));
    assert.ok(steps.length >= 15, `only ${steps.length} commands found`);
    assert.equal(steps[0]?.command, 'sockmesh up');
    assert.equal(steps.at(-1)?.command, 'sockmesh down');
    for (const s of steps)
      assert.ok(s.command.startsWith('sockmesh ') || s.command.startsWith('sleep '), s.command);
  });

  it('compares canary shares within a tolerance and statuses exactly; masks only ids, times and counters', () => {
    const row = 'reviews-v1  90%     89.2%  493       100.0%   0.5ms  2.5ms';
    assert.ok(
      lineMatches(row, 'reviews-v1  90%     86.1%  512       100.0%   0.7ms  3ms'),
      'another 90/10 sample',
    );
    assert.ok(
      !lineMatches(row, 'reviews-v1  90%     50.2%  270       100.0%   0.5ms  2.5ms'),
      'a 50/50 share',
    );
    assert.ok(
      !lineMatches(row, 'reviews-v1  50%     89.2%  493       100.0%   0.5ms  2.5ms'),
      'another weight',
    );
    assert.ok(
      !lineMatches(row, 'reviews-v1  90%     89.2%  493       80.0%   0.5ms  2.5ms'),
      'failed requests',
    );
    assert.ok(
      !lineMatches(
        'reviews-v1  0%      0.0%    0         -        -    -',
        'reviews-v1  0%      9.0%    50        100.0%   1ms  2ms',
      ),
    );
    // 200 requests at 90/10: a sample 2 sd away from the documented one still matches, the 50/50 split does not.
    assert.ok(lineMatches('  v1    185  (92.5%)', '  v1    172  (86.0%)'));
    assert.ok(!lineMatches('  v1    185  (92.5%)', '  v1    101  (50.5%)'));
    assert.ok(!lineMatches('plaintext -> reviews: 403', 'plaintext -> reviews: 200'), 'a status is exact');
    assert.ok(
      !lineMatches(
        'removed local mesh 9ce653 (2 nodes, 5 pods)',
        'removed local mesh 1a2b3c (2 nodes, 4 pods)',
      ),
    );
    assert.ok(
      lineMatches(
        'local mesh 9ce653 is up in 4.9s (logs: /run/sockmesh/9ce653/logs)',
        'local mesh 0f1e2d is up in 12s (logs: /run/sockmesh/0f1e2d/logs)',
      ),
    );
    assert.ok(
      lineMatches(
        '05752aa3695f011bbea1539cbe11cc57  spiffe://cluster.local/ns/legacy/sa/default  2026-11-24T21:30:36.000Z  valid 57m33s',
        '9a8b7c6d5e4f30211203948576abcdef  spiffe://cluster.local/ns/legacy/sa/default  2026-12-07T08:01:02.000Z  valid 59m59s',
      ),
    );
    assert.ok(
      lineMatches(
        'node2  connectsRedirected=1 plaintextRefused=2',
        'node2  connectsRedirected=7 plaintextRefused=3',
      ),
    );
  });

  it('runs every command of the app, release and security journeys with the documented output', () => {
    const steps = parseJourneys(readFileSync(join(REPO, 'README.md'), 'utf8'));
    const stateDir = mkdtempSync(join(tmpdir(), 'sockmesh-journeys-'));
    const bin = cliShim(REPO);
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, SOCKMESH_STATE_DIR: stateDir };
    const background: ChildProcess[] = [];
    try {
      for (const step of steps) {
        const { output, status, background: bg } = runStep(step.command, env, REPO);
        if (bg) background.push(bg);
        assert.equal(status, 0, `\`${step.command}\` exited ${status}:\n${output}`);
        const missing = missingLines(step.expected, output);
        assert.deepEqual(
          missing,
          [],
          `\`${step.command}\` no longer prints what the README shows.\nActual output:\n${output}`,
        );
      }
    } finally {
      for (const bg of background) stopBackground(bg);
      runStep('sockmesh down --all', env, REPO);
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
