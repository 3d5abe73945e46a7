/**
 * One h2c attempt upstream: the h2c half of the attempt loop in attempts.ts
 * (HTTP/1.1 uses an undici Pool instead); io/h2c.ts relays the answer.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import { endsStream, type H2Answer } from '../io/h2c.js';
import { parseGrpcStatus } from '../telemetry/outcome.js';
import type { AttemptResult } from './attempts.js';
import type { ReplayableBody } from './replay-body.js';

/**
 * Sends one request on session and waits for its response headers. The
 * per-try budget covers the whole exchange (like the HTTP/1.1 path's abort
 * signal): expiring before the headers is a retriable timeout, after them it
 * resets the stream. idleMs is the route's stream idle timeout.
 */
export function h2cAttempt(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  body: ReplayableBody | null,
  budgetMs: number | undefined,
  idleMs: number | undefined,
): Promise<AttemptResult<H2Answer>> {
  let up: ClientHttp2Stream;
  try {
    up = session.request(headers, { endStream: body === null });
  } catch (err) {
    return Promise.resolve({ kind: 'failed', outcome: { kind: 'reset' }, flag: 'UR', err });
  }
  // Listening from the start: trailers can be emitted before the relay is set up (see H2Answer.early).
  const early: { trailers?: http2.IncomingHttpHeaders } = {};
  up.once('trailers', (t) => {
    early.trailers = t;
  });
  return new Promise((resolve) => {
    let answered = false;
    let timer: NodeJS.Timeout | undefined;
    const stop = () => {
      if (timer) clearTimeout(timer);
      up.setTimeout(0);
    };
    const fail = (r: AttemptResult<H2Answer>) => {
      stop();
      if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
      resolve(r);
    };
    const expire = () => {
      if (answered) up.close(http2.constants.NGHTTP2_CANCEL);
      else fail({ kind: 'failed', outcome: { kind: 'timeout' }, flag: 'UT' });
    };
    if (budgetMs !== undefined) timer = setTimeout(expire, Math.max(1, Math.ceil(budgetMs)));
    if (idleMs) up.setTimeout(idleMs, expire);
    up.on('error', (err) => {
      if (!answered) fail({ kind: 'failed', outcome: { kind: 'reset' }, flag: 'UR', err });
    });
    up.once('close', () => {
      stop();
      if (answered) return;
      // REFUSED_STREAM: never processed upstream, always safe to retry.
      const refused = up.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
      fail({
        kind: 'failed',
        outcome: { kind: 'reset' },
        flag: 'UR',
        err: refused ? 'refused-stream' : undefined,
      });
    });
    up.once('response', (h, flags) => {
      answered = true;
      const headersOnly = endsStream(flags);
      resolve({
        kind: 'response',
        status: Number(h[':status']),
        // Trailers-only: a gRPC error before any message, which retries and outlier detection read.
        grpcStatus: headersOnly ? parseGrpcStatus(h['grpc-status']) : undefined,
        // Otherwise a gRPC answer's status comes in its trailers, after the messages.
        grpcInTrailers: !headersOnly && isGrpc(h['content-type']),
        response: { stream: up, headers: h, early, headersOnly, stop },
      });
    });
    body?.pipeTo(up);
  });
}

/** application/grpc, +proto, +json and the like (the gRPC over HTTP/2 spec's content types). */
function isGrpc(contentType: string | undefined): boolean {
  return contentType?.startsWith('application/grpc') === true;
}

/** Drops an answer that is being retried past. */
export function discardH2(a: H2Answer): void {
  a.stop();
  if (!a.stream.closed) a.stream.close(http2.constants.NGHTTP2_CANCEL);
}
