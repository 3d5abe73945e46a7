/**
 * The destination's lean HTTP/1.1 relay: one admitted connection (a tunnel stream, or a
 * plaintext socket) to one connection to the pod, for ports no policy reads requests on.
 *
 * Requests are parsed with llhttp (strict, the binding node:http runs on) and only their heads
 * are rewritten: every x-forwarded-client-cert the sender wrote is dropped and the one the mTLS
 * peer proves is written, hop-by-hop headers go as the parse path drops them, bodies are
 * forwarded as llhttp delimited them (content-length as is, chunked re-framed from the decoded
 * chunks, so the pod reads exactly what was parsed here: no smuggling). Responses go back
 * byte for byte; their heads are parsed too (RESPONSE mode, no body callback) for the
 * per-request telemetry and to learn whether an upgrade was accepted.
 *
 * As the parse path does, a body that stops moving ends its exchange (`streamIdleTimeoutMs`, Envoy's
 * stream_idle_timeout: no byte either way while a request is under way; 408 if nothing of the
 * answer went back yet, else a reset), and a drain (the agent hands over to a new one) puts
 * `connection: close` on the next answer, then ends the connection; one idle for a second ends.
 *
 * Why not node:http + undici here: that pair costs about three times this per request on the
 * destination (docs/benchmarks.md, "Lean destination relay"), and one connection to the pod per
 * admitted connection keeps the caller's own keep-alive and pipelining semantics.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { HOP_BY_HOP } from '../io/headers.js';
import { answerAndClose, type HttpLimits, refusalStatus } from '../io/http-limits.js';
import { HTTPParser, type LlhttpParser, methods } from '../io/llhttp.js';

export interface RelayHooks {
  /** The x-forwarded-client-cert the pod reads (from the mTLS peer); none: the caller is unauthenticated. */
  xfcc: string | undefined;
  /** Host header for an HTTP/1.0 request without one. */
  defaultHost: string;
  limits: HttpLimits;
  /** A request came with an x-forwarded-client-cert other than `xfcc` (it was replaced). */
  forgedIdentity(): void;
  /** One exchange answered (final status, or 101), with the time from its request head. */
  answered(method: string, status: number, durationMs: number): void;
}

/**
 * Draining, a connection idle this long is ended. Not at once: a request the caller already
 * put on it would meet the end (the e2e upgrade saw 8 of 16 267 fail so); the agents' callers
 * retire their connections on the tunnel's GOAWAY within it (nghttp2's GOAWAY grace, as handoff/drain.ts).
 */
const DRAIN_IDLE_MS = 1000;

/** Written by this hop, whatever the request said (the pod's connection is this relay's). */
const DROPPED = new Set([...HOP_BY_HOP, 'http2-settings']);
for (const kept of ['transfer-encoding', 'upgrade']) DROPPED.delete(kept);

interface Exchange {
  method: string;
  started: number;
  /** The request asked to switch protocols (kept upgrade header): bytes after it wait for the answer. */
  upgrade: boolean;
  /** The final answer's status, once its head came. */
  status?: number;
}

export interface Http1RelayHandle {
  /** Lets the caller go: `connection: close` on the next answer, then the end; an idle connection ends within a second. */
  drain(): void;
}

/** Relays `client` <-> `pod` until one side closes. */
export function relayHttp1(client: Duplex, pod: Duplex, hooks: RelayHooks): Http1RelayHandle {
  return new Http1Relay(client, pod, hooks);
}

