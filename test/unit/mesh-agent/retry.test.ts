import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type AttemptOutcome,
  attemptTimeoutMs,
  backoffMs,
  decideRetry,
  isRetriable,
  parseRetryPolicy,
} from '../../../mesh-agent/retry/index.js';

const policy = (retryOn: string, extra: Record<string, unknown> = {}) =>
  parseRetryPolicy({ retry_on: retryOn, ...extra }, 'rp');

const outcomes: Record<string, AttemptOutcome> = {
  500: { kind: 'response', status: 500 },
  502: { kind: 'response', status: 502 },
  503: { kind: 'response', status: 503 },
  409: { kind: 'response', status: 409 },
  429: { kind: 'response', status: 429 },
  200: { kind: 'response', status: 200 },
  connect: { kind: 'connect-failure' },
  reset: { kind: 'reset' },
  refused: { kind: 'refused-stream' },
  timeout: { kind: 'per-try-timeout' },
  // gRPC answers are HTTP 200; a trailers-only answer's grpc-status decides (Envoy's retry_grpc_on words).
  grpcCancelled: { kind: 'response', status: 200, grpcStatus: 1 },
  grpcDeadline: { kind: 'response', status: 200, grpcStatus: 4 },
  grpcExhausted: { kind: 'response', status: 200, grpcStatus: 8 },
  grpcInternal: { kind: 'response', status: 200, grpcStatus: 13 },
  grpcUnavailable: { kind: 'response', status: 200, grpcStatus: 14 },
  grpcNotFound: { kind: 'response', status: 200, grpcStatus: 5 },
  grpcOk: { kind: 'response', status: 200, grpcStatus: 0 },
};

describe('retry_on conditions', () => {
  const table: Array<[string, string[]]> = [
    ['5xx', ['500', '502', '503', 'connect', 'reset', 'refused', 'timeout']],
    ['gateway-error', ['502', '503', 'connect', 'reset', 'refused', 'timeout']],
    ['connect-failure', ['connect']],
    ['reset', ['connect', 'reset', 'refused', 'timeout']],
    ['refused-stream', ['refused']],
    ['retriable-4xx', ['409']],
    ['retriable-status-codes', ['429']],
    ['cancelled', ['grpcCancelled']],
    ['deadline-exceeded', ['grpcDeadline']],
    ['resource-exhausted', ['grpcExhausted']],
    ['internal', ['grpcInternal']],
    ['unavailable', ['grpcUnavailable']],
    [
      'unavailable,internal,5xx',
      ['grpcUnavailable', 'grpcInternal', '500', '502', '503', 'connect', 'reset', 'refused', 'timeout'],
    ],
    ['', []],
    ['unknown-thing', []],
  ];
  for (const [retryOn, expected] of table) {
    it(retryOn || '(none)', () => {
      const p = policy(retryOn, { retriable_status_codes: [429] });
      const got = Object.keys(outcomes).filter((k) => isRetriable(p, outcomes[k]!));
      assert.deepEqual(got.sort(), [...expected].sort());
    });
  }

  it('keeps unknown tokens for logs', () => {
    assert.deepEqual(policy('5xx, bogus ,reset').ignoredConditions, ['bogus']);
  });
});

describe('decideRetry', () => {
  it('defaults to one retry and stops when the budget is spent', () => {
    const p = policy('5xx');
    assert.equal(p.numRetries, 1);
    assert.deepEqual(
      decideRetry(p, outcomes[503]!, 0, () => 0),
      { retry: true, backoffMs: 0 },
    );
    assert.deepEqual(decideRetry(p, outcomes[503]!, 1), { retry: false, reason: 'retries-exhausted' });
    assert.deepEqual(decideRetry(p, outcomes[200]!, 0), { retry: false, reason: 'not-retriable' });
  });

  it('num_retries from the wrapper', () => {
    const p = policy('connect-failure', { num_retries: { value: 3 } });
    assert.ok(decideRetry(p, outcomes.connect!, 2).retry);
    assert.ok(!decideRetry(p, outcomes.connect!, 3).retry);
  });
});

describe('back-off', () => {
  it('Envoy defaults: base 25 ms, max 250 ms, full jitter over (2^n - 1) x base', () => {
    const p = policy('5xx');
    assert.deepEqual(p.backoff, { baseMs: 25, maxMs: 250 });
    const top = (n: number) => backoffMs(p.backoff, n, () => 0.999999);
    assert.deepEqual([1, 2, 3, 4, 5].map(top), [24, 74, 174, 249, 249]);
    assert.equal(
      backoffMs(p.backoff, 3, () => 0),
      0,
    );
  });

  it('retry_back_off overrides, max defaults to 10 x base', () => {
    const p = policy('5xx', { retry_back_off: { base_interval: { seconds: '0', nanos: 100_000_000 } } });
    assert.deepEqual(p.backoff, { baseMs: 100, maxMs: 1000 });
    assert.throws(
      () => policy('5xx', { retry_back_off: { max_interval: { seconds: '1' } } }),
      /base_interval: is required/,
    );
    assert.throws(
      () =>
        policy('5xx', {
          retry_back_off: { base_interval: { seconds: '2' }, max_interval: { seconds: '1' } },
        }),
      /must not be less than base_interval/,
    );
  });

  it('the jitter is spread over the whole window', () => {
    const p = policy('5xx');
    let seed = 1;
    const rand = () => {
      seed = (seed * 16807) % 2147483647;
      return (seed - 1) / 2147483646;
    };
    const samples = Array.from({ length: 2000 }, () => backoffMs(p.backoff, 2, rand));
    assert.ok(Math.min(...samples) < 5 && Math.max(...samples) > 70);
  });
});

describe('attemptTimeoutMs', () => {
  const p = policy('5xx', { per_try_timeout: { seconds: '0', nanos: 250_000_000 } });
  it('per-try bounded by what is left of the route timeout', () => {
    assert.equal(p.perTryTimeoutMs, 250);
    assert.equal(attemptTimeoutMs(p, 1000), 250);
    assert.equal(attemptTimeoutMs(p, 100), 100);
    assert.equal(attemptTimeoutMs(p, -5), 0);
    assert.equal(attemptTimeoutMs(p, null), 250);
    assert.equal(attemptTimeoutMs(undefined, 700), 700);
    assert.equal(attemptTimeoutMs(undefined, null), undefined);
    assert.equal(policy('5xx', { per_try_timeout: { seconds: '0' } }).perTryTimeoutMs, undefined);
  });
});
