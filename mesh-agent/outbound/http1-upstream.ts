/**
 * One HTTP/1.1 connection upstream (to a pod on this node, or through a CONNECT stream of the
 * tunnel): the HTTP/1.1 half of the attempt loop in attempts.ts, replacing an undici Client.
 *
 * Why not undici: on the caller's node it was a fifth of the agent's CPU per L7 request
 * (docs/benchmarks.md, "Lean HTTP/1.1 upstream"). This writes the request head as one string
 * next to the body (one write), and parses the answer with llhttp through the same binding
 * node:http's client uses (strict: an answer node:http would refuse fails the attempt here),
 * with one parser and one set of bound callbacks per connection, and no per-request closures
 * except for streamed request bodies. Response headers come out with the hop-by-hop ones
 * (HOP_BY_HOP, and those Connection names) already left out, ready to relay.
 */
import type { Duplex } from 'node:stream';
import { Readable } from 'node:stream';
import { HOP_BY_HOP } from '../io/headers.js';
import { HTTPParser, type LlhttpParser } from '../io/llhttp.js';

export interface Http1Response {
  statusCode: number;
  /** Lower-case names, hop-by-hop ones (and those Connection names) left out; a repeated header is an array. */
  headers: Record<string, string | string[]>;
  /** Ends when the answer is complete; destroying it early closes the connection. */
  body: Readable;
}

export interface Http1Request {
  method: string;
  path: string;
  /** Lower-case names; framing (content-length, transfer-encoding) is decided here from `body`. */
  headers: Record<string, string | string[]>;
  /** A buffered body (sent with its length), a stream (chunked unless content-length is given), or none. */
  body: Buffer | Readable | null;
  /** The whole exchange must be over by then (ms from now): TimeoutError before the answer, body error after. */
  timeoutMs?: number | undefined;
  /** The route's stream idle timeout: no byte from upstream for that long fails the request. */
  idleTimeoutMs?: number | undefined;
}

/** Errors named as undici names them, so outcome classification (reset, timeout) stays the same. */
function upstreamError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

function timeoutError(ms: number): Error {
  return new DOMException(`deadline of ${ms} ms exceeded`, 'TimeoutError');
}

/** net.Socket and Http2Stream both have an idle timeout emitting 'timeout'. */
type Idle = Duplex & { setTimeout(ms: number): unknown };

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;

/** Framing and connection headers this hop writes itself. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'expect']);

class ResponseBody extends Readable {
  constructor(private readonly conn: Http1Upstream) {
    super();
  }
  override _read(): void {
    this.conn.resumeReading();
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Dropped before its end: the rest of the answer is still on the wire, the connection cannot serve again.
    this.conn.bodyDestroyed(this);
    cb(err);
  }
}

interface InFlight {
  method: string;
  resolve: (r: Http1Response) => void;
  reject: (e: Error) => void;
  body: ResponseBody | undefined;
  timer: NodeJS.Timeout | undefined;
  timeoutMs: number;
  /** The request body is still being written. */
  sending: boolean;
  complete: boolean;
}

export class Http1Upstream {
  private sock: Duplex | undefined;
  private readonly ready: Promise<Duplex>;
  private readonly parser: LlhttpParser;
  private current: InFlight | undefined;
  private partialHeaders: string[] = [];
  private goneSent = false;
  private keepAlive = true;
  private closing = false;
  private dead = false;
  private paused = false;

  /**
   * `connect` opens the byte stream (at once); `onGone` runs once when the connection can
   * serve no further request (closed, failed, the answer said close, or `retire` was asked).
   */
  constructor(
    connect: () => Promise<Duplex>,
    private readonly onGone: (conn: Http1Upstream) => void,
    /** Host header for a request without one (HTTP/1.0 callers may omit it). */
    private readonly defaultHost: string,
  ) {
    this.parser = new HTTPParser();
    this.parser.initialize(HTTPParser.RESPONSE, this, 0, HTTPParser.kLenientNone);
    this.parser[HTTPParser.kOnHeaders] = this.onHeaders.bind(this);
    this.parser[HTTPParser.kOnHeadersComplete] = this.onHeadersComplete.bind(this);
    this.parser[HTTPParser.kOnBody] = this.onBody.bind(this);
    this.parser[HTTPParser.kOnMessageComplete] = this.onMessageComplete.bind(this);
    this.ready = connect().then(
      (s) => this.attach(s),
      (err: Error) => {
        this.parser.close();
        this.gone();
        throw err;
      },
    );
    this.ready.catch(() => {});
  }

