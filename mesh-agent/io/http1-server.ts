/**
 * The pod-facing HTTP/1.1 server of the caller's node: one connection object per pod connection
 * on llhttp in request mode (io/llhttp.ts, the binding node:http's server runs on), replacing
 * node:http's Server, IncomingMessage and ServerResponse on the outbound path.
 *
 * Why: after the upstream client (outbound/http1-upstream.ts) node:http's JS was an eighth of the
 * caller's thread and its answer write a quarter (docs/benchmarks.md, "Lean HTTP/1.1 server").
 * Here the callbacks are bound once per connection, a request is handed over as method, path and
 * headers (a body Readable only when there is one), an answer is one head string written with its
 * body (or its first body bytes) under one cork, and every timeout of every connection is one
 * sweep per server instead of timers per request. The pod's socket is read by llhttp itself
 * (parser.consume of its libuv handle, as node:http's server does): no JS Buffer, stream push or
 * 'data' event per read.
 *
 * What it keeps from node:http (the attack suites pin it): llhttp strict (kLenientNone), so a
 * smuggling attempt is a parse error, answered 400 and closed before anything of its read is
 * handed over; headers over the size limit 431, over the count limit 431; HTTP/1.1 without Host
 * 400; CONNECT 404; `Expect: 100-continue` answered 100 at once (any other expectation 417);
 * keep-alive and pipelining (answers in request order); HTTP/1.0 (close-delimited answers unless
 * a length is known); HEAD, 204 and 304 without a body; duplicate request headers folded as
 * IncomingMessage folds them. An `Upgrade` request is served as plain HTTP/1.1 (the header is
 * hop-by-hop, never passed on), and the connection closes after its answer: whatever the client
 * sends next is not HTTP/1.1.
 *
 * Timeouts follow Envoy rather than node:http: the headers timeout runs from a request's first
 * byte (node:http's from the accept), so a connection that stays silent is left to the idle
 * timeout, as Envoy leaves it.
 */
import { STATUS_CODES } from 'node:http';
import type net from 'node:net';
import { Readable } from 'node:stream';
import { answerAndClose, type HttpLimits } from './http-limits.js';
import { HTTPParser, type LlhttpParser, methods } from './llhttp.js';

export interface Http1ServerRequest {
  readonly method: string;
  /** The request target as sent (origin form for a pod's requests). */
  readonly path: string;
  /** Lower-case names; repeated headers folded as node:http folds them (see addHeader). */
  readonly headers: Record<string, string | string[]>;
  /** The request body; null when there is none (no Content-Length or Transfer-Encoding, or a length of 0). */
  readonly body: Readable | null;
  /** The pod's connection. */
  readonly socket: net.Socket;
}

export type Http1RequestHandler = (req: Http1ServerRequest, answer: Http1Answer) => void;

export interface Http1ServerOptions {
  /** Asked for each answer: while true, answers say `Connection: close` and the connection closes after them. */
  draining?: () => boolean;
}

/** The part of a net.Socket's libuv handle the native read path uses (node:http's server uses the same). */
interface StreamHandle {
  isStreamBase?: boolean;
  /** Set by whoever feeds a parser from the handle (node:http marks it the same way): one consumer per handle. */
  _consumed?: boolean;
  /** net.Socket's own flag for a handle that reads: kept true to what readStart/readStop did. */
  reading?: boolean;
  readStart(): number;
  readStop(): number;
}

/** Bodies held for a pipelined request's turn, and answers queued before reading stops. */
const MAX_QUEUED_ANSWERS = 16;

export class Http1Server {
  private readonly conns = new Set<Http1Connection>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly sweepMs: number;
  private lastSweep = 0;
  /** The server's coarse clock (ms), advanced by the sweep: activity is stamped with it, no clock read per chunk. */
  clock = performance.now();
  closed = false;
  readonly keepAliveHeader: string;

  constructor(
    readonly limits: HttpLimits,
    readonly onRequest: Http1RequestHandler,
    readonly opts: Http1ServerOptions = {},
  ) {
    // As node:http's connectionsCheckingInterval: a bound is met within a quarter of it.
    this.sweepMs = Math.max(
      100,
      Math.floor(Math.min(limits.headersTimeoutMs, limits.idleTimeoutMs, limits.streamIdleTimeoutMs) / 4),
    );
    this.keepAliveHeader = `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(limits.idleTimeoutMs / 1000)}\r\n`;
  }

