/**
 * The few API server calls the control plane makes, on undici: JSON requests
 * (list, get, patch) and watch streams read line by line. No generated client:
 * every object stays `unknown` until the model validates it.
 */
import { readFileSync } from 'node:fs';
import { Agent, request, errors as undiciErrors } from 'undici';
import type { KubeConnection } from './config.js';

export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    /** The API's Status.reason (`NotFound`, `Gone`, `Conflict`, ...), when it sent one. */
    readonly reason: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: KubeObject;
}

/** The parts of any object the source reads itself; the rest is the model's business. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface KubeList {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: KubeObject[];
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
}

export class KubeClient {
  private readonly agent: Agent;
  private token: { value: string; readAt: number } | undefined;

  constructor(
    readonly connection: KubeConnection,
    opts: { connectTimeoutMs?: number; headersTimeoutMs?: number } = {},
  ) {
    this.agent = new Agent({
      connect: {
        ca: connection.ca,
        cert: connection.cert,
        key: connection.key,
        rejectUnauthorized: !connection.insecureSkipTlsVerify,
        timeout: opts.connectTimeoutMs ?? 10_000,
        keepAlive: true,
        keepAliveInitialDelay: 30_000,
      },
      // A watch body may stay quiet for minutes: the reflector's own watchdog judges silence.
      bodyTimeout: 0,
      headersTimeout: opts.headersTimeoutMs ?? 30_000,
    });
  }

  private authorization(): string | undefined {
    const c = this.connection;
    if (c.token) return `Bearer ${c.token}`;
    if (!c.tokenFile) return undefined;
    // Projected tokens rotate; client-go re-reads the file every minute.
    if (!this.token || Date.now() - this.token.readAt > 60_000) {
      this.token = { value: readFileSync(c.tokenFile, 'utf8').trim(), readAt: Date.now() };
    }
    return `Bearer ${this.token.value}`;
  }

  private url(apiPath: string, query?: RequestOptions['query']): string {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) q.set(k, String(v));
    const qs = q.toString();
    return `${this.connection.server}${apiPath}${qs ? `?${qs}` : ''}`;
  }

  private async send(method: string, apiPath: string, opts: RequestOptions) {
    const headers: Record<string, string> = { accept: 'application/json' };
    const auth = this.authorization();
    if (auth) headers.authorization = auth;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = opts.contentType ?? 'application/json';
    }
    try {
      return await request(this.url(apiPath, opts.query), {
        method: method as 'GET',
        headers,
        body,
        dispatcher: this.agent,
        signal: opts.signal,
      });
    } catch (err) {
      throw describeNetworkError(err, this.connection.server);
    }
  }

  /** A JSON request; a non-2xx answer throws KubeApiError with the Status message. */
  async json<T>(method: string, apiPath: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, apiPath, opts);
    const text = await res.body.text();
    if (res.statusCode < 200 || res.statusCode >= 300) throw statusError(res.statusCode, text, apiPath);
    return JSON.parse(text) as T;
  }

  /**
   * A watch: yields events as the server writes them (one JSON object a line).
   * `onBytes` is told of every chunk, bookmarks included, for the watchdog.
   * Ends when the server closes the stream; aborting `signal` ends it too.
   */
  async *watch(
    apiPath: string,
    query: RequestOptions['query'],
    signal: AbortSignal,
    onBytes: () => void,
  ): AsyncGenerator<WatchEvent> {
    const res = await this.send('GET', apiPath, { query: { ...query, watch: 1 }, signal });
    if (res.statusCode !== 200) throw statusError(res.statusCode, await res.body.text(), apiPath);
    onBytes();
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        onBytes();
        buffered += (chunk as Buffer).toString('utf8');
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line !== '') yield JSON.parse(line) as WatchEvent;
          nl = buffered.indexOf('\n');
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      throw describeNetworkError(err, this.connection.server);
    } finally {
      res.body.destroy();
    }
  }

  async close(): Promise<void> {
    await this.agent.destroy();
  }
}

function statusError(code: number, text: string, apiPath: string): KubeApiError {
  let reason: string | undefined;
  let message = text.slice(0, 500);
  try {
    const s = JSON.parse(text) as { reason?: string; message?: string };
    reason = s.reason;
    if (s.message) message = s.message;
  } catch {
    // not a Status: keep the text
  }
  return new KubeApiError(code, reason, `${apiPath}: HTTP ${code}${reason ? ` ${reason}` : ''}: ${message}`);
}

/** Network failures read as what happened to the connection, not as undici internals. */
function describeNetworkError(err: unknown, server: string): Error {
  if (err instanceof KubeApiError) return err;
  if (err instanceof Error && err.name === 'AbortError') return err;
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = e.code ?? e.cause?.code;
  const what =
    err instanceof undiciErrors.HeadersTimeoutError
      ? 'no answer (headers timeout)'
      : err instanceof undiciErrors.ConnectTimeoutError
        ? 'connect timeout'
        : (code ?? (err instanceof Error ? err.message : String(err)));
  const out = new Error(`API server ${server}: ${what}`, { cause: err });
  (out as NodeJS.ErrnoException).code = code;
  return out;
}
