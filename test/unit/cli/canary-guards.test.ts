// `sockmesh canary` without a route: one line per guard, then each guard's last change and decision.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderGuards } from '../../../cli/commands/canary.js';
import type { CanaryStatus } from '../../../xds/server/canary.js';

const base: CanaryStatus = {
  name: 'shop/reviews',
  route: 'shop/reviews',
  canary: 'shop/reviews-v2',
  baseline: 'shop/reviews-v1',
  phase: 'Progressing',
  weight: 10,
  writtenWeight: 10,
  steps: [],
  step: -1,
  intervalMs: 10_000,
  fingerprint: '0123456789abcdef0123456789abcdef',
};

test('no guard', () => {
  assert.equal(renderGuards([]), 'no CanaryGuard declared\n');
});

test('a guard with no decision yet, and one rolled back with its figures', () => {
  const out = renderGuards([
    { ...base, name: 'shop/new', steps: [25, 50, 100] },
    {
      ...base,
      name: 'shop/greeter',
      route: 'shop/greeter',
      routeKind: 'GRPCRoute',
      canary: 'shop/greeter-v2',
    },
    {
      ...base,
      phase: 'RolledBack',
      weight: 0,
      lastTransition: {
        at: '2026-12-07T07:56:31.548Z',
        reason: 'SuccessRateBelowBound',
        message: 'canary success rate 50 % < 95 %: weight 10 -> 0',
        from: 10,
        to: 0,
      },
      lastDecision: {
        at: '2026-12-07T07:56:31.548Z',
        action: 'RollBack',
        reason: 'SuccessRateBelowBound',
        message: 'canary success rate 50 % < 95 %: weight 10 -> 0',
        canary: { requests: 40, successRate: 50, p99: null },
        baseline: { requests: 400, successRate: 100, p99: 25 },
      },
    },
  ]);
  const lines = out.split('\n');
  assert.match(lines[0]!, /^GUARD\s+ROUTE\s+CANARY\s+STATE\s+WEIGHT\s+STEP\s+LAST DECISION$/);
  assert.match(
    lines[1]!,
    /^shop\/new\s+shop\/reviews\s+shop\/reviews-v2\s+progressing\s+10%\s+0\/3 \(25,50,100\)\s+\(none yet\)$/,
  );
  assert.match(
    lines[2]!,
    /^shop\/greeter\s+shop\/greeter \(GRPCRoute\)\s+shop\/greeter-v2\s+progressing\s+10%/,
  );
  assert.match(
    lines[3]!,
    /^shop\/reviews\s+shop\/reviews\s+shop\/reviews-v2\s+rolled back\s+0%\s+-\s+RollBack SuccessRateBelowBound$/,
  );
  assert.equal(
    lines[4],
    'shop/reviews: 10% -> 0% at 2026-12-07T07:56:31.548Z: canary success rate 50 % < 95 %: weight 10 -> 0',
  );
  assert.equal(
    lines[5],
    'shop/reviews: last decision 2026-12-07T07:56:31.548Z: canary success rate 50 % < 95 %: weight 10 -> 0; canary 40 requests, success 50%, p99 -; baseline 400 requests, success 100%, p99 25ms',
  );
});
