/**
 * W3C Trace Context (traceparent / tracestate) for the proxy hop. Parsing,
 * validation and header writing are OTel's (parseTraceParent, TraceState,
 * W3CTraceContextPropagator); this module adapts them to header maps and adds
 * the strictness the proxy needs.
 */
import { context, defaultTextMapSetter, type SpanContext, TraceFlags, trace } from '@opentelemetry/api';
import { parseTraceParent, TraceState, W3CTraceContextPropagator } from '@opentelemetry/core';
import { RandomIdGenerator } from '@opentelemetry/sdk-trace-base';

export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';

/** Header maps as node:http, node:http2 and undici hand them out. */
export type HeaderCarrier = Readonly<Record<string, string | string[] | number | undefined>>;

const propagator = new W3CTraceContextPropagator();
const ids = new RandomIdGenerator();

/**
 * Parses a `traceparent` value. Returns null for anything invalid: wrong
 * length, uppercase hex, version `ff`, all-zero trace or span id, version 00
 * with trailing fields. Future versions are read forward-compatibly (first
 * four fields) as the spec asks. Only the `sampled` flag is kept: other bits
 * are undefined in version 00 and must not be propagated blindly.
 */
export function parseTraceparent(value: string | undefined | null): SpanContext | null {
  if (typeof value !== 'string' || value.length < 55) return null;
  // OTel tolerates one surrounding space; a header value never carries one.
  if (value.length === 55 || value.charCodeAt(55) === 0x2d /* - */) {
    const sc = parseTraceParent(value);
    if (!sc || value.startsWith(' ')) return null;
    return { ...sc, traceFlags: sc.traceFlags & TraceFlags.SAMPLED, isRemote: true };
  }
  return null;
}

/** Formats a span context as a version-00 `traceparent`. */
export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TraceFlags.SAMPLED ? '01' : '00'}`;
}

/**
 * Parses `tracestate` (several header lines are joined, as the spec allows).
 * Invalid members are dropped by OTel's TraceState; returns undefined when empty.
 */
export function parseTracestate(value: string | readonly string[] | undefined): TraceState | undefined {
  if (value === undefined) return undefined;
  const joined = typeof value === 'string' ? value : value.join(',');
  const ts = new TraceState(joined);
  return ts.serialize() === '' ? undefined : ts;
}

/** Reads traceparent + tracestate from request headers; null when absent or invalid. */
export function extractTraceContext(headers: HeaderCarrier): SpanContext | null {
  const tp = headers[TRACEPARENT];
  const sc = parseTraceparent(Array.isArray(tp) ? tp[0] : typeof tp === 'string' ? tp : undefined);
  if (!sc) return null;
  const ts = headers[TRACESTATE];
  const state = parseTracestate(Array.isArray(ts) || typeof ts === 'string' ? ts : undefined);
  if (state) sc.traceState = state;
  return sc;
}

/** Writes traceparent (and tracestate when present) into an outgoing header object. */
export function injectTraceContext(
  sc: SpanContext,
  headers: Record<string, string | string[] | undefined>,
): void {
  propagator.inject(trace.setSpanContext(context.active(), sc), headers, defaultTextMapSetter);
}

/**
 * The span context of this proxy hop: same trace and sampling decision as the
 * caller, a fresh span id. Without a caller, a new trace is started with the
 * given sampling decision.
 */
export function childSpanContext(parent: SpanContext | null | undefined, sampleRoot = false): SpanContext {
  if (parent) {
    const child: SpanContext = {
      traceId: parent.traceId,
      spanId: ids.generateSpanId(),
      traceFlags: parent.traceFlags,
    };
    if (parent.traceState) child.traceState = parent.traceState;
    return child;
  }
  return {
    traceId: ids.generateTraceId(),
    spanId: ids.generateSpanId(),
    traceFlags: sampleRoot ? TraceFlags.SAMPLED : TraceFlags.NONE,
  };
}

export type { SpanContext };
export { TraceState };