class Http1Relay {
  private readonly req: LlhttpParser;
  private readonly res: LlhttpParser;
  private partial: string[] = [];
  private url = '';
  private inHead = false;
  private chunked = false;
  private readonly inFlight: Exchange[] = [];
  /**
   * What one read's parse sends to the pod, written once it parsed whole: llhttp may take a
   * head before it refuses it (an invalid Transfer-Encoding), and nothing refused goes on.
   */
  private out: Array<string | Buffer> = [];
  /** How many exchanges were asked before the parse under way (-1: none under way). */
  private asked = -1;
  /** Client bytes after an upgrade request, held until the pod accepts (101) or answers normally. */
  private held: Buffer[] | undefined;
  private clientEnded = false;
  /** Both directions are bytes now (an accepted upgrade). */
  private raw = false;
  private stopped = false;
  /** One check per connection, not a timer per request: when the head under way began, or 0. */
  private headSince: number;
  /** Since when the connection has had no request under way, or 0. */
  private idleSince = 0;
  private readonly clock: RelayClock;
  /** A byte went either way since the last sweep (a flag, not a clock read per read). */
  private moved = false;
  /** When the last sweep saw bytes move. */
  private movedAt = 0;
  /** Nothing of an answer went back since the connection was last without a request in flight: a 408 is still possible. */
  private podQuiet = true;
  private draining = false;
  /** A request's body is still coming (its answer may have come already). */
  private reqOpen = false;
  /**
   * Draining, and the pod's next byte starts an answer head: its bytes are held until the head is
   * whole, to be written back with `connection: close` (undefined: not at a known answer start).
   */
  private podHeld: Buffer[] | undefined;
  /** The status of the head the last execute paused after (draining), 0: none. */
  private headEnded = 0;
  /** The answer with `connection: close` went back: the connection ends after it. */
  private closing = false;
  private endAfterWrite = false;
  /** Ended gracefully (drained): what the client still sends is dropped. */
  private ending = false;
  /** Per execute while draining: an answer completed, another began (after it). */
  private completed = false;
  private begun = false;

  constructor(
    private readonly client: Duplex,
    private readonly pod: Duplex,
    private readonly hooks: RelayHooks,
  ) {
    const req = new HTTPParser();
    req.initialize(HTTPParser.REQUEST, this, hooks.limits.maxHeaderBytes, HTTPParser.kLenientNone);
    req[HTTPParser.kOnMessageBegin] = this.onRequestBegin.bind(this);
    req[HTTPParser.kOnHeaders] = this.onHeaders.bind(this);
    req[HTTPParser.kOnHeadersComplete] = this.onRequestHead.bind(this);
    req[HTTPParser.kOnBody] = this.onRequestBody.bind(this);
    req[HTTPParser.kOnMessageComplete] = this.onRequestComplete.bind(this);
    this.req = req;
    const res = new HTTPParser();
    res.initialize(HTTPParser.RESPONSE, this, 0, HTTPParser.kLenientNone);
    res[HTTPParser.kOnHeadersComplete] = this.onResponseHead.bind(this);
    res[HTTPParser.kOnMessageComplete] = this.onResponseComplete.bind(this);
    this.res = res;
    // A new connection must send its first request head in time, as on the parse path.
    this.headSince = performance.now();
    const { headersTimeoutMs, streamIdleTimeoutMs } = hooks.limits;
    this.clock = RelayClock.every(
      Math.max(100, Math.floor(Math.min(headersTimeoutMs, streamIdleTimeoutMs) / 4)),
    );
    this.clock.add(this);

    client.on('data', (c: Buffer) => this.fromClient(c));
    client.on('end', () => this.clientEnd());
    pod.on('data', (c: Buffer) => this.fromPod(c));
    pod.on('end', () => {
      if (!this.raw && !this.stopped) {
        // An answer delimited by the close completes here.
        const r = this.res.finish();
        if (r) this.stop();
      }
      client.end();
    });
    client.on('drain', () => pod.resume());
    pod.on('drain', () => {
      if (!this.held) client.resume();
    });
    const kill = () => this.stop();
    client.on('error', kill);
    pod.on('error', kill);
    client.once('close', kill);
    pod.once('close', () => {
      // The pod's last answer may still be on its way to the caller (a close-delimited one, or
      // `Connection: close`): the relay ends once it is out, not before.
      if (client.writableEnded && !client.writableFinished) client.once('finish', kill);
      else kill();
    });
    client.resume();
  }

  private fromClient(chunk: Buffer): void {
    this.moved = true;
    if (this.raw) {
      if (!this.pod.write(chunk)) this.client.pause();
      return;
    }
    if (this.held) {
      this.held.push(chunk);
      this.client.pause();
      return;
    }
    if (this.ending) return;
    this.feed(chunk);
  }

