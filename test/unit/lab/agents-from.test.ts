import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { agentsFrom } from '../../../lab/mesh.js';
import { isSockmeshError } from '../../../lib/errors.js';

/** A fake checkout: one source file and, optionally, dist/cli/main.js, with chosen mtimes (seconds). */
function checkout(t: { after: (fn: () => void) => void }, opts: { srcAt: number; distAt?: number }): string {
  const root = mkdtempSync(join(tmpdir(), 'sockmesh-agents-from-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'mesh-agent', 'tunnel'), { recursive: true });
  const src = join(root, 'mesh-agent', 'tunnel', 'pool.ts');
  writeFileSync(src, '');
  utimesSync(src, opts.srcAt, opts.srcAt);
  if (opts.distAt !== undefined) {
    mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
    const main = join(root, 'dist', 'cli', 'main.js');
    writeFileSync(main, '');
    utimesSync(main, opts.distAt, opts.distAt);
  }
  return root;
}

describe('where the lab starts agents from', () => {
  it('uses dist/ when it is at least as new as every source', (t) => {
    assert.equal(agentsFrom(checkout(t, { srcAt: 1000, distAt: 2000 }), {}), 'dist');
  });

  it('falls back to the sources when one is newer than dist/ (a stale build must not be measured)', (t) => {
    assert.equal(agentsFrom(checkout(t, { srcAt: 3000, distAt: 2000 }), {}), 'src');
  });

  it('uses the sources when there is no build', (t) => {
    assert.equal(agentsFrom(checkout(t, { srcAt: 1000 }), {}), 'src');
  });

  it('obeys SOCKMESH_LAB_AGENTS either way', (t) => {
    const fresh = checkout(t, { srcAt: 1000, distAt: 2000 });
    assert.equal(agentsFrom(fresh, { SOCKMESH_LAB_AGENTS: 'src' }), 'src');
    const stale = checkout(t, { srcAt: 3000, distAt: 2000 });
    assert.equal(agentsFrom(stale, { SOCKMESH_LAB_AGENTS: 'dist' }), 'dist');
  });

  it('refuses to force dist/ when there is none, saying how to build it', (t) => {
    const root = checkout(t, { srcAt: 1000 });
    assert.throws(
      () => agentsFrom(root, { SOCKMESH_LAB_AGENTS: 'dist' }),
      (err) => isSockmeshError(err) && err.code === 'SOCKMESH_E_LAB' && /npm run build/.test(err.hint ?? ''),
    );
  });
});
