import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { request } from 'undici';
import { nullLogger } from '../../../../lib/log.js';
import {
  AccessLog,
  type AccessLogRecord,
  MeshTelemetry,
  type RequestEvent,
} from '../../../../mesh-agent/telemetry/index.js';

const source = { workload: 'web', namespace: 'shop', version: 'v1', principal: 'spiffe://td/ns/shop/sa/web' };
const destination = {
  service: 'reviews',
  workload: 'reviews-v1',
  namespace: 'shop',
  version: 'v1',
  cluster: 'reviews-v1',
};
const ev = (i: number): RequestEvent => ({
  source,
  destination,
  protocol: 'http',
  reporter: 'source',
  code: 200,
  flags: '-',
  durationMs: i,
  path: `/item/${i}`,
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
});

function tmp(t: import('node:test').TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sockmesh-accesslog-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('MeshTelemetry writes one JSON line per request and per connection to a file', async (t) => {
  const file = join(tmp(t), 'access.log');
  const tel = new MeshTelemetry({
    nodeName: 'node-a',
    metricsPort: 0,
    accessLog: AccessLog.toFile(file, { node: 'node-a' }),
    logger: nullLogger,
  });
  t.after(() => tel.close());
  tel.requestCompleted(ev(1));
  tel.requestCompleted({ ...ev(2), code: 503, flags: 'UO' });
  tel.tcpClosed({
    source,
    destination,
    reporter: 'destination',
    bytesSent: 3,
    bytesReceived: 4,
    connectionId: 'c1',
  });
  tel.tcpOpened({ source, destination, reporter: 'destination' }); // no line for opens
  await tel.close();

  const lines = readFileSync(file, 'utf8').split('\n');
  assert.equal(lines.pop(), '', 'file ends with a newline');
  assert.equal(lines.length, 3);
  const recs = lines.map((l) => JSON.parse(l) as AccessLogRecord);
  assert.equal(recs[0]?.kind, 'request');
  assert.equal(recs[0]?.path, '/item/1');
  assert.equal(recs[0]?.node, 'node-a');
  assert.equal(recs[0]?.trace_id, '4bf92f3577b34da6a3ce929d0e0e4736');
  assert.equal(recs[1]?.response_code, 503);
  assert.equal(recs[1]?.response_flags, 'UO');
  assert.equal(recs[2]?.kind, 'connection');
  assert.equal(recs[2]?.connection_id, 'c1');
  assert.equal(recs[2]?.bytes_sent, 3);
});

test('writes are batched per event-loop turn, never synchronously', async (t) => {
  const writes: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(chunk.toString());
      cb();
    },
  });
  const log = new AccessLog(sink);
  t.after(() => log.close());
  for (let i = 0; i < 20; i++) log.request(ev(i));
  assert.equal(writes.length, 0, 'nothing written inside the calling turn');
  await new Promise((r) => setImmediate(r));
  assert.equal(writes.length, 1, 'one write for the whole batch');
  assert.equal(writes[0]?.split('\n').length, 21);
  log.request(ev(21));
  log.flush();
  assert.equal(writes.length, 2, 'flush writes at once');
});

test('a burst within one turn is written in bounded chunks, not one giant string', async (t) => {
  const sizes: number[] = [];
  const sink = new Writable({
    highWaterMark: 1 << 30, // accepts everything: only chunking is under test
    write(chunk: Buffer, _enc, cb) {
      sizes.push(chunk.length);
      cb();
    },
  });
  const log = new AccessLog(sink);
  t.after(() => log.close());
  const n = 5000;
  for (let i = 0; i < n; i++) log.request(ev(i));
  await new Promise((r) => setImmediate(r));
  assert.ok(sizes.length > 10, `chunks: ${sizes.length}`);
  assert.ok(Math.max(...sizes) < 128 * 1024, `largest chunk ${Math.max(...sizes)}`);
  assert.equal(log.droppedLines, 0);
});

test('a blocked sink buffers up to the limit, then drops and counts; close drains the rest', async (t) => {
  let release: (() => void) | null = null;
  const received: string[] = [];
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      received.push(chunk.toString());
      release = cb; // the disk is "stuck" until released
    },
  });
  let dropped = 0;
  const log = new AccessLog(sink, { maxBufferBytes: 2000, onDrop: (n) => (dropped += n) });
  log.request(ev(0));
  await new Promise((r) => setImmediate(r)); // first write: sink now over its high-water mark
  assert.equal(received.length, 1);
  for (let i = 1; i <= 50; i++) log.request(ev(i));
  await new Promise((r) => setImmediate(r));
  assert.equal(received.length, 1, 'nothing more written while blocked');
  assert.ok(dropped > 0, 'lines beyond the buffer are dropped');
  assert.equal(log.droppedLines, dropped);
  const kept = 50 - dropped;
  assert.ok(kept > 0);

  const closing = log.close();
  (release as (() => void) | null)?.();
  // Let the sink accept the rest without blocking.
  await new Promise((r) => setImmediate(r));
  (release as (() => void) | null)?.();
  await closing;
  t.after(() => sink.destroy());
  const lines = received.join('').split('\n').filter(Boolean);
  assert.equal(lines.length, 1 + kept);
  assert.equal((JSON.parse(lines.at(-1)!) as AccessLogRecord).path, `/item/${kept}`);
});

test('dropped lines show up as a metric; close gives up on a stuck sink', async (t) => {
  const sink = new Writable({
    highWaterMark: 1,
    write(_chunk, _enc, _cb) {
      // never completes: a sink that stopped
    },
  });
  t.after(() => sink.destroy());
  const tel = new MeshTelemetry({
    nodeName: 'n',
    metricsPort: 0,
    accessLog: new AccessLog(sink, { closeTimeoutMs: 50 }),
    logger: nullLogger,
  });
  t.after(() => tel.close());
  const { port } = await tel.start();
  tel.requestCompleted(ev(0));
  await new Promise((r) => setImmediate(r));
  for (let i = 0; i < 20_000; i++) tel.requestCompleted(ev(i));
  const r = await request(`http://127.0.0.1:${port}/metrics`);
  const text = await r.body.text();
  const m = /^sockmesh_access_log_dropped_total (\d+)$/m.exec(text);
  assert.ok(m, 'metric present');
  assert.ok(Number(m[1]) > 0);
  assert.equal(Number(m[1]), tel.accessLog?.droppedLines);
});