  private feed(chunk: Buffer): void {
    let rest = chunk;
    for (;;) {
      if (this.stopped) return;
      this.asked = this.inFlight.length;
      const r = this.req.execute(rest);
      if (typeof r !== 'number') this.refuse(refusalStatus(r.code), `${r.code ?? 'invalid request'}`);
      this.asked = -1;
      if (this.stopped || typeof r !== 'number') {
        this.out = [];
        return;
      }
      this.flush();
      if (this.endAfterWrite) {
        // Draining, and the last body is in after its answer: nothing more is taken.
        this.endGracefully();
        return;
      }
      if (this.held) {
        // An upgrade request ends the parse (llhttp pauses): what follows waits for the pod's answer.
        if (r < rest.length) this.held.push(rest.subarray(r));
        this.client.pause();
        return;
      }
      if (r >= rest.length) return;
      // llhttp pauses after any head it takes for an upgrade (h2c, served as HTTP/1.1 here): go on.
      // It stops without a word at an HTTP/2 preface (PRI * HTTP/2.0) too: that is refused.
      if (r === 0) {
        this.refuse(400, 'HPE_PAUSED_H2_UPGRADE');
        return;
      }
      rest = rest.subarray(r);
    }
  }

  /** One corked write of what the last parse produced. */
  private flush(): void {
    const out = this.out;
    if (out.length === 0) return;
    this.out = [];
    const pod = this.pod;
    let ok = true;
    if (out.length === 1) ok = pod.write(out[0]!, 'latin1');
    else {
      pod.cork();
      for (const c of out) ok = pod.write(c, 'latin1');
      pod.uncork();
    }
    if (!ok) this.client.pause();
  }

  private clientEnd(): void {
    this.clientEnded = true;
    if (this.held) return;
    if (!this.raw && !this.stopped) {
      // Cut in the middle of a request: the pod must not take a truncated one as whole.
      if (this.inHead || this.req.finish()) {
        this.stop();
        return;
      }
    }
    this.pod.end();
  }

  private fromPod(chunk: Buffer): void {
    this.moved = true;
    if (!this.raw && !this.stopped) {
      if (this.draining) {
        this.fromPodDraining(chunk);
        return;
      }
      this.podQuiet = false;
      const r = this.res.execute(chunk);
      if (typeof r !== 'number') {
        // An answer node:http would refuse: the exchange is broken, the connection goes.
        this.stop();
        return;
      }
    }
    if (this.stopped) return;
    if (!this.client.write(chunk)) this.pod.pause();
  }

  /**
   * The pod's bytes once draining: the next answer whose head starts at a known byte goes back
   * with `connection: close` (the rest of it byte for byte), and the connection ends after it.
   * An answer whose start is not known (the pod pipelined it behind another in one read) goes
   * as it came; the connection then ends once idle for DRAIN_IDLE_MS.
   */
  private fromPodDraining(chunk: Buffer): void {
    let rest = chunk;
    while (rest.length > 0 && !this.stopped && !this.raw && !this.ending) {
      this.podQuiet = false;
      const held = this.podHeld;
      if (!held) {
        this.completed = false;
        this.begun = false;
        const r = this.res.execute(rest);
        if (typeof r !== 'number') {
          // Bytes after the answer that said close (llhttp refuses them): that answer goes, the rest not.
          if (this.endAfterWrite) this.send(rest.subarray(0, r.bytesParsed ?? 0));
          else this.stop();
          break;
        }
        if (this.stopped) return;
        this.send(rest);
        // An answer ended right at this read's end: the next one starts at the next byte.
        if (this.completed && !this.begun && !this.closing) this.podHeld = [];
        break;
      }
      this.headEnded = 0;
      const r = this.res.execute(rest);
      if (typeof r !== 'number') {
        this.stop();
        return;
      }
      if (this.stopped) return;
      if (this.raw) {
        // An upgrade the pod accepted: the connection is bytes now, left alone.
        this.podHeld = undefined;
        for (const h of held) this.send(h);
        this.send(rest);
        return;
      }
      if (this.headEnded === 0) {
        held.push(rest);
        break;
      }
      // The parse paused right after the head (onResponseHead returned 2): it is parsed again, whole.
      const head = held.length === 0 ? rest.subarray(0, r) : Buffer.concat([...held, rest.subarray(0, r)]);
      rest = rest.subarray(r);
      this.res.initialize(HTTPParser.RESPONSE, this, 0, HTTPParser.kLenientNone);
      if (this.headEnded < 200) {
        // An interim answer (100, 103): as it came, the final one is still to come.
        this.podHeld = [];
        this.send(head);
        continue;
      }
      this.podHeld = undefined;
      this.closing = true;
      const closing = closingHead(head);
      if (typeof this.res.execute(closing) !== 'number') {
        this.stop();
        return;
      }
      this.send(closing);
    }
    if (this.endAfterWrite) this.endGracefully();
  }

