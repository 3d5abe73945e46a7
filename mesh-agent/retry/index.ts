export {
  type AttemptOutcome,
  attemptTimeoutMs,
  backoffMs,
  DEFAULT_BACKOFF_BASE_MS,
  decideRetry,
  isRetriable,
  parseRetryPolicy,
  type RetryCondition,
  type RetryDecision,
  type RetryPolicy,
} from './policy.js';