  /** Serves HTTP/1.1 on an accepted connection (paused, first bytes possibly put back): reading starts now. */
  serve(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    if (!this.sweepTimer) {
      this.clock = this.lastSweep = performance.now();
      this.sweepTimer = setInterval(() => this.sweep(), this.sweepMs);
      this.sweepTimer.unref();
    }
    const conn = new Http1Connection(this, sock);
    this.conns.add(conn);
    sock.resume();
  }

  /** @internal */
  forget(conn: Http1Connection): void {
    this.conns.delete(conn);
    if (this.conns.size === 0 && this.sweepTimer) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  }

  /** Idle connections close now, the others after the answer in flight; new ones are refused. */
  close(): void {
    this.closed = true;
    for (const c of this.conns) c.closeWhenIdle();
  }

  get connections(): number {
    return this.conns.size;
  }

  private sweep(): void {
    const now = performance.now();
    const stalled = now - this.lastSweep > 2 * this.sweepMs;
    this.lastSweep = now;
    this.clock = now;
    // After a stalled event loop the sweep runs before the reads that were waiting: no verdict this time.
    if (stalled) return;
    for (const c of this.conns) c.check(now);
  }
}

/** A request body as it comes off the connection. */
class RequestBody extends Readable {
  constructor(private readonly conn: Http1Connection) {
    super();
  }
  override _read(): void {
    this.conn.bodyWantsMore();
  }
}

/** The answer to one request; answers go out in request order. */
export class Http1Answer {
  /** Something of this answer was written (or queued behind an earlier answer). */
  headersSent = false;
  /** Fully written, or the connection is gone. */
  done = false;
  /** @internal the body (or write) held until the earlier answers are out. */
  held: (() => void) | undefined;
  private leaveListeners: Array<() => void> | undefined;
  /** @internal resolves relay() */
  settle: (() => void) | undefined;
  /** The relayed body: dropped if the pod leaves before it is all written. */
  private source: Readable | undefined;

  constructor(
    private readonly conn: Http1Connection,
    /** @internal */ readonly head: boolean,
    /** @internal */ readonly minor: number,
    /** @internal */ public keepAlive: boolean,
    /** @internal */ readonly body: RequestBody | null,
  ) {}

  /** A whole answer: status, headers (lower-case names) and a short body, written at once. */
  respond(status: number, headers: Record<string, string | string[]>, body: string): void {
    if (this.headersSent || this.done) return;
    this.headersSent = true;
    // A HEAD answer announces the length it does not carry; 204 and 304 have none.
    const sized = hasBody(status);
    const framing = sized ? `content-length: ${Buffer.byteLength(body)}\r\n` : '';
    const head = this.conn.head(this, status, headers, framing, false);
    this.conn.send(this, () => this.conn.writeWhole(this, head, sized && !this.head ? body : ''));
  }

  /**
   * An answer whose body streams from `body` (an upstream answer): its length when the headers
   * give one, chunked otherwise (close-delimited to an HTTP/1.0 client). Resolves when it is all
   * written or the connection is gone (then `body` is destroyed). Reading follows the pod's pace.
   */
  relay(status: number, headers: Record<string, string | string[]>, body: Readable): Promise<void> {
    if (this.headersSent || this.done) {
      body.destroy();
      return Promise.resolve();
    }
    this.headersSent = true;
    let framing = '';
    let chunked = false;
    const bodiless = this.head || !hasBody(status);
    if (!bodiless && headers['content-length'] === undefined) {
      if (this.minor >= 1) {
        framing = 'transfer-encoding: chunked\r\n';
        chunked = true;
      } else this.keepAlive = false;
    }
    const head = this.conn.head(this, status, headers, framing, true);
    this.source = body;
    // Also while it waits for its turn: an upstream that fails mid-answer resets the pod's connection.
    body.on('error', this.conn.onSourceError);
    return new Promise<void>((resolve) => {
      this.settle = resolve;
      this.conn.send(this, () => this.conn.writeStreamed(this, head, body, chunked, bodiless));
    });
  }

