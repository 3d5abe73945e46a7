import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';

/** The HTTP/2 connection preface: how an h2c client (prior knowledge, e.g. gRPC) announces itself. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/**
 * Waits for the first bytes of a connection and tells whether it speaks h2c.
 * The bytes are put back, so whichever parser takes the connection sees them.
 */
export function sniffH2c(conn: Duplex, decide: (h2c: boolean) => void): void {
  const onData = (chunk: Buffer) => {
    conn.off('data', onData);
    conn.pause();
    conn.unshift(chunk);
    const n = Math.min(chunk.length, PREFACE.length);
    decide(n > 0 && chunk.subarray(0, n).equals(PREFACE.subarray(0, n)));
  };
  conn.on('data', onData);
  conn.resume();
}

export type H2StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

/** Serves h2c on one already-accepted connection: a server object per connection keeps the caller's context at hand. */
export function serveH2c(conn: Duplex, onStream: H2StreamHandler): void {
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    onStream(stream, headers);
  });
  server.on('sessionError', () => conn.destroy());
  server.emit('connection', conn);
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
export function responseHeaders(h: IncomingHttpHeaders): http2.OutgoingHttpHeaders {
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

  get(key: string, dial: () => Promise<Duplex>): Promise<ClientHttp2Session> {
    const cached = this.sessions.get(key);
    if (cached) return cached;
    const p = dial().then(
      (conn) =>
        new Promise<ClientHttp2Session>((resolve, reject) => {
          const s = http2.connect('http://upstream', { createConnection: () => conn });
          const drop = () => {
            if (this.sessions.get(key) === p) this.sessions.delete(key);
          };
          s.once('connect', () => resolve(s));
          s.once('error', (err) => {
            drop();
            reject(err);
          });
          s.once('close', drop);
          s.once('goaway', drop);
        }),
    );
    p.catch(() => {
      if (this.sessions.get(key) === p) this.sessions.delete(key);
    });
    this.sessions.set(key, p);
    return p;
  }

  /** Drops sessions whose key starts with the prefix (e.g. a rotated source identity). */
  drop(prefix: string): void {
    for (const [k, p] of this.sessions) {
      if (!k.startsWith(prefix)) continue;
      this.sessions.delete(k);
      p.then((s) => s.close()).catch(() => {});
    }
  }

  close(): void {
    for (const p of this.sessions.values()) p.then((s) => s.destroy()).catch(() => {});
    this.sessions.clear();
  }
}

export interface RelayEvents {
  response(status: number): void;
  end(): void;
  error(err: Error): void;
  timeout(): void;
}

/** Forwards one h2 stream upstream and relays the answer back, trailers included (gRPC status lives there). */
export function relayH2c(
  down: ServerHttp2Stream,
  session: ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  ev: RelayEvents,
  timeoutMs?: number,
): void {
  const up = session.request(headers);
  let trailers: http2.OutgoingHttpHeaders = {};
  let settled = false;
  const settle = (fn: () => void) => {
    if (settled) return;
    settled = true;
    fn();
  };
  if (timeoutMs !== undefined) {
    up.setTimeout(timeoutMs, () => {
      up.close(http2.constants.NGHTTP2_CANCEL);
      settle(() => ev.timeout());
    });
  }
  down.pipe(up);
  up.on('response', (h) => {
    ev.response(Number(h[':status']));
    down.respond(responseHeaders(h), { waitForTrailers: true });
    down.on('wantTrailers', () => down.sendTrailers(trailers));
    up.pipe(down);
  });
  up.on('trailers', (t) => {
    trailers = responseHeaders(t);
  });
  up.on('end', () => settle(() => ev.end()));
  up.on('error', (err) => settle(() => ev.error(err)));
  down.on('close', () => {
    if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
  });
}
