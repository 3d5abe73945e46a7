/**
 * The llhttp binding node:http's client and server run on (`_http_common`, the same on Node 20
 * and 24), typed for the agent's own HTTP/1.1 paths: one parser per connection, callbacks bound
 * once, no IncomingMessage objects. Strict by default (kLenientNone): whatever node:http would
 * refuse is refused here too.
 */
import { createRequire } from 'node:module';

export interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string; bytesParsed?: number });
  finish(): undefined | (Error & { code?: string });
  close(): void;
  free?(): void;
  /**
   * Feeds the parser straight from a stream handle (libuv's reads go into llhttp in C++, no JS
   * Buffer or 'data' event per read); each read's result comes to `this[kOnExecute](ret)`.
   */
  consume(handle: object): void;
  /** Gives the handle's reads back to its JS stream. */
  unconsume(): void;
  [kind: number]: unknown;
}

export interface LlhttpParserClass {
  new (): LlhttpParser;
  REQUEST: number;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
  kLenientNone: number;
}

const common = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: LlhttpParserClass;
  methods: readonly string[];
};

export const HTTPParser = common.HTTPParser;

/**
 * kOnHeadersComplete's arguments as node's parser binding passes them:
 * (versionMajor, versionMinor, headers, method, url, statusCode, statusMessage, upgrade, shouldKeepAlive).
 * `method` indexes this list (llhttp's order, not http.METHODS'); `headers` is a flat
 * [name, value, ...] list unless the head spanned several reads, in which case they came through
 * kOnHeaders first.
 */
export const methods = common.methods;
