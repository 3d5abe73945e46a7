import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { type AttemptLoop, type AttemptResult, runAttempts } from '../../../mesh-agent/outbound/attempts.js';
import type { BreakerKind, Endpoint, Outcome, UpstreamCluster } from '../../../mesh-agent/outbound/plan.js';
import { ReplayableBody } from '../../../mesh-agent/outbound/replay-body.js';

const ep = (port: number, local = false): Endpoint => ({
  key: `10.0.0.1:${port}`,
  ip: '10.0.0.1',
  port,
  node: 'n',
  local,
  tunnelAddress: undefined,
  spiffeId: undefined,
  version: undefined,
  workload: undefined,
  namespace: undefined,
});

class Cluster implements UpstreamCluster {
  readonly name = 'c';
  readonly connectTimeoutMs = 1000;
  readonly service = 's';
  readonly version = undefined;
  retries = 10;
  reports: Outcome[] = [];
  inFlight = 0;
  private n = 0;
  constructor(private readonly eps: Endpoint[]) {}
  pick() {
    return this.eps.length ? this.eps[this.n++ % this.eps.length]! : null;
  }
  tryAcquire(kind: BreakerKind) {
    if (kind === 'retry' && this.retries-- <= 0) return null;
    return () => {};
  }
  report(_e: Endpoint, o: Outcome) {
    this.reports.push(o);
  }
  track() {
    this.inFlight++;
    return () => {
      this.inFlight--;
    };
  }
}

const retry = (numRetries: number, perTryTimeoutMs?: number) => ({
  numRetries,
  perTryTimeoutMs,
  shouldRetry: (o: Outcome) => o.kind !== 'success' && (o.kind !== 'status' || o.status >= 500),
  backoffMs: () => 0,
});

/** Scripted attempts: each entry is one try's result (a status or a failure). */
function loop(
  cluster: Cluster,
  script: Array<number | AttemptResult<string>>,
  over: Partial<AttemptLoop<string>> = {},
) {
  const budgets: Array<number | undefined> = [];
  const discarded: string[] = [];
  let overflow = 0;
  const l: AttemptLoop<string> = {
    cluster,
    hashKey: undefined,
    retry: retry(2),
    replayable: () => true,
    deadline: undefined,
    admit: () => undefined,
    attempt: async (_e, budget, n) => {
      budgets.push(budget);
      const s = script[n - 1]!;
      return typeof s === 'number' ? { kind: 'response', status: s, response: `r${n}` } : s;
    },
    discard: (r) => discarded.push(r),
    retryOverflow: () => {
      overflow++;
    },
    sleep: async () => {},
    ...over,
  };
  return { l, budgets, discarded, overflows: () => overflow };
}

const reset: AttemptResult<string> = { kind: 'failed', outcome: { kind: 'reset' }, flag: 'UR' };

