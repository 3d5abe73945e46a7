import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import { parseGrpcStatus } from '../telemetry/outcome.js';
import { DEFAULT_HTTP_LIMITS, type HttpLimits } from './http-limits.js';

/** The HTTP/2 connection preface: how an h2c client (prior knowledge, e.g. gRPC) announces itself. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** Whether bytes start with the HTTP/2 preface: `partial` while they are a proper prefix of it. */
export function matchH2Preface(buf: Buffer): 'yes' | 'no' | 'partial' {
  const n = Math.min(buf.length, PREFACE.length);
  if (n === 0 || !buf.subarray(0, n).equals(PREFACE.subarray(0, n))) return 'no';
  return n === PREFACE.length ? 'yes' : 'partial';
}

/**
 * Waits for the first bytes of a connection and tells whether it speaks h2c.
 * The bytes are put back, so whichever parser takes the connection sees them.
 * A connection silent for `timeoutMs` is closed (it would hold a socket for nothing).
 */
export function sniffH2c(conn: Duplex, decide: (h2c: boolean) => void, timeoutMs?: number): void {
  // After a stalled event loop timers run before the reads that were waiting: those go first.
  let spoke = false;
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(() => setImmediate(() => spoke || conn.destroy()), timeoutMs);
  timer?.unref();
  const onData = (chunk: Buffer) => {
    spoke = true;
    clearTimeout(timer);
    conn.off('data', onData);
    conn.pause();
    conn.unshift(chunk);
    decide(matchH2Preface(chunk) !== 'no');
  };
  conn.on('data', onData);
  conn.once('close', () => clearTimeout(timer));
  conn.resume();
}

export type H2StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

/** Serves h2c on one already-accepted connection: a server object per connection keeps the caller's context at hand. */
export function serveH2c(
  conn: Duplex,
  onStream: H2StreamHandler,
  onSession?: (session: ServerHttp2Session) => void,
  limits: HttpLimits = DEFAULT_HTTP_LIMITS,
): void {
  const server = http2.createServer({
    settings: { maxConcurrentStreams: 1000, maxHeaderListSize: limits.maxHeaderBytes },
    // Node counts a header list's pseudo headers too, and refuses the stream (431) beyond this.
    maxHeaderListPairs: limits.maxHeaderCount + 4,
  });
  server.on('session', (session) => {
    closeWhenIdle(session, limits);
    closeOnPrematureResets(session);
    onSession?.(session);
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    // A request body that stops coming (Envoy's stream_idle_timeout); a silent answer (a gRPC watch) is the route's business.
    if (!stream.endAfterHeaders) {
      stream.setTimeout(limits.streamIdleTimeoutMs, () => stream.close(http2.constants.NGHTTP2_CANCEL));
      stream.once('end', () => stream.setTimeout(0));
    }
    onStream(stream, headers);
  });
  server.on('sessionError', () => conn.destroy());
  // A session that fails destroys its connection with the error: the session's end, not the agent's.
  conn.on('error', () => {});
  server.emit('connection', conn);
}

/**
 * HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and resets them at once
 * makes the proxy start upstream work (a request, a CONNECT's dial) for nothing, as fast as it
 * can send frames, and fills the cluster's max_requests for everyone. Envoy's rule: a
 * connection on which more than half the streams were reset within a second of their start is
 * closed once it has had PREMATURE_RESET_MIN_STREAMS of them. Envoy counts 500; one proxy per
 * node shares each cluster's breaker among all of the node's pods, so 100 here.
 */
export function closeOnPrematureResets(session: Http2Session): void {
  let streams = 0;
  let premature = 0;
  session.on('stream', (stream: ServerHttp2Stream) => {
    streams++;
    const started = performance.now();
    stream.once('close', () => {
      if (stream.rstCode === http2.constants.NGHTTP2_NO_ERROR) return;
      if (performance.now() - started > PREMATURE_RESET_MS) return;
      premature++;
      if (premature >= PREMATURE_RESET_MIN_STREAMS && premature * 2 > streams && !session.destroyed) {
        session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
        session.destroy();
      }
    });
  });
}

/** Envoy's premature_reset_min_stream_lifetime_seconds. */
const PREMATURE_RESET_MS = 1000;
export const PREMATURE_RESET_MIN_STREAMS = 100;

/**
 * A session without a stream open closes: after `headersTimeoutMs` until its first stream
 * (a preface cut short, headers that never end), after `idleTimeoutMs` between streams
 * (Envoy's idle_timeout). A silent stream (a gRPC watch) keeps its session.
 */
