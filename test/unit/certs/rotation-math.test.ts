import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatDuration, parseDuration } from '../../../certs/duration.js';
import { backoffDelayMs, renewalDelayMs } from '../../../certs/rotator.js';
import { endpointTarget } from '../../../certs/workload-api/endpoint.js';

describe('rotation schedule', () => {
  it('renews at the midpoint of the validity window, never in the past', () => {
    const svid = { notBefore: new Date(1_000_000), notAfter: new Date(1_000_000 + 3_600_000) };
    assert.equal(renewalDelayMs(svid, 1_000_000), 1_800_000);
    assert.equal(renewalDelayMs(svid, 1_000_000 + 1_000_000), 800_000);
    assert.equal(renewalDelayMs(svid, 1_000_000 + 3_000_000), 0);
  });

  it('backs off exponentially with bounded jitter and a cap', () => {
    const mid = () => 0.5;
    assert.equal(backoffDelayMs(0, 250, 30_000, mid), 250);
    assert.equal(backoffDelayMs(1, 250, 30_000, mid), 500);
    assert.equal(backoffDelayMs(4, 250, 30_000, mid), 4000);
    assert.equal(backoffDelayMs(20, 250, 30_000, mid), 30_000);
    assert.equal(
      backoffDelayMs(100, 250, 30_000, () => 1),
      30_000,
    );
    assert.equal(
      backoffDelayMs(0, 250, 30_000, () => 0),
      200,
    );
  });
});

describe('durations', () => {
  it('parses and formats', () => {
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('2h30m'), 9_000_000);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('7d'), 604_800_000);
    assert.throws(() => parseDuration('1 h'), /invalid duration/);
    assert.throws(() => parseDuration('10'), /invalid duration/);
    assert.throws(() => parseDuration(''), /invalid duration/);
    assert.equal(formatDuration(3_661_000), '1h1m');
    assert.equal(formatDuration(59_000), '59s');
    assert.equal(formatDuration(-120_000), '-2m');
  });
});

describe('Workload API endpoint addresses', () => {
  it('accepts unix and tcp forms', () => {
    assert.equal(endpointTarget('unix:///run/spire/agent.sock'), 'unix:///run/spire/agent.sock');
    assert.equal(endpointTarget('unix:/run/spire/agent.sock'), 'unix:///run/spire/agent.sock');
    assert.equal(endpointTarget('tcp://127.0.0.1:8081'), 'ipv4:127.0.0.1:8081');
    assert.equal(endpointTarget('tcp://[::1]:8081'), 'ipv6:[::1]:8081');
  });
  it('refuses malformed ones with the reason', () => {
    assert.throws(() => endpointTarget('/run/agent.sock'), /not a URI/);
    assert.throws(() => endpointTarget('unix://host/run/agent.sock'), /no authority/);
    assert.throws(() => endpointTarget('unix:///a.sock?x=1'), /query/);
    assert.throws(() => endpointTarget('tcp://localhost:8081'), /IP address/);
    assert.throws(() => endpointTarget('tcp://127.0.0.1'), /port/);
    assert.throws(() => endpointTarget('http://127.0.0.1:80'), /scheme/);
  });
});