  private send(chunk: Buffer): void {
    if (chunk.length > 0 && !this.client.write(chunk)) this.pod.pause();
  }

  drain(): void {
    if (this.draining || this.stopped || this.raw || this.ending) return;
    this.draining = true;
    this.res[HTTPParser.kOnMessageBegin] = () => {
      this.begun = true;
    };
    // An idle connection is ended by the sweep once idle for DRAIN_IDLE_MS (tick).
    // No byte of the next answer came yet: its head is the one that says close.
    if (this.inFlight.length === 0 || (this.inFlight[0]!.status === undefined && this.podQuiet))
      this.podHeld = [];
  }

  private endGracefully(): void {
    if (this.stopped || this.ending) return;
    this.ending = true;
    this.clock.delete(this);
    this.client.end();
    this.pod.end();
  }

  private onRequestBegin(): void {
    this.inHead = true;
    this.idleSince = 0;
    // A new connection's first head is timed from the connection, as node:http does.
    if (this.headSince === 0) this.headSince = performance.now();
  }

  private onHeaders(headers: string[], url: string): void {
    for (const h of headers) this.partial.push(h);
    if (this.inHead) this.url += url;
  }

  private onRequestHead(
    major: number,
    minor: number,
    raw: string[] | undefined,
    methodIndex: number,
    url: string | undefined,
    _status: unknown,
    _statusMessage: unknown,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    if (this.stopped) return 1;
    this.inHead = false;
    let list = raw ?? [];
    if (this.partial.length > 0) {
      list = this.partial.concat(list);
      this.partial = [];
    }
    const target = this.url + (url ?? '');
    this.url = '';
    const method = methods[methodIndex] ?? 'GET';
    if (method === 'CONNECT') {
      // As the parse path (and Envoy): CONNECT is not proxied to a pod.
      this.refuse(404, 'no route: CONNECT is not proxied on this port');
      return 1;
    }
    const { limits } = this.hooks;
    if (list.length / 2 > limits.maxHeaderCount) {
      this.refuse(431, `request header fields too large: more than ${limits.maxHeaderCount} headers`);
      return 1;
    }
    // Names the Connection header lists are for this hop only.
    let listed: string[] | undefined;
    let upgradeTo = '';
    for (let i = 0; i < list.length; i += 2) {
      const name = list[i]!.toLowerCase();
      if (name === 'connection') {
        listed ??= [];
        for (const n of list[i + 1]!.split(',')) listed.push(n.trim().toLowerCase());
      } else if (name === 'upgrade') upgradeTo += `${list[i + 1]!.toLowerCase()},`;
    }
    // h2c would take the connection past this parser (h2c smuggling): served as plain HTTP/1.1.
    const switching = upgrade && upgradeTo !== '' && !upgradeTo.includes('h2c');
    let head = `${method} ${target} HTTP/${major}.${minor}\r\n`;
    let host = false;
    let chunked = false;
    let forged = false;
    for (let i = 0; i < list.length; i += 2) {
      const name = list[i]!.toLowerCase();
      const value = list[i + 1]!;
      if (DROPPED.has(name)) {
        if (name === 'x-forwarded-client-cert' && value !== this.hooks.xfcc) forged = true;
        continue;
      }
      if (name === 'upgrade') {
        if (!switching) continue;
        head += `${list[i]}: ${value}\r\n`;
        continue;
      }
      if (name === 'transfer-encoding') chunked = true;
      else if (name === 'host') host = true;
      else if (listed?.includes(name) && name !== 'content-length' && name !== 'transfer-encoding') continue;
      head += `${list[i]}: ${value}\r\n`;
    }
    if (forged) this.hooks.forgedIdentity();
    if (!host) {
      // node:http refuses an HTTP/1.1 request without Host (requireHostHeader); so does this hop.
      if (major === 1 && minor === 1) {
        this.refuse(400, 'missing Host header');
        return 1;
      }
      head += `host: ${this.hooks.defaultHost}\r\n`;
    }
    if (switching) head += 'connection: upgrade\r\n';
    else if (!keepAlive) head += 'connection: close\r\n';
    else if (major === 1 && minor === 0) head += 'connection: keep-alive\r\n';
    if (this.hooks.xfcc !== undefined) head += `x-forwarded-client-cert: ${this.hooks.xfcc}\r\n`;
    head += '\r\n';
    this.chunked = chunked;
    const started = performance.now();
    this.headSince = 0;
    this.inFlight.push({ method, started, upgrade: switching });
    this.reqOpen = true;
    this.out.push(head);
    return 0;
  }

