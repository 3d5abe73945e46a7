/**
 * The upstream attempt loop of one proxied request, the same for HTTP/1.1
 * and h2c: pick an endpoint, authorize a local one, bound the attempt by the
 * per-try timeout and what is left of the route timeout, and on a retriable
 * outcome retry after Envoy's back-off while the retry breaker has room and
 * the request body can still be replayed. The transport supplies `attempt`.
 */
import { grpcToHttpStatus } from '../telemetry/outcome.js';
import type { Endpoint, Outcome, ResponseFlag, RetryPlan, UpstreamCluster } from './plan.js';

/** Retries replay the request body, so only bodies up to this size are kept for them (Envoy's default buffer). */
export const MAX_REPLAY_BODY = 64 * 1024;

/** How one upstream attempt ended, as the transport reports it. */
export type AttemptResult<R> =
  /**
   * Response headers arrived; `response` is the transport's handle to relay or drop them.
   * grpcStatus: a trailers-only gRPC answer's status. grpcInTrailers: a gRPC answer whose
   * status comes in trailers after its messages, known only once it has been relayed.
   */
  | {
      kind: 'response';
      status: number;
      response: R;
      grpcStatus?: number | undefined;
      grpcInTrailers?: boolean | undefined;
    }
  | { kind: 'failed'; outcome: Outcome; flag: ResponseFlag; err?: unknown }
  /**
   * Ended on this side before reaching the endpoint: the pending queue overflowed
   * (UO) or the request's time ran out waiting for a connection (UT).
   */
  | { kind: 'local'; flag: 'UO' | 'UT' };

