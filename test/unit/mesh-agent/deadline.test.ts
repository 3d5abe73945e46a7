import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeadlineSignal } from '../../../mesh-agent/io/deadline.js';

describe('DeadlineSignal', () => {
  it('fires once after its time with a TimeoutError reason, calling every listener', async () => {
    const d = new DeadlineSignal(20);
    let calls = 0;
    d.once('abort', () => calls++);
    d.on('abort', () => calls++);
    assert.equal(d.aborted, false);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(d.aborted, true);
    assert.equal(calls, 2);
    assert.equal(d.reason?.name, 'TimeoutError');
    assert.equal(d.pending, false);
  });

  it('stops its timer when the last listener is removed, and never fires then', async () => {
    const d = new DeadlineSignal(20);
    const a = () => assert.fail('fired after release');
    const b = () => assert.fail('fired after release');
    d.once('abort', a);
    d.once('abort', b);
    d.removeListener('abort', a);
    assert.equal(d.pending, true, 'one listener left: still armed');
    d.off('abort', b);
    assert.equal(d.pending, false);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(d.aborted, false);
  });

  it('ignores other events and listeners it does not hold', () => {
    const d = new DeadlineSignal(1000);
    const a = () => {};
    d.once('close', a);
    d.removeListener('abort', a);
    assert.equal(d.pending, false, 'no listener: nothing to wait for');
    d.release();
  });
});
