/**
 * JSON access log: one object per line per request (HTTP) or connection (TCP).
 * Lines are batched and written once per event-loop turn so the proxy never
 * waits on the sink; when the sink cannot keep up, lines beyond the buffer
 * limit are dropped and counted rather than held in memory without bound.
 */
import { createWriteStream } from 'node:fs';
import type { RequestEvent, TcpCloseEvent } from './types.js';

/** The stable shape of one access log line (keys always present; null = unknown). */
export interface AccessLogRecord {
  start_time: string;
  duration_ms: number | null;
  kind: 'request' | 'connection';
  node: string;
  reporter: string;
  protocol: string;
  method: string | null;
  path: string | null;
  authority: string | null;
  response_code: number | null;
  response_flags: string;
  bytes_received: number | null;
  bytes_sent: number | null;
  source_workload: string;
  source_namespace: string;
  source_version: string;
  source_principal: string;
  downstream_address: string | null;
  destination_service: string;
  destination_workload: string;
  destination_namespace: string;
  destination_version: string;
  route_name: string | null;
  upstream_cluster: string;
  upstream_host: string | null;
  trace_id: string | null;
  span_id: string | null;
  connection_id: string | null;
}

/** What the log writes to: a file stream, stdout, a socket. */
export interface AccessLogSink {
  write(chunk: string): boolean;
  once(event: 'drain', listener: () => void): unknown;
  end?(cb?: () => void): unknown;
}

export interface AccessLogOptions {
  /** Node name written in every line. */
  node?: string;
  /** Lines held while the sink is blocked before new ones are dropped (bytes). Default 4 MiB. */
  maxBufferBytes?: number;
  /** Called with the number of lines dropped. */
  onDrop?: (lines: number) => void;
  /** End the sink on close (true for sinks the log opened itself). */
  ownsSink?: boolean;
  /** How long close() waits for a blocked sink before dropping what is left (ms). Default 2000. */
  closeTimeoutMs?: number;
}

function startIso(startTime: number | undefined, durationMs: number | undefined): string {
  return new Date(startTime ?? Date.now() - (durationMs ?? 0)).toISOString();
}

export function requestRecord(ev: RequestEvent, node = ''): AccessLogRecord {
  return {
    start_time: startIso(ev.startTime, ev.durationMs),
    duration_ms: ev.durationMs,
    kind: 'request',
    node,
    reporter: ev.reporter,
    protocol: ev.protocol,
    method: ev.method ?? null,
    path: ev.path ?? null,
    authority: ev.authority ?? null,
    response_code: ev.code,
    response_flags: ev.flags || '-',
    bytes_received: ev.bytesReceived ?? null,
    bytes_sent: ev.bytesSent ?? null,
    source_workload: ev.source.workload,
    source_namespace: ev.source.namespace,
    source_version: ev.source.version,
    source_principal: ev.source.principal,
    downstream_address: ev.downstreamAddress ?? null,
    destination_service: ev.destination.service,
    destination_workload: ev.destination.workload,
    destination_namespace: ev.destination.namespace,
    destination_version: ev.destination.version,
    route_name: ev.route ?? null,
    upstream_cluster: ev.destination.cluster,
    upstream_host: ev.upstreamHost ?? null,
    trace_id: ev.traceId ?? null,
    span_id: ev.spanId ?? null,
    connection_id: null,
  };
}

export function connectionRecord(ev: TcpCloseEvent, node = ''): AccessLogRecord {
  return {
    start_time: startIso(ev.startTime, ev.durationMs),
    duration_ms: ev.durationMs ?? null,
    kind: 'connection',
    node,
    reporter: ev.reporter,
    protocol: 'tcp',
    method: null,
    path: null,
    authority: null,
    response_code: null,
    response_flags: ev.flags || '-',
    bytes_received: ev.bytesReceived,
    bytes_sent: ev.bytesSent,
    source_workload: ev.source.workload,
    source_namespace: ev.source.namespace,
    source_version: ev.source.version,
    source_principal: ev.source.principal,
    downstream_address: ev.downstreamAddress ?? null,
    destination_service: ev.destination.service,
    destination_workload: ev.destination.workload,
    destination_namespace: ev.destination.namespace,
    destination_version: ev.destination.version,
    route_name: null,
    upstream_cluster: ev.destination.cluster,
    upstream_host: ev.upstreamHost ?? null,
    trace_id: ev.traceId ?? null,
    span_id: null,
    connection_id: ev.connectionId === undefined ? null : String(ev.connectionId),
  };
}

