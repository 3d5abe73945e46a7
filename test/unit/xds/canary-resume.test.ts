// A guard new to a control plane process resumes from its recorded state only when the record is
// for the same guard and written weights and names a state the guard can be in; else it starts
// from the written weight (a new release, a hand-edited or foreign status).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { nullLogger } from '../../../lib/log.js';
import { buildModel } from '../../../xds/model/build.js';
import type { MeshModel } from '../../../xds/model/types.js';
import { CanaryController, guardFingerprint } from '../../../xds/server/canary.js';
import type { RecordedGuard } from '../../../xds/sources/source.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';

const SHOP = path.resolve(import.meta.dirname, '../../../examples/shop');
const shop = ['00-cluster.yaml', '10-services.yaml', '20-pods.yaml', '30-routes.yaml']
  .map((f) => readFileSync(path.join(SHOP, f), 'utf8'))
  .join('\n---\n');

function model(steps: string): MeshModel {
  const guard = `apiVersion: sockmesh.io/v1alpha1
kind: CanaryGuard
metadata: { name: reviews, namespace: shop }
spec:
  targetRef: { group: gateway.networking.k8s.io, kind: HTTPRoute, name: reviews }
  canaryRef: { name: reviews-v2 }
  baselineRef: { name: reviews-v1 }
  bounds: { minSuccessRate: 99 }
${steps}`;
  const parsed = parseManifestText('all.yaml', `${shop}\n---\n${guard}`);
  const r = buildModel(parsed.objects);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
  return r.model;
}

function started(m: MeshModel, recorded: RecordedGuard | undefined) {
  const c = new CanaryController(nullLogger, () => {});
  c.setModel(m, new Map(recorded ? [['shop/reviews', recorded]] : []));
  const s = c.status()[0]!;
  c.close();
  return { phase: s.phase, weight: s.weight, step: s.step, from: s.lastTransition?.from };
}

test('a rolled-back guard resumes at 0 with its last transition', () => {
  const m = model('');
  const fingerprint = guardFingerprint(m.canaryGuards![0]!);
  const at = '2026-12-07T07:56:31.548Z';
  const rolled: RecordedGuard = {
    phase: 'RolledBack',
    weight: 0,
    step: -1,
    fingerprint,
    transition: { from: 10, to: 0, reason: 'SuccessRateBelowBound', message: 'm', at },
  };
  assert.deepEqual(started(m, rolled), { phase: 'RolledBack', weight: 0, step: -1, from: 10 });
  // No record: the written weight.
  assert.deepEqual(started(m, undefined), { phase: 'Progressing', weight: 10, step: -1, from: undefined });
});

test('a promoted step resumes; a record for another guard or an impossible state does not', () => {
  const m = model('  steps: [25, 50, 100]\n');
  const fingerprint = guardFingerprint(m.canaryGuards![0]!);
  const at = '2026-12-07T07:57:02.517Z';
  const step1: RecordedGuard = {
    phase: 'Progressing',
    weight: 50,
    step: 1,
    fingerprint,
    transition: { from: 25, to: 50, reason: 'Healthy', message: 'm', at },
  };
  assert.deepEqual(started(m, step1), { phase: 'Progressing', weight: 50, step: 1, from: 25 });
  const fresh = { phase: 'Progressing', weight: 10, step: -1, from: undefined };
  // The guard changed since (here: other steps), so did its fingerprint: a new release.
  assert.deepEqual(started(model('  steps: [50, 100]\n'), step1), fresh);
  // A weight the recorded step does not give, a step beyond the steps: not a state of this guard.
  assert.deepEqual(started(m, { ...step1, weight: 30 }), fresh);
  assert.deepEqual(started(m, { ...step1, step: 3, weight: 100 }), fresh);
  assert.deepEqual(started(m, { ...step1, phase: 'RolledBack' }), fresh);
});