  /** Resets the pod's connection (an answer that cannot be completed). */
  destroy(): void {
    this.conn.destroy();
  }

  /** `gone` for a pending wait: the pod's connection closing before this answer is out. */
  gone(leave: () => void): () => void {
    if (this.done) {
      leave();
      return () => {};
    }
    if (!this.leaveListeners) this.leaveListeners = [];
    this.leaveListeners.push(leave);
    return () => {
      const i = this.leaveListeners?.indexOf(leave) ?? -1;
      if (i >= 0) this.leaveListeners!.splice(i, 1);
    };
  }

  /** @internal */
  finish(left: boolean): void {
    if (this.done) return;
    this.done = true;
    this.held = undefined;
    const leave = this.leaveListeners;
    this.leaveListeners = undefined;
    if (left && leave) for (const l of leave) l();
    if (left && this.source && !this.source.readableEnded) this.source.destroy();
    this.source = undefined;
    const settle = this.settle;
    this.settle = undefined;
    settle?.();
  }
}

/** Status line per code, built once. */
const statusLines = new Map<number, string>();
function statusLine(status: number): string {
  let line = statusLines.get(status);
  if (line === undefined) {
    line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    statusLines.set(status, line);
  }
  return line;
}

let dateLine = '';
let dateSecond = 0;
/** The Date header node:http adds to answers that have none, rebuilt once a second. */
function date(): string {
  const now = Date.now();
  const second = now - (now % 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateLine = `date: ${new Date(second).toUTCString()}\r\n`;
  }
  return dateLine;
}

function hasBody(status: number): boolean {
  return status >= 200 && status !== 204 && status !== 304;
}

/** Framing and connection headers the server writes itself. */
const OWN = new Set(['connection', 'keep-alive', 'transfer-encoding']);

/** Headers node:http keeps the first of (IncomingMessage's matchKnownFields). */
const FIRST_WINS = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

/** One header into the request's object, folded as IncomingMessage folds repeats. */
function addHeader(headers: Record<string, string | string[]>, raw: string, value: string): void {
  const name = raw.toLowerCase();
  const had = headers[name];
  if (had === undefined) headers[name] = name === 'set-cookie' ? [value] : value;
  else if (name === 'set-cookie') (had as string[]).push(value);
  else if (FIRST_WINS.has(name)) return;
  else headers[name] = `${had as string}${name === 'cookie' ? '; ' : ', '}${value}`;
}

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';
const CONTINUE_EXPECTATION = /^100-continue$/i;

interface Parsed {
  req: Http1ServerRequest;
  answer: Http1Answer;
  expectContinue: boolean;
}

/** @internal One pod connection: its parser, its requests and the order of their answers. */
export class Http1Connection {
  private readonly parser: LlhttpParser;
  /** Answers in request order; the first is the one on the wire. */
  private readonly answers: Http1Answer[] = [];
  /** Requests whose head completed in the current read: handed over once the whole read parsed. */
  private readonly parsed: Parsed[] = [];
  private partialHeaders: string[] = [];
  private partialUrl = '';
  /** The body of the request being parsed. */
  private body: RequestBody | null = null;
  /** When the head being parsed started (server clock), -1 between requests. */
  private headStart = -1;
  /** The last byte in (server clock). */
  private lastByte: number;
  /** Since when nothing was in flight (server clock). */
  private idleSince: number;
  private refusal: [number, string] | undefined;
  /** The last request was read (an Upgrade, or `Connection: close`): nothing after it is read. */
  private lastRead = false;
  /** The request being read is the last one: once it is in, lastRead. */
  private lastPending = false;
  private bodyPaused = false;
  private queuePaused = false;
  private closing = false;
  private gone = false;
  /** The body being relayed to the pod, with its framing. */
  private source: Readable | null = null;
  private sourceAnswer: Http1Answer | null = null;
  private chunked = false;
  private waitDrain = false;
  /** The socket's handle once llhttp was fed from it: reads stop and start on it (see pauseReads). */
  private handle: StreamHandle | null = null;
  /** llhttp reads the handle itself (parser.consume): no JS Buffer or 'data' event per read. */
  private consumed = false;
  private readonly onData = (chunk: Buffer) => this.read(chunk);
  private readonly onSourceReadable = () => this.pump();
  private readonly onSourceEnd = () => this.sourceEnded();
  /** @internal */
  readonly onSourceError = () => this.destroy();

