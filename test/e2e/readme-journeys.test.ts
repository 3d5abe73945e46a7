import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cliShim, missingLines, parseJourneys, runStep } from '../../scripts/journeys.js';

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

  it('runs every command of the app, release and security journeys with the documented output', () => {
    const steps = parseJourneys(readFileSync(join(REPO, 'README.md'), 'utf8'));
    const stateDir = mkdtempSync(join(tmpdir(), 'sockmesh-journeys-'));
    const bin = cliShim(REPO);
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, SOCKMESH_STATE_DIR: stateDir };
    try {
      for (const step of steps) {
        const { output, status } = runStep(step.command, env, REPO);
        assert.equal(status, 0, `\`${step.command}\` exited ${status}:\n${output}`);
        const missing = missingLines(step.expected, output);
        assert.deepEqual(
          missing,
          [],
          `\`${step.command}\` no longer prints what the README shows.\nActual output:\n${output}`,
        );
      }
    } finally {
      runStep('sockmesh down --all', env, REPO);
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