describe('runAttempts: one retry loop for HTTP/1.1 and h2c', () => {
  it('retries a 5xx and returns the good answer, dropping the bad one', async () => {
    const c = new Cluster([ep(1), ep(2)]);
    const t = loop(c, [503, 200]);
    const end = await runAttempts(t.l);
    assert.equal(end.kind, 'response');
    if (end.kind !== 'response') return;
    assert.deepEqual([end.status, end.response, end.flag, end.attempts, end.ep.port], [200, 'r2', '-', 2, 2]);
    assert.deepEqual(t.discarded, ['r1']);
    end.done();
    assert.equal(c.inFlight, 0);
  });

  it('exhausted: the last 5xx is relayed with URX', async () => {
    const t = loop(new Cluster([ep(1)]), [503, 502, 500]);
    const end = await runAttempts(t.l);
    assert.ok(end.kind === 'response' && end.status === 500 && end.flag === 'URX' && end.attempts === 3);
  });

  it('a failure after the retries is answered with its flag', async () => {
    const t = loop(new Cluster([ep(1)]), [reset, reset, reset]);
    assert.deepEqual(await runAttempts(t.l), { kind: 'failed', flag: 'UR', ep: ep(1), attempts: 3 });
  });

  it('no retry when the body cannot be replayed, or without a policy', async () => {
    const a = loop(new Cluster([ep(1)]), [503, 200], { replayable: () => false });
    assert.ok((await runAttempts(a.l)).kind === 'response' && a.budgets.length === 1);
    const b = loop(new Cluster([ep(1)]), [reset, 200], { retry: undefined });
    assert.equal((await runAttempts(b.l)).kind, 'failed');
  });

  it('the retry breaker stops retries and is reported', async () => {
    const c = new Cluster([ep(1)]);
    c.retries = 0;
    const t = loop(c, [reset, 200]);
    assert.equal((await runAttempts(t.l)).kind, 'failed');
    assert.equal(t.overflows(), 1);
  });

  it('each try is bounded by min(per-try timeout, what is left of the route timeout)', async () => {
    let now = 0;
    const t = loop(
      new Cluster([ep(1)]),
      [{ kind: 'failed', outcome: { kind: 'timeout' }, flag: 'UT' }, 200],
      {
        retry: retry(2, 300),
        deadline: 500,
        now: () => now,
        attempt: async (_e, budget, n) => {
          t.budgets.push(budget);
          now += 300;
          return n === 1
            ? { kind: 'failed', outcome: { kind: 'timeout' }, flag: 'UT' }
            : { kind: 'response', status: 200, response: 'ok' };
        },
      },
    );
    const end = await runAttempts(t.l);
    assert.equal(end.kind, 'response');
    assert.deepEqual(t.budgets, [300, 200]);
  });

  it('route timeout spent: 504-class UT without another try', async () => {
    let now = 0;
    const t = loop(new Cluster([ep(1)]), [], {
      deadline: 100,
      now: () => now,
      attempt: async () => {
        now = 150;
        return { kind: 'failed', outcome: { kind: 'timeout' }, flag: 'UT' };
      },
    });
    const end = await runAttempts(t.l);
    assert.deepEqual([end.kind, end.kind === 'failed' && end.flag, end.attempts], ['failed', 'UT', 2]);
  });

  it('a local denial or a refused tunnel ends the request with UAEX, never retried', async () => {
    const a = loop(new Cluster([ep(1, true)]), [200], { admit: () => ({ denied: 'p' }) });
    assert.deepEqual(await runAttempts(a.l), { kind: 'denied', ep: ep(1, true), attempts: 1, policy: 'p' });
    const b = loop(new Cluster([ep(1)]), [
      { kind: 'failed', outcome: { kind: 'connect-failure' }, flag: 'UAEX' },
      200,
    ]);
    assert.equal((await runAttempts(b.l)).kind, 'denied');
  });

  it("a gRPC answer whose status comes in trailers is reported once, with the trailers' status", async () => {
    const grpcStream = (n: number): AttemptResult<string> => ({
      kind: 'response',
      status: 200,
      response: `r${n}`,
      grpcInTrailers: true,
    });
    const c = new Cluster([ep(1)]);
    const end = await runAttempts(loop(c, [grpcStream(1)]).l);
    assert.ok(end.kind === 'response');
    assert.deepEqual(c.reports, [], 'nothing before the trailers');
    assert.equal(c.inFlight, 1);
    end.done(14); // UNAVAILABLE: Envoy's 503
    assert.deepEqual(c.reports, [{ kind: 'status', status: 503 }]);
    assert.equal(c.inFlight, 0);
    // Ended without a grpc-status (the caller left): neither for nor against the endpoint.
    const left = await runAttempts(loop(c, [grpcStream(1)]).l);
    assert.ok(left.kind === 'response');
    left.done();
    assert.equal(c.reports.length, 1);
    // Trailers-only answers and plain HTTP are reported when the headers arrive; done adds nothing.
    const only = await runAttempts(
      loop(c, [{ kind: 'response', status: 200, response: 'r1', grpcStatus: 13 }]).l,
    );
    assert.deepEqual(c.reports.at(-1), { kind: 'status', status: 500 });
    assert.ok(only.kind === 'response');
    only.done(13);
    assert.equal(c.reports.length, 2);
  });

  it('no endpoint: UH', async () => {
    const t = loop(new Cluster([]), []);
    assert.deepEqual(await runAttempts(t.l), { kind: 'failed', flag: 'UH', ep: undefined, attempts: 1 });
  });
});

function collect(s: PassThrough): Promise<string> {
  const got: Buffer[] = [];
  s.on('data', (c: Buffer) => got.push(c));
  return new Promise((r) => s.on('end', () => r(Buffer.concat(got).toString())));
}

describe('ReplayableBody', () => {
  it('gives each attempt what arrived so far, then the rest as it streams', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 100);
    src.write('ab');
    const first = new PassThrough();
    const firstGot = collect(first);
    body.pipeTo(first);
    src.write('cd');
    await new Promise((r) => setImmediate(r));
    const second = new PassThrough();
    const secondGot = collect(second);
    body.pipeTo(second);
    src.end('ef');
    assert.equal(await secondGot, 'abcdef');
    first.end();
    assert.equal(await firstGot, 'abcd');
    assert.ok(body.replayable);
  });

  it('past the limit it streams to the first attempt only and stops being replayable', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 4);
    const sink = new PassThrough();
    const got = collect(sink);
    body.pipeTo(sink);
    src.write('abc');
    src.end('defgh');
    assert.equal(await got, 'abcdefgh');
    assert.equal(body.replayable, false);
  });

  it('keeps everything that arrives before the first attempt, even past the limit', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 2);
    src.end('abcdef');
    await new Promise((r) => setImmediate(r));
    const sink = new PassThrough();
    const got = collect(sink);
    body.pipeTo(sink);
    assert.equal(await got, 'abcdef');
    assert.equal(body.replayable, false);
  });
});
