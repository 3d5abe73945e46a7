/**
 * Structured JSON logs, one object per line on stderr, so stdout stays free for
 * command output and access logs can be piped to any collector.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LogSink {
  write(line: string): void;
}

function threshold(): number {
  const env = (process.env.SOCKMESH_LOG_LEVEL ?? 'info') as LogLevel;
  return ORDER[env] ?? ORDER.info;
}

class JsonLogger implements Logger {
  constructor(
    private readonly base: Record<string, unknown>,
    private readonly sink: LogSink,
    private readonly min: number,
  ) {}

  private emit(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    if (ORDER[level] < this.min) return;
    const rec = { ts: new Date().toISOString(), level, ...this.base, msg, ...fields };
    this.sink.write(`${JSON.stringify(rec, errorReplacer)}\n`);
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.emit('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.emit('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.emit('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.emit('error', msg, fields);
  }
  child(fields: Record<string, unknown>): Logger {
    return new JsonLogger({ ...this.base, ...fields }, this.sink, this.min);
  }
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(code === undefined ? {} : { code }) };
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/** A logger for one component (`bpf`, `lab`, `xds`, `agent`, ...). */
export function createLogger(component: string, sink: LogSink = process.stderr): Logger {
  return new JsonLogger({ component }, sink, threshold());
}

/** Discards everything; for library callers that want silence. */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return nullLogger;
  },
};
