// SvidRotator on a fake clock (node:test's mock timers drive both setTimeout and Date), so every
// assertion about "before expiry" and "at expiry" runs at an exact instant, however slow the machine.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { SvidRotator } from '../../../certs/rotator.js';
import type { X509Svid } from '../../../certs/svid.js';
import { nullLogger } from '../../../lib/log.js';

const T0 = Date.UTC(2030, 0, 1);
const ID = 'spiffe://example.org/ns/a/sa/b';

/** Lets promise chains and real crypto (on the thread pool) finish; setImmediate is not mocked. */
async function settle(pending: () => Promise<unknown> | undefined): Promise<void> {
  await pending()?.catch(() => {});
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

describe('SvidRotator on a fake clock', () => {
  it('renews at half-life, serves the current SVID up to its last millisecond while renewals fail, nothing at notAfter, recovers', async (t) => {
    // The CA is made before the clock is faked: its root is valid from now for a year, past T0.
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org', now: T0 - 60_000 });
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
    t.after(() => mock.timers.reset());
    let failing = false;
    let calls = 0;
    let inFlight: Promise<X509Svid> | undefined;
    const rot = new SvidRotator({
      fetch: () => {
        calls++;
        inFlight = failing
          ? Promise.reject(new Error('CA unreachable'))
          : ca.issueSvid(ID, { ttlMs: 10_000, now: Date.now() });
        return inFlight;
      },
      backoff: { initialMs: 100, maxMs: 300 },
      logger: nullLogger,
    });
    t.after(() => rot.stop());
    const events: Array<X509Svid | null> = [];
    rot.subscribe((s) => events.push(s));
    const advanceTo = async (at: number) => {
      // One millisecond at a time around the instants that matter would be slow; 10 ms steps with
      // a settle in between let each fired timer re-arm before the clock moves on.
      while (Date.now() < at) {
        mock.timers.tick(Math.min(10, at - Date.now()));
        await settle(() => inFlight);
      }
    };

    const first = await rot.start();
    assert.equal(calls, 1);
    const mid = (s: X509Svid) => s.notBefore.getTime() + (s.notAfter.getTime() - s.notBefore.getTime()) / 2;

    await advanceTo(Math.ceil(mid(first)) - 1);
    assert.equal(calls, 1, 'not renewed before half-life');
    await advanceTo(Math.ceil(mid(first)) + 10);
    assert.equal(calls, 2, 'renewed at half-life');
    const second = rot.current();
    assert.ok(second && second.serial !== first.serial, 'a new SVID after renewal');
    assert.equal(events.at(-1), second);

    failing = true;
    const callsAtFailure = calls;
    const lastValid = second.notAfter.getTime() - 1;
    await advanceTo(Math.ceil(mid(second)) + 10);
    assert.equal(calls, callsAtFailure + 1, 'the half-life renewal was tried');
    // Every 10 ms up to the last valid millisecond: the still-valid SVID is served, nobody was told otherwise.
    while (Date.now() < lastValid) {
      await advanceTo(Math.min(lastValid, Date.now() + 10));
      assert.equal(rot.current(), second, `served at notAfter-${second.notAfter.getTime() - Date.now()}ms`);
      assert.equal(events.at(-1), second);
    }
    assert.equal(Date.now(), lastValid);
    assert.equal(rot.current(), second, 'served at its last valid millisecond');
    assert.ok(calls >= callsAtFailure + 5, `retried with backoff (${calls - callsAtFailure} attempts)`);

    await advanceTo(second.notAfter.getTime());
    assert.equal(rot.current(), null, 'nothing is served at notAfter');
    assert.equal(events.at(-1), null, 'subscribers heard of the expiry');

    failing = false;
    await advanceTo(Date.now() + 300);
    const third = rot.current();
    assert.ok(third, 'recovered on the next retry after the CA came back');
    assert.ok(third.notAfter.getTime() > Date.now());
    assert.equal(events.at(-1), third);
  });
});
