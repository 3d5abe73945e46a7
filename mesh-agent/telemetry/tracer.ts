/**
 * Spans for proxy hops. With an OTLP endpoint, spans are recorded by the OTel
 * SDK and exported in batches over OTLP/HTTP; without one, the tracer still
 * hands out child span contexts so trace context is propagated, at the cost
 * of one random span id and nothing else.
 */

import { createRequire } from 'node:module';
import {
  type Attributes,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { OTLPTraceExporter as OtlpExporter } from '@opentelemetry/exporter-trace-otlp-http';
import type { Resource } from '@opentelemetry/resources';
import type { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { SockmeshError } from '../../lib/errors.js';
import { childSpanContext, formatTraceparent, parseTraceparent } from './trace-context.js';

export type SpanStatus = 'ok' | 'error' | 'unset';
export type MeshSpanKind = 'client' | 'server' | 'internal';

/** A started span. `traceparent` is what to send upstream for this hop. */
export interface SpanHandle {
  readonly spanContext: SpanContext;
  readonly traceId: string;
  readonly spanId: string;
  readonly traceparent: string;
  readonly recording: boolean;
  setAttribute(key: string, value: string | number | boolean): void;
  end(status?: SpanStatus, message?: string): void;
}

export interface MeshTracerOptions {
  /** OTLP/HTTP endpoint: a base URL (`/v1/traces` is appended) or the full traces URL. */
  otlpEndpoint?: string;
  /** Fraction of new (parentless) traces that are sampled; callers' decisions are always followed. Default 1. */
  sampleRatio?: number;
  /** Batch export delay (ms). Default 5000. */
  exportDelayMs?: number;
  /** Time one export may take, retries included (ms). Default 10000. */
  exportTimeoutMs?: number;
  resource?: Resource;
}

const KIND: Record<MeshSpanKind, SpanKind> = {
  client: SpanKind.CLIENT,
  server: SpanKind.SERVER,
  internal: SpanKind.INTERNAL,
};

/** Resolves the traces URL from a base or full OTLP endpoint. */
export function otlpTracesUrl(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch (cause) {
    throw new SockmeshError('SOCKMESH_E_CONFIG', `invalid OTLP endpoint ${JSON.stringify(endpoint)}`, {
      hint: 'give an http(s) URL such as http://127.0.0.1:4318',
      cause,
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new SockmeshError('SOCKMESH_E_CONFIG', `OTLP endpoint must be http or https, got ${url.protocol}`, {
      hint: 'sockmesh exports OTLP over HTTP (JSON); use http://host:4318',
    });
  }
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/traces';
  return url.toString();
}

class PropagationOnlySpan implements SpanHandle {
  readonly recording = false;
  readonly traceparent: string;
  constructor(readonly spanContext: SpanContext) {
    this.traceparent = formatTraceparent(spanContext);
  }
  get traceId(): string {
    return this.spanContext.traceId;
  }
  get spanId(): string {
    return this.spanContext.spanId;
  }
  setAttribute(): void {}
  end(): void {}
}

class RecordingSpan implements SpanHandle {
  readonly recording: boolean;
  readonly spanContext: SpanContext;
  readonly traceparent: string;
  constructor(private readonly span: Span) {
    this.spanContext = span.spanContext();
    this.recording = span.isRecording();
    this.traceparent = formatTraceparent(this.spanContext);
  }
  get traceId(): string {
    return this.spanContext.traceId;
  }
  get spanId(): string {
    return this.spanContext.spanId;
  }
  setAttribute(key: string, value: string | number | boolean): void {
    this.span.setAttribute(key, value);
  }
  end(status: SpanStatus = 'unset', message?: string): void {
    if (status !== 'unset') {
      this.span.setStatus(
        status === 'ok'
          ? { code: SpanStatusCode.OK }
          : message === undefined
            ? { code: SpanStatusCode.ERROR }
            : { code: SpanStatusCode.ERROR, message },
      );
    }
    this.span.end();
  }
}

function isStringArray(v: unknown): v is readonly string[] {
  return Array.isArray(v);
}

export class MeshTracer {
  private readonly provider: BasicTracerProvider | null;
  private readonly tracer: Tracer | null;
  readonly exportUrl: string | null;

  constructor(opts: MeshTracerOptions = {}) {
    if (!opts.otlpEndpoint) {
      this.provider = null;
      this.tracer = null;
      this.exportUrl = null;
      return;
    }
    const ratio = opts.sampleRatio ?? 1;
    if (!(ratio >= 0 && ratio <= 1)) {
      throw new SockmeshError('SOCKMESH_E_CONFIG', `trace sample ratio ${ratio} is not in [0, 1]`, {
        hint: 'use 1 to sample every new trace, 0.01 for 1%',
      });
    }
    this.exportUrl = otlpTracesUrl(opts.otlpEndpoint);
    // Loaded only when spans are exported: the SDK and exporter are ~7 MiB of every agent process.
    const require = createRequire(import.meta.url);
    const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as {
      OTLPTraceExporter: typeof OtlpExporter;
    };
    const { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } =
      require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
    this.provider = new BasicTracerProvider({
      ...(opts.resource ? { resource: opts.resource } : {}),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }),
      spanProcessors: [
        new BatchSpanProcessor(
          new OTLPTraceExporter({ url: this.exportUrl, timeoutMillis: opts.exportTimeoutMs ?? 10_000 }),
          {
            scheduledDelayMillis: opts.exportDelayMs ?? 5000,
            exportTimeoutMillis: opts.exportTimeoutMs ?? 10_000,
          },
        ),
      ],
    });
    this.tracer = this.provider.getTracer('sockmesh-agent');
  }

  get exporting(): boolean {
    return this.tracer !== null;
  }

  /**
   * Starts a span for one proxy hop as a child of the caller's context
   * (a `traceparent` header value, repeated values of which the first counts,
   * or a span context from extractTraceContext, which also carries
   * tracestate; invalid or missing starts a new trace).
   */
  startSpan(
    name: string,
    parent: string | readonly string[] | SpanContext | null | undefined,
    attributes?: Attributes,
    kind: MeshSpanKind = 'client',
  ): SpanHandle {
    const parentSc =
      typeof parent === 'string'
        ? parseTraceparent(parent)
        : isStringArray(parent)
          ? parseTraceparent(parent[0])
          : (parent ?? null);
    if (!this.tracer) return new PropagationOnlySpan(childSpanContext(parentSc));
    const ctx = parentSc ? trace.setSpanContext(ROOT_CONTEXT, parentSc) : ROOT_CONTEXT;
    const span = this.tracer.startSpan(
      name,
      { kind: KIND[kind], ...(attributes ? { attributes } : {}) },
      ctx,
    );
    return new RecordingSpan(span);
  }

  /** Exports every ended span now. */
  async flush(): Promise<void> {
    await this.provider?.forceFlush();
  }

  async shutdown(): Promise<void> {
    await this.provider?.shutdown();
  }
}
