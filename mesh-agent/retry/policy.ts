/**
 * envoy.config.route.v3.RetryPolicy: which outcomes are retried, how many
 * times, with what per-try timeout and back-off. The decision is pure; the
 * proxy still has to take a retry token from the cluster's circuit breaker.
 */
import {
  decodeError,
  list,
  obj,
  optDurationMs,
  optStr,
  optUint,
  optUintWrapper,
  type Wire,
} from '../state/wire.js';

/** The retry_on conditions sockmesh understands (Envoy's names). */
export type RetryCondition =
  | '5xx'
  | 'gateway-error'
  | 'connect-failure'
  | 'reset'
  | 'retriable-status-codes'
  | 'retriable-4xx'
  | 'refused-stream'
  | GrpcRetryCondition;

/**
 * Envoy's gRPC words (its retry_grpc_on), matched on the grpc-status of a trailers-only answer
 * (an error before any message, the only gRPC answer a retry can still replace).
 */
type GrpcRetryCondition =
  | 'cancelled'
  | 'deadline-exceeded'
  | 'resource-exhausted'
  | 'internal'
  | 'unavailable';
const GRPC_CODES: Record<GrpcRetryCondition, number> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
};

const KNOWN: readonly RetryCondition[] = [
  ...(Object.keys(GRPC_CODES) as GrpcRetryCondition[]),
  '5xx',
  'gateway-error',
  'connect-failure',
  'reset',
  'retriable-status-codes',
  'retriable-4xx',
  'refused-stream',
];

/** How one upstream attempt ended. */
export type AttemptOutcome =
  /** grpcStatus: a gRPC answer's status when the answer was trailers-only. */
  | { kind: 'response'; status: number; grpcStatus?: number | undefined }
  /** Refused, unreachable, TLS/tunnel setup failed, or connect_timeout expired. */
  | { kind: 'connect-failure' }
  /** The upstream closed or reset the connection/stream before a response. */
  | { kind: 'reset' }
  /** HTTP/2 REFUSED_STREAM: the request was never processed. */
  | { kind: 'refused-stream' }
  | { kind: 'per-try-timeout' };

export interface RetryPolicy {
  conditions: ReadonlySet<RetryCondition>;
  /** retry_on tokens this agent does not implement; kept for logs, never retried on. */
  ignoredConditions: readonly string[];
  /** Retries after the first attempt (Envoy default 1 when a policy is present). */
  numRetries: number;
  /** Per attempt; undefined means only the route timeout applies. */
  perTryTimeoutMs: number | undefined;
  retriableStatusCodes: ReadonlySet<number>;
  backoff: { baseMs: number; maxMs: number };
}

export const DEFAULT_BACKOFF_BASE_MS = 25;