  /** Sends one request and resolves with the answer's head; one request at a time. */
  async request(req: Http1Request): Promise<Http1Response> {
    const sock = this.sock ?? (await this.ready);
    if (this.dead || this.current) throw upstreamError('upstream connection not usable', 'UND_ERR_SOCKET');
    let head = `${req.method} ${req.path} HTTP/1.1\r\n`;
    let hasHost = false;
    for (const name in req.headers) {
      const v = req.headers[name]!;
      if (FRAMING.has(name)) continue;
      if (!TOKEN.test(name))
        throw upstreamError(`invalid header name ${JSON.stringify(name)}`, 'UND_ERR_INVALID_ARG');
      if (name === 'host') hasHost = true;
      if (typeof v === 'string') {
        if (BAD_VALUE.test(v)) throw upstreamError(`invalid value of header ${name}`, 'UND_ERR_INVALID_ARG');
        head += `${name}: ${v}\r\n`;
      } else
        for (const one of v) {
          if (BAD_VALUE.test(one))
            throw upstreamError(`invalid value of header ${name}`, 'UND_ERR_INVALID_ARG');
          head += `${name}: ${one}\r\n`;
        }
    }
    if (!hasHost) head += `host: ${this.defaultHost}\r\n`;
    const { body } = req;
    const declared = req.headers['content-length'];
    const chunked = body !== null && !Buffer.isBuffer(body) && declared === undefined;
    if (body === null) {
      if (declared !== undefined && declared !== '0')
        throw upstreamError('content-length without a body', 'UND_ERR_INVALID_ARG');
      if (declared === '0') head += 'content-length: 0\r\n';
    } else if (Buffer.isBuffer(body)) head += `content-length: ${body.length}\r\n`;
    else if (chunked) head += 'transfer-encoding: chunked\r\n';
    else head += `content-length: ${declared}\r\n`;
    head += '\r\n';

    return new Promise<Http1Response>((resolve, reject) => {
      const f: InFlight = {
        method: req.method,
        resolve,
        reject,
        body: undefined,
        timer: undefined,
        timeoutMs: req.timeoutMs ?? 0,
        sending: body !== null && !Buffer.isBuffer(body),
        complete: false,
      };
      this.current = f;
      if (req.timeoutMs !== undefined) f.timer = setTimeout(expire, req.timeoutMs, this, f);
      if (req.idleTimeoutMs) (sock as Idle).setTimeout(req.idleTimeoutMs);
      if (Buffer.isBuffer(body)) {
        sock.cork();
        sock.write(head, 'latin1');
        sock.write(body);
        sock.uncork();
      } else {
        sock.write(head, 'latin1');
        if (body) this.stream(sock, body, chunked, f);
      }
    });
  }

  /** No further request: closes now if idle, else once the answer in flight is complete. */
  close(): void {
    this.closing = true;
    if (!this.current) this.destroy();
  }

  /** The transport says no new request should go here (the far agent drains). */
  retire(): void {
    this.closing = true;
    this.gone();
  }

  /** @internal the response body wants more. */
  resumeReading(): void {
    if (this.paused) {
      this.paused = false;
      this.sock?.resume();
    }
  }

  /** @internal a response body was destroyed (consumed to its end, or dropped). */
  bodyDestroyed(body: ResponseBody): void {
    const f = this.current;
    if (!f || f.body !== body || f.complete) return;
    this.finish(f);
    this.destroy();
  }