  private onRequestBody(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.chunked) this.out.push(`${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
    else this.out.push(chunk);
  }

  private onRequestComplete(): void {
    if (this.stopped) return;
    this.reqOpen = false;
    if (this.inFlight.length === 0) {
      // Answered before its body was all in: the connection is idle from here.
      this.podQuiet = true;
      this.idleSince = performance.now();
    }
    if (this.chunked) {
      let last = '0\r\n';
      // Trailers (llhttp hands them over before this): passed on but for what this hop writes.
      for (let i = 0; i + 1 < this.partial.length; i += 2) {
        const name = this.partial[i]!.toLowerCase();
        if (
          DROPPED.has(name) ||
          name === 'transfer-encoding' ||
          name === 'content-length' ||
          name === 'host'
        ) {
          if (name === 'x-forwarded-client-cert') this.hooks.forgedIdentity();
          continue;
        }
        last += `${this.partial[i]}: ${this.partial[i + 1]}\r\n`;
      }
      this.out.push(`${last}\r\n`);
      this.chunked = false;
    }
    this.partial = [];
    this.url = '';
    const last = this.inFlight[this.inFlight.length - 1];
    if (last?.upgrade) this.held = [];
  }

  private onResponseHead(
    _major: number,
    _minor: number,
    _headers: unknown,
    _method: unknown,
    _url: unknown,
    status: number,
    _statusMessage: unknown,
    _upgrade: boolean,
  ): number {
    const ex = this.inFlight[0];
    if (!ex) {
      // An answer nobody asked for: the pod is out of step.
      this.stop();
      return 1;
    }
    if (this.podHeld && status !== 101) {
      // Draining: the parse stops right after this head (2: no body, pause), which is rewritten.
      this.headEnded = status;
      return 2;
    }
    if (status === 101) {
      if (!ex.upgrade) {
        this.stop();
        return 1;
      }
      this.hooks.answered(ex.method, 101, performance.now() - ex.started);
      this.switchToBytes();
      return 1;
    }
    // An interim answer (100 Continue, 103 Early Hints): the final one follows.
    if (status < 200) return 1;
    ex.status = status;
    if (ex.upgrade) {
      // Not switched: the held bytes are HTTP/1.1 again, parsed as such.
      ex.upgrade = false;
      const held = this.held;
      this.held = undefined;
      if (held) setImmediate(() => this.release(held));
    }
    // A HEAD answer announces a body it does not carry.
    return ex.method === 'HEAD' ? 1 : 0;
  }

  private onResponseComplete(): void {
    this.completed = true;
    const ex = this.inFlight[0];
    if (ex?.status === undefined) return;
    this.inFlight.shift();
    this.hooks.answered(ex.method, ex.status, performance.now() - ex.started);
    const idle = this.inFlight.length === 0 && !this.reqOpen;
    if (idle) {
      this.podQuiet = true;
      if (!this.inHead) this.idleSince = performance.now();
    }
    // Draining: the connection ends after the answer that said close.
    if (this.closing) this.endAfterWrite = true;
  }

  private release(held: Buffer[]): void {
    for (const c of held) {
      if (this.stopped || this.held) {
        // Another upgrade request among them: the rest waits again.
        if (this.held) this.held.push(c);
        continue;
      }
      this.feed(c);
    }
    if (this.stopped) return;
    if (!this.held) {
      this.client.resume();
      if (this.clientEnded) this.clientEnd();
    }
  }

  private switchToBytes(): void {
    this.raw = true;
    this.inFlight.length = 0;
    this.clock.delete(this);
    const held = this.held ?? [];
    this.held = undefined;
    for (const c of held) this.pod.write(c);
    if (this.clientEnded) this.pod.end();
    else this.client.resume();
  }

  /** The headers, stream idle and idle timeouts of io/http-limits.ts, as the parse path enforces them. */
  tick(): void {
    if (this.stopped || this.raw || this.ending) return;
    const now = performance.now();
    const { headersTimeoutMs, idleTimeoutMs, streamIdleTimeoutMs } = this.hooks.limits;
    if (this.headSince > 0 && now - this.headSince > headersTimeoutMs)
      this.refuse(408, 'ERR_HTTP_REQUEST_TIMEOUT');
    else if (this.inFlight.length > 0 || this.reqOpen) {
      if (this.moved) {
        this.moved = false;
        this.movedAt = now;
      } else if (now - this.movedAt > streamIdleTimeoutMs) {
        // Nothing of the answer went back yet: 408, as the parse path answers; else a reset.
        if (!this.podQuiet) this.stop();
        else {
          this.inFlight.length = 0;
          this.reqOpen = false;
          this.refuse(408, `no byte either way for ${streamIdleTimeoutMs} ms`);
        }
      }
    } else if (this.idleSince > 0 && this.draining && now - this.idleSince > DRAIN_IDLE_MS) {
      // Idle that long while draining: ended, so the caller's pool reconnects (to the agent that took over).
      this.endGracefully();
    } else if (this.idleSince > 0 && now - this.idleSince > idleTimeoutMs) this.stop();
  }

  /**
   * A request this hop refuses: answered as the parse path answers (io/http-limits.ts) when no
   * answer of the pod is under way, else the connection just closes; nothing of it reached the pod.
   */
  private refuse(status: number, reason: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clock.delete(this);
    this.free();
    // The requests of the read being parsed are dropped whole: an answer is due only for those sent before.
    if (this.asked >= 0) this.inFlight.length = this.asked;
    this.pod.destroy();
    if (this.inFlight.length > 0) {
      this.client.destroy();
      return;
    }
    answerAndClose(this.client, status, `${STATUS_CODES[status]?.toLowerCase()}: ${reason}\n`);
  }

  private stop(): void {
    if (this.stopped) {
      this.free();
      return;
    }
    this.stopped = true;
    this.clock.delete(this);
    this.free();
    if (!this.pod.destroyed) this.pod.destroy();
    if (!this.client.destroyed) this.client.destroy();
  }

  private freed = false;
  private free(): void {
    if (this.freed) return;
    this.freed = true;
    // Never from inside one of their own callbacks.
    setImmediate(() => {
      this.req.close();
      this.res.close();
    });
  }
}

/** The answer head with `connection: close` as its only Connection header (and no Keep-Alive), the rest as it was. */
function closingHead(head: Buffer): Buffer {
  const lines = head.toString('latin1').split('\r\n');
  let out = `${lines[0]}\r\n`;
  let dropping = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') break;
    // A folded line continues the header before it.
    if (line[0] !== ' ' && line[0] !== '\t') {
      const name = line.slice(0, line.indexOf(':')).trim().toLowerCase();
      dropping = name === 'connection' || name === 'keep-alive';
    }
    if (!dropping) out += `${line}\r\n`;
  }
  return Buffer.from(`${out}connection: close\r\n\r\n`, 'latin1');
}

/**
 * One interval for every relay with the same period (as node:http checks its connections),
 * not a timer per connection: 10 000 idle relays cost one callback per period.
 */
class RelayClock {
  private static readonly clocks = new Map<number, RelayClock>();
  private readonly relays = new Set<Http1Relay>();
  private timer: NodeJS.Timeout | undefined;

  private constructor(private readonly ms: number) {}

  static every(ms: number): RelayClock {
    let c = RelayClock.clocks.get(ms);
    if (!c) {
      c = new RelayClock(ms);
      RelayClock.clocks.set(ms, c);
    }
    return c;
  }

  add(r: Http1Relay): void {
    this.relays.add(r);
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const one of this.relays) one.tick();
    }, this.ms);
    this.timer.unref();
  }

  delete(r: Http1Relay): void {
    this.relays.delete(r);
    if (this.relays.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