  constructor(
    private readonly server: Http1Server,
    readonly sock: net.Socket,
  ) {
    this.lastByte = this.idleSince = server.clock;
    const p = new HTTPParser();
    p.initialize(HTTPParser.REQUEST, this, server.limits.maxHeaderBytes, HTTPParser.kLenientNone);
    p[HTTPParser.kOnMessageBegin] = this.onMessageBegin.bind(this);
    p[HTTPParser.kOnHeaders] = this.onHeaders.bind(this);
    p[HTTPParser.kOnHeadersComplete] = this.onHeadersComplete.bind(this);
    p[HTTPParser.kOnBody] = this.onBody.bind(this);
    p[HTTPParser.kOnMessageComplete] = this.onMessageComplete.bind(this);
    this.parser = p;
    // Bytes already in the stream (the protocol sniff puts its first read back) come as 'data'
    // and go through execute(); the handle's next reads go straight into llhttp, in C++, as
    // node:http's server reads its sockets. A handle that is not a libuv stream keeps 'data'.
    sock.on('data', this.onData);
    const handle = (sock as unknown as { _handle?: StreamHandle | null })._handle;
    if (handle?.isStreamBase && !handle._consumed) {
      p[HTTPParser.kOnExecute] = this.onExecute.bind(this);
      handle._consumed = true;
      p.consume(handle);
      this.handle = handle;
      this.consumed = true;
    }
    sock.on('end', () => this.onEnd());
    sock.on('drain', () => this.onDrain());
    sock.once('close', () => this.onClose());
  }

  /** The sweep's verdict on this connection's timeouts. */
  check(now: number): void {
    if (this.gone || this.refusal) return;
    const { limits } = this.server;
    if (this.headStart >= 0) {
      if (now - this.headStart > limits.headersTimeoutMs)
        this.refuse(408, 'request timeout: ERR_HTTP_REQUEST_TIMEOUT\n');
      return;
    }
    // A body paused for the upstream's pace is not stalled by the pod.
    if (this.body && !this.bodyPaused && now - this.lastByte > limits.streamIdleTimeoutMs) {
      const answer = this.answerOf(this.body);
      if (answer?.headersSent) this.destroy();
      else this.refuse(408, `request timeout: no request body byte for ${limits.streamIdleTimeoutMs} ms\n`);
      return;
    }
    if (this.answers.length === 0 && now - Math.max(this.idleSince, this.lastByte) > limits.idleTimeoutMs)
      this.destroy();
  }

  closeWhenIdle(): void {
    this.closing = true;
    if (this.answers.length === 0 && this.headStart < 0) this.destroy();
  }

  destroy(): void {
    if (!this.sock.destroyed) this.sock.destroy();
  }

  /** @internal the body being parsed was read: more may come. */
  bodyWantsMore(): void {
    if (this.bodyPaused) {
      this.bodyPaused = false;
      this.resumeIfFree();
    }
  }

  private answerOf(body: RequestBody): Http1Answer | undefined {
    for (const a of this.answers) if (a.body === body) return a;
    return undefined;
  }

  private read(chunk: Buffer): void {
    this.lastByte = this.server.clock;
    if (this.lastRead) return;
    this.executed(this.parser.execute(chunk));
  }

  /** A read of the handle that llhttp parsed natively: `r` as execute() returns it. */
  private onExecute(r: ReturnType<LlhttpParser['execute']>): void {
    this.lastByte = this.server.clock;
    this.executed(r);
  }