export function closeWhenIdle(
  session: ServerHttp2Session,
  limits: Pick<HttpLimits, 'headersTimeoutMs' | 'idleTimeoutMs'>,
): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number) => {
    clearTimeout(timer);
    // setImmediate: frames that arrived while the event loop was busy are read before deciding.
    timer = setTimeout(() => setImmediate(() => open === 0 && session.destroy()), ms);
    timer.unref();
  };
  arm(limits.headersTimeoutMs);
  session.on('stream', (stream: ServerHttp2Stream) => {
    open++;
    clearTimeout(timer);
    stream.once('close', () => {
      if (--open === 0 && !session.destroyed) arm(limits.idleTimeoutMs);
    });
  });
  session.once('close', () => clearTimeout(timer));
}

/**
 * What never crosses an HTTP/2 hop (RFC 9113 section 8.2.2) or turns into an
 * h2 header from HTTP/1 (host, http2-settings). Unlike io/headers.ts' HTTP/1
 * list it keeps `te` and `trailer`, which h2 carries (`te: trailers`, gRPC).
 */
const H2_CONNECTION_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

/** Request headers to send upstream: the pseudo headers rebuilt, hop-by-hop ones dropped. */
export function upstreamHeaders(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  method: string,
  path: string,
  authority: string,
): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {
    ':method': method,
    ':path': path,
    ':authority': authority,
    ':scheme': 'http',
  };
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || k.startsWith(':') || H2_CONNECTION_HEADERS.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Response headers to relay back: everything but pseudo headers other than :status. */
function responseHeaders(h: IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || (k.startsWith(':') && k !== ':status') || H2_CONNECTION_HEADERS.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** h2c client sessions, one per key, over a byte stream the caller opens (direct socket or mesh tunnel). */
export class H2cSessions {
  private readonly sessions = new Map<string, Promise<ClientHttp2Session>>();

  /** `idleTimeoutMs`: a session without any frame for that long closes (it must not hold its connection forever). */
  constructor(private readonly opts: { idleTimeoutMs?: number } = {}) {}

  get size(): number {
    return this.sessions.size;
  }

  has(key: string): boolean {
    return this.sessions.has(key);
  }

  /** `ended` runs once when a session this call dialed is over (its connection slot frees). */
  get(key: string, dial: () => Promise<Duplex>, ended?: () => void): Promise<ClientHttp2Session> {
    const cached = this.sessions.get(key);
    if (cached) return cached;
    let over = false;
    const end = () => {
      if (over) return;
      over = true;
      ended?.();
    };
    const p = dial().then(
      (conn) =>
        new Promise<ClientHttp2Session>((resolve, reject) => {
          const s = http2.connect('http://upstream', { createConnection: () => conn });
          const drop = () => {
            if (this.sessions.get(key) === p) this.sessions.delete(key);
          };
          if (this.opts.idleTimeoutMs) s.setTimeout(this.opts.idleTimeoutMs, () => s.close());
          s.once('connect', () => resolve(s));
          s.once('error', (err) => {
            drop();
            reject(err);
          });
          s.once('close', () => {
            drop();
            end();
          });
          s.once('goaway', drop);
          // Carried by a tunnel stream whose session goes away (the far agent drains for an
          // upgrade): new requests go to a new session, the ones in flight finish on this one.
          carrierGoaway(conn, () => {
            drop();
            s.close();
          });
        }),
    );
    p.catch(() => {
      if (this.sessions.get(key) === p) this.sessions.delete(key);
      end();
    });
    this.sessions.set(key, p);
    return p;
  }

  /** Drops sessions whose key starts with the prefix (e.g. a rotated source identity). */
  drop(prefix: string): void {
    this.prune((k) => !k.startsWith(prefix));
  }

  /** Closes the sessions `keep` refuses; their streams in flight finish first. Returns how many went. */
  prune(keep: (key: string) => boolean): number {
    let dropped = 0;
    for (const [k, p] of this.sessions) {
      if (keep(k)) continue;
      this.sessions.delete(k);
      dropped++;
      p.then((s) => s.close()).catch(() => {});
    }
    return dropped;
  }

  close(): void {
    for (const p of this.sessions.values()) p.then((s) => s.destroy()).catch(() => {});
    this.sessions.clear();
  }
}

/** An upstream stream whose response headers have arrived. */
export interface H2Answer {
  stream: ClientHttp2Stream;
  headers: IncomingHttpHeaders;
  /**
   * Trailers that arrived before the relay started listening: a small answer's DATA and
   * trailers can come with its headers, and Node emits 'trailers' before the code awaiting
   * the response runs. Whoever waits for the response captures them from the start.
   */
  early?: { trailers?: IncomingHttpHeaders };
  /**
   * The answer is its HEADERS frame alone (END_STREAM set): the 'response' event's flags say so
   * (Node's `endAfterHeaders` is not set on a client stream).
   */
  headersOnly?: boolean;
  /** Ends whatever timers the caller keeps for the exchange. */
  stop(): void;
}

/** How a relayed h2 answer ended. */
export interface H2Relayed {
  /** The upstream stream ended and everything reached the client. */
  completed: boolean;
  /** grpc-status of a gRPC answer: from its trailers, or from its headers (trailers-only). */
  grpcStatus: number | undefined;
}

/**
 * Relays an upstream answer downstream, trailers included (gRPC status lives
 * there); `extra` headers are added to the response. Resolves when the
 * exchange is over.
 */
export function relayH2Answer(
  down: ServerHttp2Stream,
  a: H2Answer,
  extra: http2.OutgoingHttpHeaders = {},
): Promise<H2Relayed> {
  const up = a.stream;
  let trailers: http2.OutgoingHttpHeaders = {};
  let grpcStatus = parseGrpcStatus(a.headers['grpc-status']);
  return new Promise((resolve) => {
    let done = false;
    const finish = (completed: boolean) => {
      if (done) return;
      done = true;
      a.stop();
      resolve({ completed, grpcStatus });
    };
    // Node may emit the upstream's 'end' (which ends `down` through the pipe and asks for its
    // trailers) before its 'trailers' event: the trailers are sent once they are here or the
    // upstream stream is over, never before (an empty set would lose gRPC's grpc-status).
    let gotTrailers = a.early?.trailers !== undefined;
    if (a.early?.trailers) {
      trailers = responseHeaders(a.early.trailers);
      grpcStatus = parseGrpcStatus(a.early.trailers['grpc-status']) ?? grpcStatus;
    }
    let wanted = false;
    let sent = false;
    const sendTrailers = () => {
      if (sent || down.closed) return;
      sent = true;
      down.sendTrailers(trailers);
    };
    up.on('trailers', (t) => {
      trailers = responseHeaders(t);
      grpcStatus = parseGrpcStatus(t['grpc-status']) ?? grpcStatus;
      gotTrailers = true;
      if (wanted) sendTrailers();
    });
    down.on('wantTrailers', () => {
      wanted = true;
      if (gotTrailers || up.closed) sendTrailers();
      else up.once('close', sendTrailers);
    });
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
      // The client left while the answer was on its way: the upstream stream would hold its slot.
      up.close(http2.constants.NGHTTP2_CANCEL);
      finish(false);
      return;
    }
    if (a.headersOnly) {
      // Trailers-only (gRPC's shape for an error before any message: grpc-status in the one
      // HEADERS frame, END_STREAM set): relayed in that shape. Headers, then an empty trailer
      // set, would carry no grpc-status where clients read it ("Call ended without gRPC status").
      down.respond({ ...responseHeaders(a.headers), ...extra }, { endStream: true });
      up.resume();
      finish(true);
      return;
    }
    down.respond({ ...responseHeaders(a.headers), ...extra }, { waitForTrailers: true });
    up.pipe(down);
  });
}