const DEFAULT_MAX_BUFFER = 4 * 1024 * 1024;
const FLUSH_BYTES = 64 * 1024;

export class AccessLog {
  private readonly node: string;
  private readonly maxBuffer: number;
  private readonly onDrop: ((lines: number) => void) | undefined;
  private readonly ownsSink: boolean;
  private readonly closeTimeoutMs: number;
  private pending: string[] = [];
  private pendingBytes = 0;
  private scheduled = false;
  private blocked = false;
  private closed = false;
  private dropped = 0;

  constructor(
    private readonly sink: AccessLogSink,
    opts: AccessLogOptions = {},
  ) {
    this.node = opts.node ?? '';
    this.maxBuffer = opts.maxBufferBytes ?? DEFAULT_MAX_BUFFER;
    this.onDrop = opts.onDrop;
    this.ownsSink = opts.ownsSink ?? false;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 2000;
  }

  /** Appends to a file (created if missing); the file is closed with the log. */
  static toFile(path: string, opts: Omit<AccessLogOptions, 'ownsSink'> = {}): AccessLog {
    return new AccessLog(createWriteStream(path, { flags: 'a' }), { ...opts, ownsSink: true });
  }

  /** Lines dropped so far because the sink was blocked and the buffer full. */
  get droppedLines(): number {
    return this.dropped;
  }

  request(ev: RequestEvent): void {
    this.write(requestRecord(ev, this.node));
  }

  connection(ev: TcpCloseEvent): void {
    this.write(connectionRecord(ev, this.node));
  }

  write(record: AccessLogRecord): void {
    if (this.closed) return;
    if (this.blocked && this.pendingBytes >= this.maxBuffer) {
      this.dropped++;
      this.onDrop?.(1);
      return;
    }
    const line = `${JSON.stringify(record)}\n`;
    if (this.blocked && this.pendingBytes + line.length > this.maxBuffer) {
      this.dropped++;
      this.onDrop?.(1);
      return;
    }
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.blocked) return;
    // A burst within one turn is handed over in chunks; the stream queues
    // them and says when to stop (then lines wait here, up to maxBuffer).
    if (this.pendingBytes >= FLUSH_BYTES) {
      this.flushNow();
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushNow);
    }
  }

  /** Hands pending lines to the sink now instead of at the end of this turn. */
  flush(): void {
    if (!this.blocked) this.flushNow();
  }

  /**
   * Writes everything pending, then (if the log owns it) closes the sink. A
   * sink that stays blocked longer than closeTimeoutMs loses what is left.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const deadline = Date.now() + this.closeTimeoutMs;
    while (this.pending.length > 0) {
      if (this.blocked) {
        const drained = await withTimeout(
          new Promise<boolean>((resolve) => this.sink.once('drain', () => resolve(true))),
          deadline - Date.now(),
        );
        if (!drained) {
          this.dropped += this.pending.length;
          this.onDrop?.(this.pending.length);
          this.pending = [];
          this.pendingBytes = 0;
          return;
        }
      }
      this.blocked = false;
      this.flushNow();
    }
    const end = this.sink.end;
    if (this.ownsSink && end) {
      await withTimeout(
        new Promise<boolean>((resolve) => end.call(this.sink, () => resolve(true))),
        deadline - Date.now(),
      );
    }
  }

  private readonly flushNow = (): void => {
    this.scheduled = false;
    if (this.blocked || this.pending.length === 0) return;
    const chunk = this.pending.length === 1 ? this.pending[0]! : this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.sink.write(chunk)) {
      this.blocked = true;
      this.sink.once('drain', this.onDrain);
    }
  };

  private readonly onDrain = (): void => {
    this.blocked = false;
    if (!this.closed) this.flushNow();
  };
}

/** Resolves the promise's value, or false once ms have passed. */
function withTimeout(p: Promise<boolean>, ms: number): Promise<boolean> {
  if (ms <= 0) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    p.then((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}
