import http, { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * What a client of the proxy's HTTP servers (15001, 15006, and HTTP parsed
 * behind 15008) may hold, with Envoy's names and defaults where it has them.
 * A connection that breaks one is answered as Envoy answers and closed.
 */
export interface HttpLimits {
  /**
   * Request headers must be complete this long after the request's first byte (Envoy's
   * request_headers_timeout, which Envoy's edge guidance sets to 10 s): slowloris holds nothing
   * longer. 408 on HTTP/1.1. node:http (15006, 15008) also counts it from the accept, so a new
   * connection must speak within it there; on 15001 (io/http1-server.ts) a silent connection is
   * left to idleTimeoutMs, as in Envoy.
   */
  headersTimeoutMs: number;
  /** A connection (or h2c session) with no request in flight closes after this long (Envoy's idle_timeout). */
  idleTimeoutMs: number;
  /**
   * A request body that stops coming for this long ends the request: 408 if nothing was
   * answered yet, else the connection (h2: the stream) is reset (Envoy's stream_idle_timeout).
   * A body that keeps coming, however slowly, may take as long as it needs, as in Envoy.
   * The lean relay (inbound/http1-relay.ts) counts bytes either way while a request is under way.
   */
  streamIdleTimeoutMs: number;
  /** Request headers larger than this are answered 431 (Envoy's max_request_headers_kb: 60). */
  maxHeaderBytes: number;
  /** More request headers than this are answered 431 (Envoy's max_request_headers_count: 100). */
  maxHeaderCount: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  streamIdleTimeoutMs: 300_000,
  maxHeaderBytes: 60 * 1024,
  maxHeaderCount: 100,
};

export function httpLimits(given: Partial<HttpLimits> = {}): HttpLimits {
  return { ...DEFAULT_HTTP_LIMITS, ...given };
}

/**
 * An HTTP/1.1 server for connections handed to it one by one (`emit('connection')`), never
 * listening itself. A request the parser refuses (smuggling attempts: CL with TE, two
 * Content-Lengths, an obfuscated Transfer-Encoding, bare LF...) is answered 400, headers
 * over the limit 431, headers too slow 408, and the connection closes; nothing of it reaches
 * the handler, so nothing of it goes upstream.
 */
export function http1Server(limits: HttpLimits, onRequest: http.RequestListener): http.Server {
  const server = http.createServer(
    {
      keepAliveTimeout: limits.idleTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      // Bodies may stream for as long as they keep coming (uploads, long polls), as in Envoy.
      requestTimeout: 0,
      maxHeaderSize: limits.maxHeaderBytes,
      // How often headersTimeout is checked: the bound is met within a quarter of it.
      connectionsCheckingInterval: Math.max(100, Math.floor(limits.headersTimeoutMs / 4)),
    },
    (req, res) => {
      // Node keeps the first maxHeadersCount headers and drops the rest without a word.
      if (req.rawHeaders.length / 2 > limits.maxHeaderCount) {
        res.shouldKeepAlive = false;
        res.writeHead(431, { 'content-type': 'text/plain' });
        res.end(`request header fields too large: more than ${limits.maxHeaderCount} headers\n`);
        req.resume();
        return;
      }
      const bodied =
        req.headers['transfer-encoding'] !== undefined ||
        (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
      if (bodied && !req.complete) bodyIdle(req, res, limits.streamIdleTimeoutMs);
      onRequest(req, res);
    },
  );
  server.maxHeadersCount = limits.maxHeaderCount + 1;
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => refuse(socket, err));
  // Without a listener Node drops the socket without a word; Envoy answers a CONNECT no route allows with 404.
  server.on('connect', (_req: http.IncomingMessage, socket: Duplex) =>
    answerAndClose(socket, 404, 'no route: CONNECT is not proxied on this port\n'),
  );
  // The headers timeout is enforced over the connections of a listening server only; this one
  // is given its connections, so it is told it listens (close() stops the checks).
  server.emit('listening');
  return server;
}

/** Ends a request whose body stalls: no byte from the client for `ms` while the body is unfinished. */
function bodyIdle(req: http.IncomingMessage, res: http.ServerResponse, ms: number): void {
  const socket = req.socket as Duplex;
  const timer = setTimeout(() => {
    // The body is all in (the handler may never read it to its 'end'): nothing stalled.
    if (req.complete) return stop();
    if (res.headersSent) socket.destroy();
    else answerAndClose(socket, 408, `request timeout: no request body byte for ${ms} ms\n`);
  }, ms);
  timer.unref();
  const seen = () => timer.refresh();
  const stop = () => {
    clearTimeout(timer);
    socket.off('data', seen);
  };
  // The socket's bytes, not the request's: reading the body here would take it from the handler.
  socket.on('data', seen);
  req.once('end', stop);
  req.once('close', stop);
  res.once('close', stop);
}

const refused = new WeakSet<Duplex>();

/** Answers what the parser refused, once, and closes the connection. */
function refuse(socket: Duplex, err: NodeJS.ErrnoException): void {
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const status = refusalStatus(err.code);
  answerAndClose(
    socket,
    status,
    `${STATUS_CODES[status]?.toLowerCase()}: ${err.code ?? 'invalid request'}\n`,
  );
}

/** The status a refused request is answered with, by the parser's error code. */
export function refusalStatus(code: string | undefined): number {
  return code === 'HPE_HEADER_OVERFLOW' || code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
    ? 431
    : code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? 408
      : 400;
}

/** One answer written straight on the connection, which then closes (a grace period lets the answer reach the client). */
export function answerAndClose(socket: Duplex, status: number, body: string): void {
  if (refused.has(socket)) return;
  refused.add(socket);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  // The client may not read or close: what it still sends is dropped, and the socket goes.
  socket.on('data', () => {});
  setTimeout(() => socket.destroy(), 1000).unref();
}