/**
 * Forwards one h2 stream upstream, once (no retries: the inbound side's
 * delivery to a local pod), and relays the answer. Resolves with the upstream
 * status when the exchange completed, undefined otherwise.
 */
export function forwardH2(
  down: ServerHttp2Stream,
  session: ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
): Promise<number | undefined> {
  const unanswered = () => {
    if (down.closed) return;
    if (down.headersSent) down.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    else {
      down.respond({ ':status': 503, 'x-sockmesh-reason': 'local pod reset the stream' });
      down.end();
    }
  };
  let up: ClientHttp2Stream;
  try {
    up = session.request(headers);
  } catch {
    unanswered();
    return Promise.resolve(undefined);
  }
  down.pipe(up);
  return new Promise((resolve) => {
    let answered = false;
    up.on('error', () => {});
    // A client that resets before the answer cancels the call upstream (a gRPC watch, say).
    down.once('close', () => {
      if (!answered && !up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
    });
    up.once('response', (h, flags) => {
      answered = true;
      relayH2Answer(down, { stream: up, headers: h, headersOnly: endsStream(flags), stop: () => {} }).then(
        (r) => resolve(r.completed ? Number(h[':status']) : undefined),
      );
    });
    up.once('close', () => {
      if (!answered) {
        unanswered();
        resolve(undefined);
      }
    });
  });
}

/**
 * Calls `fn` once when the HTTP/2 session carrying `conn` (a CONNECT stream of the mesh
 * tunnel) receives GOAWAY; a plain socket has no such carrier.
 */
export function carrierGoaway(conn: Duplex, fn: () => void): void {
  const session = (conn as { session?: { once?: unknown } }).session;
  if (!session || typeof session.once !== 'function') return;
  const s = session as ClientHttp2Session;
  s.once('goaway', fn);
  // One listener per stream on a session that outlives thousands of them: it goes with its stream.
  conn.once('close', () => s.off('goaway', fn));
}

/** The flags of a 'response' event: END_STREAM set, i.e. no body and no trailers follow. */
export function endsStream(flags: number): boolean {
  return (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
}