  private executed(r: ReturnType<LlhttpParser['execute']>): void {
    if (this.refusal) {
      this.dropParsed();
      this.answerRefusal();
      return;
    }
    // Bytes after a `Connection: close` request: llhttp stops there, and so does the connection.
    if (typeof r !== 'number' && r.code === 'HPE_CLOSED_CONNECTION' && this.lastRead) {
      this.stopReading();
    } else if (typeof r !== 'number') {
      this.dropParsed();
      if (r.code === 'HPE_PAUSED_H2_UPGRADE') this.destroy();
      else
        this.refuse(
          r.code === 'HPE_HEADER_OVERFLOW' || r.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 431 : 400,
          r.code ?? 'invalid request',
        );
      return;
    }
    // Handed over only now: llhttp refuses some heads (an obfuscated Transfer-Encoding) after
    // their callback, within the same read; nothing of a refused read goes anywhere.
    for (let i = 0; i < this.parsed.length; i++) this.dispatch(this.parsed[i]!);
    this.parsed.length = 0;
    // Nothing after the last request is parsed: its reads go back to the stream, where read() drops them.
    if (this.lastRead) this.unconsume();
  }

  /** Reads stop: a paused net.Socket still reads its handle (into its buffer), a consumed one must be told. */
  private pauseReads(): void {
    this.sock.pause();
    const h = this.handle;
    if (h?.reading && !this.sock.destroyed) {
      h.reading = false;
      h.readStop();
    }
  }

  private resumeReads(): void {
    this.sock.resume();
    const h = this.handle;
    if (h && !h.reading && !this.sock.destroyed) {
      h.reading = true;
      h.readStart();
    }
  }

  /** llhttp stops reading the handle; its reads go to the JS stream again. */
  private unconsume(): void {
    if (!this.consumed) return;
    this.consumed = false;
    this.parser.unconsume();
  }

  /** Nothing more is parsed, but the client's bytes are still read (and dropped) until the socket goes: unread bytes at close would reset the answer. */
  private stopReading(): void {
    this.sock.off('data', this.onData);
    this.unconsume();
    const h = this.handle;
    if (h && !h.reading && !this.sock.destroyed) {
      h.reading = true;
      h.readStart();
    }
  }

  private dispatch(p: Parsed): void {
    if (this.gone || this.sock.destroyed) return;
    if (p.expectContinue && this.answers[0] === p.answer && !p.answer.headersSent)
      this.sock.write(CONTINUE, 'latin1');
    this.server.onRequest(p.req, p.answer);
  }

  /** Requests of a read that is refused are never handed over. */
  private dropParsed(): void {
    for (const p of this.parsed) {
      p.req.body?.destroy();
      const i = this.answers.indexOf(p.answer);
      if (i >= 0) this.answers.splice(i, 1);
      p.answer.finish(true);
    }
    this.parsed.length = 0;
  }

  private onMessageBegin(): number {
    this.headStart = this.server.clock;
    return 0;
  }

  private onHeaders(headers: string[], url: string): void {
    // A request's trailers come here too, after its head: they are not passed on (neither did node:http's path).
    if (this.headStart < 0) return;
    for (const h of headers) this.partialHeaders.push(h);
    if (url) this.partialUrl += url;
  }