export interface AttemptLoop<R> {
  cluster: UpstreamCluster;
  hashKey: string | undefined;
  retry: RetryPlan | undefined;
  /** False once the request body can no longer be replayed (too big, or streamed). */
  replayable(): boolean;
  /** performance.now() by which the whole request must be answered; undefined = no route timeout. */
  deadline: number | undefined;
  /** Authorizes a local endpoint (and may set per-endpoint headers); a policy name when denied. */
  admit(ep: Endpoint): { denied: string } | undefined;
  /** One try against ep, bounded by budgetMs (undefined = unbounded). */
  attempt(ep: Endpoint, budgetMs: number | undefined, n: number): Promise<AttemptResult<R>>;
  /** Drops a response that is being retried past. */
  discard(response: R): void;
  /** The retry breaker (max retries) is full: count it (the answer carries UO). */
  retryOverflow(): void;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

export type AttemptsEnd<R> =
  /**
   * Relay this response; call done once it has been relayed, with the grpc-status its trailers
   * carried (outlier detection hears of a gRPC answer whose status comes in trailers then).
   */
  | {
      kind: 'response';
      status: number;
      response: R;
      ep: Endpoint;
      attempts: number;
      /** UO: a retry was due but the retry breaker was full (Envoy relays the answer it has). */
      flag: '-' | 'URX' | 'UO';
      done: (trailerGrpcStatus?: number) => void;
    }
  /** 403 UAEX: local policy, or the remote node refused the tunnel. */
  | { kind: 'denied'; ep: Endpoint; attempts: number; policy: string | undefined }
  /** Answer 504 for UT, 503 otherwise. */
  | { kind: 'failed'; flag: ResponseFlag; ep: Endpoint | undefined; attempts: number };

export async function runAttempts<R>(loop: AttemptLoop<R>): Promise<AttemptsEnd<R>> {
  const { cluster, retry } = loop;
  const now = loop.now ?? (() => performance.now());
  const sleep = loop.sleep ?? defaultSleep;
  const exhausted = (attempt: number, outcome: Outcome) =>
    retry === undefined || !loop.replayable() || attempt > retry.numRetries || !retry.shouldRetry(outcome);
  /**
   * Envoy's max_retries bounds the retries outstanding in the cluster: a slot
   * is taken when a retry is scheduled and held through its back-off and its
   * try, until that try's outcome is known.
   */
  let retrySlot: (() => void) | undefined;
  const endRetry = () => {
    retrySlot?.();
    retrySlot = undefined;
  };
  const takeRetry = (): boolean => {
    const got = cluster.tryAcquire('retry');
    if (!got) {
      loop.retryOverflow();
      return false;
    }
    retrySlot = got;
    return true;
  };
  let attempt = 0;
  let lastFlag: ResponseFlag = 'UF';
  let lastEp: Endpoint | undefined;
  try {
    for (;;) {
      attempt++;
      if (attempt > 1) await sleep(retry!.backoffMs(attempt - 1));
      const ep = cluster.pick(loop.hashKey);
      if (!ep) {
        lastFlag = 'UH';
        break;
      }
      lastEp = ep;
      const refusal = loop.admit(ep);
      if (refusal) return { kind: 'denied', ep, attempts: attempt, policy: refusal.denied };
      const remaining = loop.deadline === undefined ? undefined : loop.deadline - now();
      if (remaining !== undefined && remaining <= 0) {
        lastFlag = 'UT';
        break;
      }
      const budget = minDefined(retry?.perTryTimeoutMs, remaining);
      const untrack = cluster.track(ep);
      const result = await loop.attempt(ep, budget, attempt);
      endRetry();
      if (result.kind === 'local') {
        // Decided on this side (no connection to be had): neither retried nor held against the endpoint.
        untrack();
        lastFlag = result.flag;
        break;
      }
      if (result.kind === 'response') {
        const { status, grpcStatus } = result;
        const outcome: Outcome =
          status >= 500 || (grpcStatus !== undefined && grpcStatus !== 0)
            ? { kind: 'status', status, grpcStatus }
            : { kind: 'success' };
        // Outlier detection sees a gRPC answer as Envoy's router does: its grpc-status mapped to HTTP.
        // One whose status comes after its messages is reported once the trailers are in: a 200
        // now would reset the endpoint's consecutive failures on every call that fails midway.
        const deferred = result.grpcInTrailers === true && grpcStatus === undefined && status < 500;
        if (!deferred)
          cluster.report(ep, {
            kind: 'status',
            status: grpcStatus === undefined ? status : grpcToHttpStatus(grpcStatus),
          });
        // HTTP/1.1 and every answer reported above get untrack itself: nothing more per request.
        const done = deferred
          ? (trailerGrpcStatus?: number) => {
              untrack();
              // No grpc-status (the caller left, or the stream was reset midway): held neither for nor against it.
              if (trailerGrpcStatus !== undefined)
                cluster.report(ep, { kind: 'status', status: grpcToHttpStatus(trailerGrpcStatus) });
            }
          : untrack;
        const relay = (flag: '-' | 'URX' | 'UO'): AttemptsEnd<R> => ({
          kind: 'response',
          status: result.status,
          response: result.response,
          ep,
          attempts: attempt,
          flag,
          done,
        });
        if (outcome.kind === 'success') return relay('-');
        if (exhausted(attempt, outcome)) return relay(attempt > 1 ? 'URX' : '-');
        // Envoy relays the answer it has when the retry breaker is full, flagged UO.
        if (!takeRetry()) return relay('UO');
        loop.discard(result.response);
        untrack();
        lastFlag = 'URX';
        continue;
      }
      untrack();
      cluster.report(ep, result.outcome);
      lastFlag = result.flag;
      if (lastFlag === 'UAEX') return { kind: 'denied', ep, attempts: attempt, policy: deniedBy(result.err) };
      if (exhausted(attempt, result.outcome)) break;
      if (!takeRetry()) {
        lastFlag = 'UO';
        break;
      }
    }
  } finally {
    endRetry();
  }
  return { kind: 'failed', flag: lastFlag, ep: lastEp, attempts: attempt };
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

function defaultSleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}

/** The policy a refusal names (a tunnel's 403 carries the far side's), if any. */
function deniedBy(err: unknown): string | undefined {
  const policy = (err as { policy?: unknown } | undefined)?.policy;
  return typeof policy === 'string' ? policy : undefined;
}
