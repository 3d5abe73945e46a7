import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertificateAuthority } from '../../../certs/ca/authority.js';
import { SvidRotator } from '../../../certs/rotator.js';
import type { X509Svid } from '../../../certs/svid.js';
import { nullLogger } from '../../../lib/log.js';

describe('SvidRotator with real timers', () => {
  it('renews at half-life, keeps serving on failure, never serves an expired SVID, recovers', async (t) => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    let failing = false;
    let calls = 0;
    const rot = new SvidRotator({
      fetch: async () => {
        calls++;
        if (failing) throw new Error('CA unreachable');
        return ca.issueSvid({ namespace: 'a', serviceAccount: 'b' }, { ttlMs: 2000 });
      },
      backoff: { initialMs: 100, maxMs: 300 },
      logger: nullLogger,
    });
    t.after(() => rot.stop());
    const events: Array<X509Svid | null> = [];
    rot.subscribe((s) => events.push(s));

    const first = await rot.start();
    assert.equal(calls, 1);
    assert.equal(rot.current(), first);

    // Renewal happens at the midpoint of the validity window.
    const mid = first.notBefore.getTime() + (first.notAfter.getTime() - first.notBefore.getTime()) / 2;
    await sleep(Math.max(0, mid - Date.now()) + 300);
    assert.ok(calls >= 2, 'renewed at half-life');
    const second = rot.current()!;
    assert.notEqual(second.serial, first.serial);
    assert.equal(events.at(-1), second);

    // Renewals now fail: the still-valid SVID keeps being served while retries back off.
    failing = true;
    const callsAtFailure = calls;
    const mid2 = second.notBefore.getTime() + (second.notAfter.getTime() - second.notBefore.getTime()) / 2;
    await sleep(Math.max(0, mid2 - Date.now()) + 500);
    assert.ok(calls >= callsAtFailure + 2, `retried (${calls - callsAtFailure} attempts)`);
    // Asked at its last valid millisecond, whatever the time is now: a slow machine must not skip this.
    // test/unit/certs/rotator-clock.test.ts checks every step of the schedule on a fake clock.
    assert.equal(rot.current(second.notAfter.getTime() - 1), second, 'the still-valid SVID is kept');
    assert.ok(!events.includes(null) || Date.now() >= second.notAfter.getTime(), 'expiry told too early');

    // Past notAfter: nothing is served and subscribers were told.
    await sleep(Math.max(0, second.notAfter.getTime() - Date.now()) + 50);
    assert.equal(rot.current(), null);
    assert.equal(events.at(-1), null);

    // The CA comes back: the next retry serves a fresh SVID.
    failing = false;
    await sleep(500);
    const third = rot.current();
    assert.ok(third, 'recovered after the CA came back');
    assert.ok(third.notAfter.getTime() > Date.now());
    assert.equal(events.at(-1), third);
  });

  it('start() waits through failures for the first SVID', async (t) => {
    const ca = await CertificateAuthority.createRoot({ trustDomain: 'example.org' });
    let calls = 0;
    const rot = new SvidRotator({
      fetch: async () => {
        if (++calls < 3) throw new Error('not yet');
        return ca.issueSvid({ namespace: 'a', serviceAccount: 'b' });
      },
      backoff: { initialMs: 20, maxMs: 50 },
      logger: nullLogger,
    });
    t.after(() => rot.stop());
    assert.equal(rot.current(), null);
    const svid = await rot.start();
    assert.equal(calls, 3);
    assert.equal(rot.current(), svid);
  });
});
