import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  childSpanContext,
  extractTraceContext,
  formatTraceparent,
  injectTraceContext,
  parseTraceparent,
  parseTracestate,
} from '../../../../mesh-agent/telemetry/index.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const VALID = `00-${TRACE}-${SPAN}-01`;

describe('parseTraceparent', () => {
  const valid: Array<[string, string, number]> = [
    ['sampled', VALID, 1],
    ['not sampled', `00-${TRACE}-${SPAN}-00`, 0],
    ['unknown flag bits are dropped', `00-${TRACE}-${SPAN}-ff`, 1],
    ['unknown flag bits without sampled', `00-${TRACE}-${SPAN}-02`, 0],
    ['future version, extra fields', `01-${TRACE}-${SPAN}-01-whatever`, 1],
    ['future version, exact length', `cc-${TRACE}-${SPAN}-00`, 0],
  ];
  for (const [name, value, flags] of valid) {
    test(`valid: ${name}`, () => {
      const sc = parseTraceparent(value);
      assert.ok(sc, value);
      assert.equal(sc.traceId, TRACE);
      assert.equal(sc.spanId, SPAN);
      assert.equal(sc.traceFlags, flags);
      assert.equal(sc.isRemote, true);
    });
  }

  const invalid: Array<[string, string | undefined]> = [
    ['undefined', undefined],
    ['empty', ''],
    ['version ff', `ff-${TRACE}-${SPAN}-01`],
    ['version not hex', `0x-${TRACE}-${SPAN}-01`],
    ['version 00 with trailing field', `${VALID}-extra`],
    ['version 00 with trailing char', `${VALID}0`],
    ['too short (54)', VALID.slice(0, 54)],
    ['trace id too short', `00-${TRACE.slice(1)}-${SPAN}-01`],
    ['span id too long', `00-${TRACE}-${SPAN}0-01`],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${SPAN}-01`],
    ['all-zero span id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['uppercase trace id', `00-${TRACE.toUpperCase()}-${SPAN}-01`],
    ['uppercase span id', `00-${TRACE}-${SPAN.toUpperCase()}-01`],
    ['uppercase flags', `00-${TRACE}-${SPAN}-0A`],
    ['leading space', ` ${VALID}`],
    ['trailing space', `${VALID} `],
    ['wrong separator', VALID.replaceAll('-', '_')],
    ['non-hex in trace id', `00-${TRACE.slice(0, 31)}g-${SPAN}-01`],
    ['future version, no dash after flags', `01-${TRACE}-${SPAN}-01x`],
  ];
  for (const [name, value] of invalid) {
    test(`invalid: ${name}`, () => {
      assert.equal(parseTraceparent(value), null);
    });
  }
});

describe('formatTraceparent', () => {
  test('round-trips a parsed value', () => {
    const sc = parseTraceparent(VALID);
    assert.ok(sc);
    assert.equal(formatTraceparent(sc), VALID);
  });
  test('always writes version 00 and only the sampled bit', () => {
    assert.equal(
      formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 0xff }),
      `00-${TRACE}-${SPAN}-01`,
    );
    assert.equal(
      formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 0 }),
      `00-${TRACE}-${SPAN}-00`,
    );
  });
});

describe('childSpanContext', () => {
  test('keeps trace id, flags and tracestate; new span id', () => {
    const parent = parseTraceparent(VALID);
    assert.ok(parent);
    parent.traceState = parseTracestate('vendor=abc');
    const child = childSpanContext(parent);
    assert.equal(child.traceId, TRACE);
    assert.notEqual(child.spanId, SPAN);
    assert.match(child.spanId, /^[0-9a-f]{16}$/);
    assert.equal(child.traceFlags, 1);
    assert.equal(child.traceState?.get('vendor'), 'abc');
    assert.equal(child.isRemote, undefined);
  });
  test('without a parent starts a new valid trace', () => {
    const a = childSpanContext(null);
    const b = childSpanContext(undefined, true);
    assert.ok(parseTraceparent(formatTraceparent(a)));
    assert.match(a.traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(a.traceId, b.traceId);
    assert.equal(a.traceFlags, 0);
    assert.equal(b.traceFlags, 1);
  });
});

describe('parseTracestate', () => {
  test('parses members and joins repeated headers', () => {
    const ts = parseTracestate(['rojo=00f067aa0ba902b7', 'congo=t61rcWkgMzE']);
    assert.equal(ts?.get('rojo'), '00f067aa0ba902b7');
    assert.equal(ts?.get('congo'), 't61rcWkgMzE');
    assert.equal(ts?.serialize(), 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
  });
  test('drops invalid members; empty is undefined', () => {
    assert.equal(parseTracestate('UPPER=1,ok=2')?.serialize(), 'ok=2');
    assert.equal(parseTracestate('=,,'), undefined);
    assert.equal(parseTracestate(undefined), undefined);
  });
});

describe('extract / inject', () => {
  test('reads node-style headers and writes them back', () => {
    const sc = extractTraceContext({ traceparent: VALID, tracestate: 'a=1', host: 'x' });
    assert.ok(sc);
    assert.equal(sc.traceId, TRACE);
    assert.equal(sc.traceState?.get('a'), '1');
    const child = childSpanContext(sc);
    const out: Record<string, string> = {};
    injectTraceContext(child, out);
    assert.equal(out.traceparent, `00-${TRACE}-${child.spanId}-01`);
    assert.equal(out.tracestate, 'a=1');
  });
  test('ignores invalid or missing traceparent (and then tracestate)', () => {
    assert.equal(extractTraceContext({}), null);
    assert.equal(extractTraceContext({ traceparent: `${VALID} ` }), null);
    assert.equal(extractTraceContext({ traceparent: VALID.toUpperCase(), tracestate: 'a=1' }), null);
  });
  test('uses the first of repeated traceparent headers', () => {
    const sc = extractTraceContext({ traceparent: [VALID, `00-${'1'.repeat(32)}-${SPAN}-01`] });
    assert.equal(sc?.traceId, TRACE);
  });
});
