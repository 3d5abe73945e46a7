import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { asPlainDuplex } from '../../../mesh-agent/io/streams.js';

/** A Duplex that records how it is written to (one entry per _write / _writev call). */
function recordingInner() {
  const calls: string[][] = [];
  const inner = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      calls.push([chunk.toString()]);
      cb();
    },
    writev(chunks, cb) {
      calls.push(chunks.map((c) => Buffer.from(c.chunk as Buffer).toString()));
      cb();
    },
  });
  return { inner, calls };
}

describe('asPlainDuplex', () => {
  it('passes writes corked together (a response head and body) on as one write', async () => {
    const { inner, calls } = recordingInner();
    const outer = asPlainDuplex(inner);
    let acked = 0;
    outer.cork();
    outer.write('HTTP/1.1 200 OK\r\n\r\n', () => acked++);
    outer.write('body', () => acked++);
    outer.uncork();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(calls, [['HTTP/1.1 200 OK\r\n\r\n', 'body']]);
    assert.equal(acked, 2, 'every write is acknowledged');
  });

  it('keeps single writes single, in order', async () => {
    const { inner, calls } = recordingInner();
    const outer = asPlainDuplex(inner);
    outer.write('a');
    await new Promise((r) => setImmediate(r));
    outer.write('b');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(calls, [['a'], ['b']]);
  });

  it('delivers what the inner stream reads, and its end', async () => {
    const { inner } = recordingInner();
    const outer = asPlainDuplex(inner);
    const got: string[] = [];
    outer.on('data', (c: Buffer) => got.push(c.toString()));
    inner.push('x');
    inner.push('y');
    inner.push(null);
    await once(outer, 'end');
    assert.equal(got.join(''), 'xy');
  });
});