/** Parses a route's (or virtual host's) retry_policy. */
export function parseRetryPolicy(v: unknown, path: string): RetryPolicy {
  const p: Wire = obj(v, path);
  const tokens = (optStr(p.retry_on, `${path}.retry_on`) ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  const conditions = new Set<RetryCondition>();
  const ignored: string[] = [];
  for (const t of tokens) {
    if ((KNOWN as readonly string[]).includes(t)) conditions.add(t as RetryCondition);
    else ignored.push(t);
  }
  const codes = new Set<number>();
  list(p.retriable_status_codes, `${path}.retriable_status_codes`).forEach((c, i) => {
    const code = optUint(c, `${path}.retriable_status_codes[${i}]`, 599);
    if (code !== undefined) codes.add(code);
  });
  let baseMs = DEFAULT_BACKOFF_BASE_MS;
  let maxMs: number | undefined;
  if (p.retry_back_off !== undefined && p.retry_back_off !== null) {
    const b = obj(p.retry_back_off, `${path}.retry_back_off`);
    const base = optDurationMs(b.base_interval, `${path}.retry_back_off.base_interval`);
    if (base === undefined || base <= 0) {
      throw decodeError(`${path}.retry_back_off.base_interval`, 'is required and must be greater than zero');
    }
    baseMs = base;
    maxMs = optDurationMs(b.max_interval, `${path}.retry_back_off.max_interval`);
    if (maxMs !== undefined && maxMs < baseMs) {
      throw decodeError(`${path}.retry_back_off.max_interval`, 'must not be less than base_interval');
    }
  }
  const perTry = optDurationMs(p.per_try_timeout, `${path}.per_try_timeout`);
  return {
    conditions,
    ignoredConditions: ignored,
    numRetries: optUintWrapper(p.num_retries, `${path}.num_retries`) ?? 1,
    perTryTimeoutMs: perTry === 0 ? undefined : perTry,
    retriableStatusCodes: codes,
    backoff: { baseMs, maxMs: maxMs ?? baseMs * 10 },
  };
}

function isGatewayError(status: number): boolean {
  return status === 502 || status === 503 || status === 504;
}

/** Whether this outcome is one the policy retries on (ignores the attempt budget). */
export function isRetriable(policy: RetryPolicy, outcome: AttemptOutcome): boolean {
  const c = policy.conditions;
  switch (outcome.kind) {
    case 'response': {
      const s = outcome.status;
      const g = outcome.grpcStatus;
      if (g !== undefined)
        for (const [word, code] of Object.entries(GRPC_CODES))
          if (g === code && c.has(word as GrpcRetryCondition)) return true;
      if (c.has('5xx') && s >= 500 && s <= 599) return true;
      if (c.has('gateway-error') && isGatewayError(s)) return true;
      if (c.has('retriable-4xx') && s === 409) return true;
      return c.has('retriable-status-codes') && policy.retriableStatusCodes.has(s);
    }
    // Envoy counts a failed connect and an upstream reset as a 5xx-class failure.
    case 'connect-failure':
      return c.has('connect-failure') || c.has('5xx') || c.has('gateway-error') || c.has('reset');
    case 'reset':
      return c.has('reset') || c.has('5xx') || c.has('gateway-error');
    case 'refused-stream':
      return c.has('refused-stream') || c.has('reset') || c.has('5xx') || c.has('gateway-error');
    case 'per-try-timeout':
      return c.has('5xx') || c.has('gateway-error') || c.has('reset');
  }
}

export type RetryDecision =
  | { retry: true; backoffMs: number }
  | { retry: false; reason: 'not-retriable' | 'retries-exhausted' };

/**
 * After an attempt failed with `outcome`, having already made `retriesDone`
 * retries: retry (after `backoffMs`) or give up. `rand` is in [0, 1).
 */
export function decideRetry(
  policy: RetryPolicy,
  outcome: AttemptOutcome,
  retriesDone: number,
  rand: () => number = Math.random,
): RetryDecision {
  if (!isRetriable(policy, outcome)) return { retry: false, reason: 'not-retriable' };
  if (retriesDone >= policy.numRetries) return { retry: false, reason: 'retries-exhausted' };
  return { retry: true, backoffMs: backoffMs(policy.backoff, retriesDone + 1, rand) };
}

/**
 * Envoy's jittered exponential back-off: the n-th retry (n >= 1) waits a
 * uniformly random time in [0, min((2^n - 1) * base, max)).
 */
export function backoffMs(
  backoff: { baseMs: number; maxMs: number },
  retryNumber: number,
  rand: () => number = Math.random,
): number {
  const n = Math.max(1, Math.min(retryNumber, 32));
  const ceiling = Math.min((2 ** n - 1) * backoff.baseMs, backoff.maxMs);
  return Math.floor(rand() * ceiling);
}

/**
 * The timeout for the next attempt: the per-try timeout, bounded by what is
 * left of the route timeout (null = no route timeout). Undefined = no limit.
 */
export function attemptTimeoutMs(
  policy: RetryPolicy | undefined,
  remainingRouteMs: number | null,
): number | undefined {
  const perTry = policy?.perTryTimeoutMs;
  if (remainingRouteMs === null) return perTry;
  if (perTry === undefined) return Math.max(0, remainingRouteMs);
  return Math.max(0, Math.min(perTry, remainingRouteMs));
}