  private onHeadersComplete(
    _major: number,
    minor: number,
    raw: string[] | undefined,
    methodIndex: number,
    url: string | undefined,
    _statusCode: unknown,
    _statusMessage: unknown,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ): number {
    this.headStart = -1;
    let list = raw ?? [];
    if (this.partialHeaders.length > 0) {
      list = this.partialHeaders.concat(list);
      this.partialHeaders = [];
    }
    let path = url ?? '';
    if (this.partialUrl !== '') {
      path = this.partialUrl + path;
      this.partialUrl = '';
    }
    const method = methods[methodIndex] ?? 'GET';
    const { limits } = this.server;
    if (this.refusal || this.lastRead) return 1;
    if (list.length / 2 > limits.maxHeaderCount) {
      this.refusal = [431, `request header fields too large: more than ${limits.maxHeaderCount} headers\n`];
      return 1;
    }
    if (method === 'CONNECT') {
      this.refusal = [404, 'no route: CONNECT is not proxied on this port\n'];
      return 2;
    }
    if (method === 'PRI') {
      // As node:http: an HTTP/2 preface on an HTTP/1.1 connection is dropped without a word.
      this.lastRead = true;
      this.destroy();
      return 2;
    }
    const headers: Record<string, string | string[]> = {};
    for (let i = 0; i + 1 < list.length; i += 2) addHeader(headers, list[i]!, list[i + 1]!);
    if (minor >= 1 && headers.host === undefined) {
      this.refusal = [400, 'bad request: no Host header (HTTP/1.1 requires one)\n'];
      return 1;
    }
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    const bodied = te !== undefined || (cl !== undefined && cl !== '0');
    const body = bodied ? new RequestBody(this) : null;
    this.body = body;
    // An Upgrade request is served as plain HTTP/1.1 (Upgrade is hop-by-hop): what follows is
    // not HTTP/1.1. After `Connection: close` nothing more is read either.
    const keepAlive = shouldKeepAlive && !upgrade && !this.closing;
    if (!shouldKeepAlive || upgrade) this.lastPending = true;
    const answer = new Http1Answer(this, method === 'HEAD', minor, keepAlive, body);
    const expect = headers.expect;
    let expectContinue = false;
    if (expect !== undefined && minor >= 1) {
      if (!CONTINUE_EXPECTATION.test(expect as string)) {
        // As node:http: an expectation it cannot meet is answered 417, and the request goes nowhere.
        answer.keepAlive = false;
        this.lastPending = true;
        this.answers.push(answer);
        body?.resume();
        answer.respond(417, { 'content-type': 'text/plain' }, `expectation failed: ${expect}\n`);
        return 0;
      }
      expectContinue = true;
    }
    this.answers.push(answer);
    if (this.answers.length >= MAX_QUEUED_ANSWERS && !this.queuePaused) {
      // A flood of pipelined requests waits for the answers before more is read.
      this.queuePaused = true;
      this.pauseReads();
    }
    this.parsed.push({ req: { method, path, headers, body, socket: this.sock }, answer, expectContinue });
    return 0;
  }

  private onBody(chunk: Buffer): void {
    const body = this.body;
    if (!body || body.destroyed) return;
    if (!body.push(chunk) && !this.bodyPaused) {
      this.bodyPaused = true;
      this.pauseReads();
    }
  }

  private onMessageComplete(): void {
    if (this.lastPending) this.lastRead = true;
    const body = this.body;
    this.body = null;
    if (body && !body.destroyed) body.push(null);
  }

  /** The pod half-closed: a request cut short is an error; the socket ends itself (not half-open). */
  private onEnd(): void {
    if (this.lastRead || this.refusal) return;
    const r = this.parser.finish();
    if (r) this.destroy();
  }

  private onClose(): void {
    this.gone = true;
    this.server.forget(this);
    this.parsed.length = 0;
    const body = this.body;
    this.body = null;
    if (body && !body.readableEnded)
      body.destroy(
        Object.assign(new Error('aborted: the client closed the connection'), { code: 'ECONNRESET' }),
      );
    for (const a of this.answers) {
      if (a.body && !a.body.readableEnded && !a.body.destroyed)
        a.body.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
      a.finish(true);
    }
    this.answers.length = 0;
    if (this.source) {
      const src = this.source;
      this.detachSource();
      src.destroy();
    }
    // Freed here, never inside one of its own callbacks.
    this.unconsume();
    this.parser.close();
  }

  private refuse(status: number, body: string): void {
    this.refusal = [status, body];
    this.answerRefusal();
  }

  /** Answers what the parser or the limits refused, and closes; an answer already on the wire is cut instead. */
  private answerRefusal(): void {
    const [status, text] = this.refusal!;
    this.stopReading();
    if (this.answers[0]?.headersSent && !this.answers[0].done) {
      this.destroy();
      return;
    }
    const body = text.endsWith('\n') ? text : `${STATUS_CODES[status]?.toLowerCase()}: ${text}\n`;
    for (const a of this.answers) a.finish(true);
    this.answers.length = 0;
    answerAndClose(this.sock, status, body);
  }

