/**
 * Protocol detection on a captured connection whose Service port does not
 * say what it speaks (Istio's "auto" protocol): the first bytes decide.
 * An HTTP/1.x request line means HTTP/1.1, the HTTP/2 connection preface
 * means h2c, anything else TCP; so does silence for a short while, since a
 * server-first protocol (SMTP, MySQL) waits for the server to speak.
 */
import type { Duplex } from 'node:stream';
import { matchH2Preface } from '../io/h2c.js';

export type Detected = 'http1' | 'h2c' | 'tcp';

/** Istio waits this long for the client's first bytes before settling on TCP. */
export const DETECT_TIMEOUT_MS = 100;

/** A request line longer than this is not taken for HTTP (Envoy's http_inspector reads at most 64 KiB; lines are short). */
const MAX_LINE = 8 * 1024;

const REQUEST_LINE = /^[A-Z]{1,20} [\x21-\x7e]+ HTTP\/1\.[01]$/;
const PARTIAL_TARGET = /^[A-Z]{1,20}( [\x21-\x7e]*)?$/;
const PARTIAL_VERSION = /^[A-Z]{1,20} [\x21-\x7e]+ ([A-Z0-9/.]{0,8})\r?$/;

/** What the bytes so far say; `more` when they are still a prefix of an HTTP request line or preface. */
export function classifyPreface(buf: Buffer): Detected | 'more' {
  if (buf.length === 0) return 'more';
  const h2 = matchH2Preface(buf);
  if (h2 !== 'no') return h2 === 'yes' ? 'h2c' : 'more';
  const nl = buf.indexOf(0x0a);
  if (nl < 0) {
    if (buf.length >= MAX_LINE) return 'tcp';
    const text = buf.toString('latin1');
    if (PARTIAL_TARGET.test(text)) return 'more';
    const v = PARTIAL_VERSION.exec(text)?.[1];
    if (v === undefined) return 'tcp';
    const version = v.replace(/\r$/, '');
    return 'HTTP/1.1'.startsWith(version) || 'HTTP/1.0'.startsWith(version) ? 'more' : 'tcp';
  }
  if (nl > MAX_LINE) return 'tcp';
  const line = buf.toString('latin1', 0, nl).replace(/\r$/, '');
  return REQUEST_LINE.test(line) ? 'http1' : 'tcp';
}

/**
 * Reads the first bytes of conn until they decide, then puts them back (so
 * whichever handler takes the connection sees everything) and calls decide,
 * paused. With timeoutMs, silence or an undecided prefix for that long is
 * TCP. A connection that ends or fails before deciding is destroyed.
 */
export function detectProtocol(
  conn: Duplex,
  timeoutMs: number | undefined,
  decide: (protocol: Detected) => void,
): void {
  let seen: Buffer = Buffer.alloc(0);
  let timer: NodeJS.Timeout | undefined;
  const finish = (p: Detected) => {
    if (timer) clearTimeout(timer);
    conn.off('data', onData);
    conn.off('end', onEnd);
    conn.pause();
    if (seen.length > 0) conn.unshift(seen);
    decide(p);
  };
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const c = classifyPreface(seen);
    if (c !== 'more') finish(c);
  };
  const onEnd = () => {
    if (timer) clearTimeout(timer);
    conn.destroy();
  };
  conn.on('data', onData);
  conn.once('end', onEnd);
  conn.once('close', () => {
    if (timer) clearTimeout(timer);
  });
  if (timeoutMs !== undefined) timer = setTimeout(() => finish('tcp'), timeoutMs);
  conn.resume();
}