  private attach(s: Duplex): Duplex {
    this.sock = s;
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => this.onEnd());
    s.on('error', (err: Error) => this.fail(err));
    s.on('close', () => {
      this.fail(upstreamError('upstream connection closed', 'UND_ERR_SOCKET'));
      this.gone();
      // Freed here, never inside one of its own callbacks (they may destroy the socket).
      this.parser.close();
    });
    s.on('timeout', () => this.onIdle());
    if (this.closing) this.destroy();
    return s;
  }

  private onData(chunk: Buffer): void {
    if (!this.current) {
      // Bytes nobody asked for: the connection is out of step, it cannot be trusted with a request.
      this.destroy();
      return;
    }
    const r = this.parser.execute(chunk);
    if (typeof r !== 'number') {
      this.fail(
        upstreamError(`invalid HTTP/1.1 answer from upstream: ${r.code ?? r.message}`, 'UND_ERR_SOCKET'),
      );
      this.destroy();
    }
  }

  /** The upstream closed its side: an answer delimited by the close completes, anything else fails. */
  private onEnd(): void {
    if (this.current) {
      const r = this.parser.finish();
      if (r) this.fail(upstreamError(`upstream answer cut short: ${r.code ?? r.message}`, 'UND_ERR_SOCKET'));
    }
    this.keepAlive = false;
    if (!this.current) this.destroy();
  }

  private onIdle(): void {
    const f = this.current;
    if (!f) return;
    const err = upstreamError(
      'no byte from upstream within the idle timeout',
      f.body ? 'UND_ERR_BODY_TIMEOUT' : 'UND_ERR_HEADERS_TIMEOUT',
    );
    this.fail(err);
    this.destroy();
  }

  /** The deadline passed. */
  timedOut(f: InFlight): void {
    if (this.current !== f) return;
    f.timer = undefined;
    this.fail(timeoutError(f.timeoutMs));
    this.destroy();
  }

  private onHeaders(headers: string[]): void {
    for (const h of headers) this.partialHeaders.push(h);
  }

  private onHeadersComplete(
    major: number,
    minor: number,
    raw: string[] | undefined,
    _method: unknown,
    _url: unknown,
    statusCode: number,
    _statusMessage: string,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ): number {
    const f = this.current;
    if (!f) return 1;
    let list = raw ?? [];
    if (this.partialHeaders.length > 0) {
      list = this.partialHeaders.concat(list);
      this.partialHeaders = [];
    }
    // An interim answer (100 Continue, 103 Early Hints): the final one follows on this connection.
    if (statusCode < 200 && statusCode !== 101) return 1;
    if (upgrade || statusCode === 101) {
      this.fail(upstreamError('upstream switched protocols on an HTTP/1.1 request', 'UND_ERR_SOCKET'));
      this.destroy();
      return 2;
    }
    this.keepAlive = shouldKeepAlive;
    // llhttp decides keep-alive before it is told a HEAD answer has no body: without a length, it
    // would read the answer as delimited by the close. Decided here from the version and Connection.
    let connection = '';
    const headers: Record<string, string | string[]> = {};
    for (let i = 0; i + 1 < list.length; i += 2) {
      const name = list[i]!.toLowerCase();
      if (name === 'connection') connection += `${list[i + 1]!.toLowerCase()},`;
      if (HOP_BY_HOP.has(name)) continue;
      const v = list[i + 1]!;
      const had = headers[name];
      if (had === undefined) headers[name] = name === 'set-cookie' ? [v] : v;
      else if (typeof had === 'string') headers[name] = [had, v];
      else had.push(v);
    }
    // As endToEnd (io/headers.ts): the headers the upstream's Connection header names are for this hop only.
    if (connection !== '')
      for (const name of connection.split(',')) {
        const n = name.trim();
        if (n !== '') delete headers[n];
      }
    if (f.method === 'HEAD')
      this.keepAlive =
        !/(^|[\s,])close\s*,/.test(connection) &&
        (major > 1 || (major === 1 && minor >= 1) || /(^|[\s,])keep-alive\s*,/.test(connection));
    const body = new ResponseBody(this);
    f.body = body;
    f.resolve({ statusCode, headers, body });
    // A HEAD answer announces a body it does not carry.
    return f.method === 'HEAD' ? 1 : 0;
  }

  private onBody(chunk: Buffer): void {
    const body = this.current?.body;
    if (body && !body.push(chunk) && !this.paused) {
      this.paused = true;
      this.sock?.pause();
    }
  }

  private onMessageComplete(): void {
    const f = this.current;
    if (!f?.body) return;
    f.complete = true;
    const body = f.body;
    this.finish(f);
    if (f.sending || !this.keepAlive || this.closing) this.destroy();
    else (this.sock as Idle | undefined)?.setTimeout(0);
    body.push(null);
  }

  /** The request in flight is over (answered, failed or dropped): the connection may take the next. */
  private finish(f: InFlight): void {
    if (f.timer) clearTimeout(f.timer);
    f.timer = undefined;
    if (this.current === f) this.current = undefined;
  }

  private fail(err: Error): void {
    const f = this.current;
    if (f) {
      this.finish(f);
      if (f.body) {
        if (!f.body.destroyed) f.body.destroy(err);
      } else f.reject(err);
    }
    if ((err as { code?: string }).code === 'UND_ERR_SOCKET') this.gone();
  }

  private destroy(): void {
    this.dead = true;
    const s = this.sock;
    if (s) {
      if (!s.destroyed) s.destroy();
    } else this.fail(upstreamError('upstream connection closed', 'UND_ERR_SOCKET'));
    this.gone();
  }

  private gone(): void {
    this.dead = true;
    if (this.goneSent) return;
    this.goneSent = true;
    this.onGone(this);
  }

  private stream(sock: Duplex, body: Readable, chunked: boolean, f: InFlight): void {
    const onData = (c: Buffer) => {
      if (c.length === 0) return;
      let ok: boolean;
      if (chunked) {
        sock.cork();
        sock.write(`${c.length.toString(16)}\r\n`, 'latin1');
        sock.write(c);
        ok = sock.write('\r\n', 'latin1');
        sock.uncork();
      } else ok = sock.write(c);
      if (!ok) {
        body.pause();
        sock.once('drain', () => body.resume());
      }
    };
    const onEnd = () => {
      if (chunked) sock.write('0\r\n\r\n', 'latin1');
      f.sending = false;
      if (f.complete && !this.dead) {
        // The answer came first; the connection stays usable only if nothing else is owed.
        if (!this.keepAlive || this.closing) this.destroy();
      }
    };
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', (err: Error) => {
      this.fail(err);
      this.destroy();
    });
  }
}

function expire(conn: Http1Upstream, f: InFlight): void {
  conn.timedOut(f);
}