  /** @internal the head of an answer, with Date and the connection's framing and keep-alive. */
  head(
    a: Http1Answer,
    status: number,
    headers: Record<string, string | string[]>,
    framing: string,
    relayed: boolean,
  ): string {
    let head = statusLine(status);
    for (const name in headers) {
      const v = headers[name]!;
      if (relayed && OWN.has(name)) continue;
      if (typeof v === 'string') head += `${name}: ${v}\r\n`;
      else for (const one of v) head += `${name}: ${one}\r\n`;
    }
    if (headers.date === undefined) head += date();
    if (a.keepAlive && (this.closing || this.server.opts.draining?.())) a.keepAlive = false;
    head += a.keepAlive ? this.server.keepAliveHeader : 'connection: close\r\n';
    return `${head}${framing}\r\n`;
  }

  /** @internal runs `write` now if `a` is the answer on the wire, else once the earlier ones are out. */
  send(a: Http1Answer, write: () => void): void {
    if (this.gone) {
      a.finish(true);
      return;
    }
    if (this.answers[0] === a) write();
    else a.held = write;
  }

  /** @internal */
  writeWhole(a: Http1Answer, head: string, body: string): void {
    if (body === '') this.sock.write(head, 'latin1');
    else {
      this.sock.cork();
      this.sock.write(head, 'latin1');
      this.sock.write(body);
      this.sock.uncork();
    }
    this.answered(a);
  }

  /** @internal the head, and the body as it comes, at the pod's pace (the source waits while the socket's buffer is full). */
  writeStreamed(a: Http1Answer, head: string, src: Readable, chunked: boolean, bodiless: boolean): void {
    if (bodiless) {
      this.sock.write(head, 'latin1');
      src.off('error', this.onSourceError);
      src.on('error', () => {});
      src.resume();
      this.answered(a);
      return;
    }
    this.source = src;
    this.sourceAnswer = a;
    this.chunked = chunked;
    this.sock.cork();
    this.sock.write(head, 'latin1');
    // What is read already goes with the head: one write for a small answer.
    this.pump();
    this.sock.uncork();
    if (this.source !== src) return;
    src.on('readable', this.onSourceReadable);
    src.on('end', this.onSourceEnd);
  }

  private pump(): void {
    const src = this.source;
    if (!src) return;
    while (!this.waitDrain) {
      const c = src.read() as Buffer | null;
      if (c === null) return;
      if (c.length === 0) continue;
      let ok: boolean;
      if (this.chunked) {
        this.sock.cork();
        this.sock.write(`${c.length.toString(16)}\r\n`, 'latin1');
        this.sock.write(c);
        ok = this.sock.write('\r\n', 'latin1');
        this.sock.uncork();
      } else ok = this.sock.write(c);
      if (!ok) this.waitDrain = true;
    }
  }

  private onDrain(): void {
    if (!this.waitDrain) return;
    this.waitDrain = false;
    this.pump();
  }

  private sourceEnded(): void {
    const a = this.sourceAnswer;
    if (this.chunked) this.sock.write('0\r\n\r\n', 'latin1');
    this.detachSource();
    if (a) this.answered(a);
  }

  private detachSource(): void {
    const src = this.source;
    if (!src) return;
    src.off('readable', this.onSourceReadable);
    src.off('end', this.onSourceEnd);
    src.off('error', this.onSourceError);
    src.on('error', () => {});
    this.source = null;
    this.sourceAnswer = null;
    this.waitDrain = false;
  }

  /** An answer is all written: the next one goes, or the connection closes, or it waits for the next request. */
  private answered(a: Http1Answer): void {
    if (this.answers[0] === a) this.answers.shift();
    a.finish(false);
    // A body nobody read is read to its end and dropped, so the next request's bytes are reached.
    if (a.body && !a.body.readableEnded && !a.body.destroyed) {
      if (!a.keepAlive) a.body.destroy();
      else a.body.resume();
    }
    if (!a.keepAlive) {
      this.stopReading();
      this.sock.destroySoon();
      return;
    }
    this.idleSince = this.server.clock;
    if (this.queuePaused && this.answers.length < MAX_QUEUED_ANSWERS) {
      this.queuePaused = false;
      this.resumeIfFree();
    }
    const next = this.answers[0];
    if (next?.held) {
      const write = next.held;
      next.held = undefined;
      write();
    } else if (this.closing && this.answers.length === 0 && this.headStart < 0) this.destroy();
  }

  private resumeIfFree(): void {
    if (!this.bodyPaused && !this.queuePaused && !this.gone) this.resumeReads();
  }
}
