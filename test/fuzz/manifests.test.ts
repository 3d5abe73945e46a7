// Manifest fuzzing, seeded and bounded (the long run: scripts/fuzz/manifests.ts, figures in
// docs/reliability.md). 200 structure-aware mutants of the examples through what `sockmesh apply`
// and the directory source run; then a sample through a real control plane: its admin endpoint
// (never a 500) and its watched directory, with the last good configuration kept.
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { mulberry32, mutate, runManifestFuzz, seeds } from '../../scripts/fuzz/manifest-fuzz.js';
import { AdminServer } from '../../xds/server/admin.js';
import { startControlPlane } from '../integration/xds/helpers.js';

test('200 mutants of the examples: no crash, nothing invalid accepted, every error bounded', async () => {
  const report = await runManifestFuzz({ seed: 1717, count: 200 });
  assert.deepEqual(
    report.findings.map(
      (f) => `#${f.index} ${f.path} ${f.kind} ${f.seed} ${f.mutation} (${f.detail}): ${f.message}`,
    ),
    [],
  );
  // The oracle has teeth: most mutants are invalid by construction, and some valid ones get through.
  assert.ok(report.mustReject > 80, `only ${report.mustReject} mutants invalid by construction`);
  assert.ok(report.accepted.directory > 10, `only ${report.accepted.directory} accepted`);
  assert.equal(report.accepted.directory + report.rejected.directory, 200);
});

function call(socket: string, urlPath: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, path: urlPath, method: body === undefined ? 'GET' : 'POST' },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('a sample through a running control plane: apply never answers 500, a rejected mutant changes nothing', async (t) => {
  const { shop, seeds: list } = seeds();
  const fx = await startControlPlane(t, shop);
  const admin = new AdminServer(fx.cp);
  t.after(() => admin.close());
  const sock = path.join(path.dirname(fx.dir), 'admin.sock');
  await admin.listen(`unix:${sock}`);
  const config = async () => (await call(sock, '/v1/config?node=node1')).text;
  const pristine = await config();
  const restore = async () => {
    await rm(path.join(fx.dir, 'applied'), { recursive: true, force: true });
    for (const [f, text] of Object.entries(shop)) {
      if ((await readFile(path.join(fx.dir, f), 'utf8')) !== text)
        await writeFile(path.join(fx.dir, f), text);
    }
    await fx.cp.reload();
  };

  const r = mulberry32(4242);
  let rejected = 0;
  let accepted = 0;
  for (let i = 0; i < 24; i++) {
    const m = mutate(r, list);
    const before = await config();
    const viaDirectory = i % 2 === 1;
    let ok: boolean;
    if (viaDirectory) {
      await writeFile(path.join(fx.dir, m.seed.dirFile), m.text);
      ok = (await fx.cp.reload()).applied;
    } else {
      const res = await call(sock, '/v1/apply', m.text);
      assert.ok(
        [200, 400, 422].includes(res.status),
        `#${i} ${m.mutation} (${m.detail}): ${res.status} ${res.text}`,
      );
      ok = res.status === 200;
    }
    if (ok) {
      accepted++;
      assert.notEqual(m.expect, 'reject', `#${i} ${m.mutation} (${m.detail}) accepted`);
    } else {
      rejected++;
      assert.equal(await config(), before, `#${i} ${m.mutation} (${m.detail}) changed the served config`);
    }
    await restore();
    assert.equal(JSON.parse(await config()).listeners.length, JSON.parse(pristine).listeners.length);
  }
  assert.ok(rejected > 0, 'no mutant was rejected: the sample tests nothing');
  t.diagnostic(`${accepted} accepted, ${rejected} rejected`);
});
