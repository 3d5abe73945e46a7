/**
 * One h2c attempt upstream and the relay of its answer: the h2c half of the
 * attempt loop in attempts.ts (HTTP/1.1 uses an undici Pool instead).
 */
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { responseHeaders } from '../io/h2c.js';
import type { AttemptResult } from './attempts.js';
import type { ReplayableBody } from './replay-body.js';

/** An upstream stream whose response headers have arrived. */
export interface H2Answer {
  stream: ClientHttp2Stream;
  headers: IncomingHttpHeaders;
  /** Ends the attempt's timers. */
  stop(): void;
}

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
    up.once('response', (h) => {
      answered = true;
      resolve({ kind: 'response', status: Number(h[':status']), response: { stream: up, headers: h, stop } });
    });
    body?.pipeTo(up);
  });
}

/** Drops an answer that is being retried past. */
export function discardH2(a: H2Answer): void {
  a.stop();
  if (!a.stream.closed) a.stream.close(http2.constants.NGHTTP2_CANCEL);
}

/**
 * Relays an upstream answer downstream, trailers included (gRPC status lives
 * there); `extra` headers are added to the response. Resolves when the
 * exchange is over, true when it completed.
 */
export function relayH2Answer(
  down: ServerHttp2Stream,
  a: H2Answer,
  extra: OutgoingHttpHeaders = {},
): Promise<boolean> {
  const up = a.stream;
  let trailers: OutgoingHttpHeaders = {};
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      a.stop();
      resolve(ok);
    };
    up.on('trailers', (t) => {
      trailers = responseHeaders(t);
    });
    down.on('wantTrailers', () => down.sendTrailers(trailers));
    down.on('close', () => {
      if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
      finish(false);
    });
    up.once('end', () => finish(true));
    up.once('close', () => {
      if (!up.readableEnded) {
        if (!down.closed) down.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        finish(false);
      }
    });
    if (down.closed) {
      finish(false);
      return;
    }
    down.respond({ ...responseHeaders(a.headers), ...extra }, { waitForTrailers: true });
    up.pipe(down);
  });
}
