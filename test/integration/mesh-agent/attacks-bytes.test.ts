/**
 * Bytes into the proxy's listeners (issue 17, part 2c), black box: raw bytes on sockets
 * against the agent's listeners in a process of their own (scripts/fuzz/bytes-target.ts),
 * with test-sized limits (headers 1 s, idle 1.5 s, stalled body 1.5 s; the defaults are in
 * mesh-agent/io/http-limits.ts).
 *
 * What each part proves:
 * - every timeout the proxy relies on fires, on a connection that would otherwise be held
 *   forever: a captured connection that never speaks (15001), HTTP/1.1 headers that never end
 *   (408), a keep-alive connection left idle, a request body that stops (408), an h2c session
 *   without streams, an h2c stream whose body stops (reset), a TLS handshake that never comes
 *   and a tunnel session without CONNECT (15008); and a slow answer to a bodiless request is
 *   not taken for a stalled body;
 * - HTTP/2 rapid reset (CVE-2023-44487) ends the session with GOAWAY ENHANCE_YOUR_CALM on the
 *   h2c path and on the tunnel, before it can fill the cluster's max_requests;
 * - the seeded byte fuzzer (scripts/fuzz/bytes-fuzz.ts: truncated prefaces, random and damaged
 *   frames before and after a real mTLS handshake, oversized headers, header floods, slowloris,
 *   SETTINGS/PING/WINDOW_UPDATE floods, rapid reset, CONTINUATION floods) leaves the agent up,
 *   every connection closed by the agent, every probe through 15001, 15006 and 15008 answered
 *   200 during and after, and resident memory bounded.
 * The long run: node --import tsx scripts/fuzz/bytes-listeners.ts --count 2000 --seed 17
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FUZZ_LIMITS, runBytesFuzz } from '../../../scripts/fuzz/bytes-fuzz.js';
import {
  dialTcp,
  dialTunnel,
  exchange,
  FLAG,
  FRAME,
  frame,
  frames,
  H2_START,
  hpack,
  RecordingUpstream,
  request,
  rst,
  startTarget,
  statuses,
  streamOutcome,
  type Target,
  tunnelExchange,
} from '../../../scripts/fuzz/bytes-wire.js';

const H = 'Host: reviews.shop\r\n';
const SEED = 1717;
const COUNT = Number(process.env.SOCKMESH_BYTES_FUZZ_COUNT ?? 40);
const MiB = 2 ** 20;

/** The GOAWAY error code in a server's frames, if it sent one. */
function goawayCode(data: Buffer): number | undefined {
  const g = frames(data).find((f) => f.type === FRAME.GOAWAY);
  return g ? g.payload.readUInt32BE(4) : undefined;
}

function rapidReset(n: number, connect?: string): Buffer {
  const out: Buffer[] = [H2_START];
  for (let i = 0; i < n; i++) {
    const id = 2 * i + 1;
    out.push(
      connect
        ? frame(
            FRAME.HEADERS,
            FLAG.END_HEADERS,
            id,
            hpack([
              [':method', 'CONNECT'],
              [':authority', connect],
            ]),
          )
        : request(id),
      rst(id),
    );
  }
  return Buffer.concat(out);
}

describe('bytes into 15001, 15006, 15008: every connection closed, the agent up', {
  timeout: 300_000,
}, () => {
  let upstream: RecordingUpstream;
  let target: Target;
  let port: number;

  before(async () => {
    upstream = new RecordingUpstream();
    port = await upstream.listen();
    target = await startTarget(port, FUZZ_LIMITS);
  });

  after(async () => {
    await target?.stop();
    upstream?.close();
  });

  const outbound = () => dialTcp('127.0.0.1', target.ready.outbound);

  it("a client's reset, before or after its first bytes, never takes the agent down", async () => {
    const { outbound: out, plaintext, tunnel, client } = target.ready;
    for (const [where, dial] of [
      ['15006', dialTcp(plaintext.host, plaintext.port)],
      ['15001', dialTcp('127.0.0.1', out)],
      ['15008', dialTcp('127.0.0.1', tunnel)],
    ] as const) {
      for (const first of ['', 'G', 'P', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']) {
        const s = dial();
        await new Promise((r) => s.once('connect', r));
        if (first) s.write(first);
        await new Promise((r) => setTimeout(r, 50));
        s.resetAndDestroy();
      }
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(target.alive(), `the agent survived resets on ${where}`);
    }
    // An h2c session inside a CONNECT stream that nghttp2 ends with a protocol error (a zero WINDOW_UPDATE).
    const zeroWindow = Buffer.concat([H2_START, frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.alloc(4))]);
    await tunnelExchange(tunnel, client, `127.0.0.1:${port}`, [zeroWindow], 1000);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(target.alive(), 'the agent survived a broken h2c session in a tunnel stream');
  });

  it('a captured connection that never speaks is closed after the headers timeout', async () => {
    const ex = await exchange(outbound(), [], 4000);
    assert.equal(ex.end, 'closed');
    assert.equal(ex.data.length, 0);
  });

  it('HTTP/1.1 headers that never end: 408, closed', async () => {
    const slow: Array<string | number> = [`GET /slow-headers HTTP/1.1\r\n${H}`];
    for (let i = 0; i < 20; i++) slow.push(200, `X-${i}: ${i}\r\n`);
    const ex = await exchange(outbound(), slow, 4000);
    assert.deepEqual(statuses(ex.data), [408]);
    assert.equal(ex.end, 'closed');
  });

  it('an idle keep-alive connection is closed', async () => {
    const ex = await exchange(outbound(), [`GET /idle HTTP/1.1\r\n${H}\r\n`], 6000);
    assert.deepEqual(statuses(ex.data), [200]);
    assert.equal(ex.end, 'closed');
  });

  it('a request body that stops coming: 408, closed; a slow answer to a bodiless request is no stall', async () => {
    const stalled = await exchange(
      outbound(),
      [`POST /stalled HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\nab`],
      6000,
    );
    assert.deepEqual(statuses(stalled.data), [408], stalled.data.toString('latin1'));
    assert.equal(stalled.end, 'closed');
    const slow = await exchange(outbound(), [`GET /slow HTTP/1.1\r\n${H}Connection: close\r\n\r\n`], 6000);
    assert.deepEqual(statuses(slow.data), [200], slow.data.toString('latin1'));
    const slowPost = await exchange(
      outbound(),
      [`POST /slow HTTP/1.1\r\n${H}Content-Length: 2\r\nConnection: close\r\n\r\nab`],
      6000,
    );
    assert.deepEqual(statuses(slowPost.data), [200], slowPost.data.toString('latin1'));
  });

  it('h2c: a session without streams is closed; a stream whose body stops is reset', async () => {
    const idle = await exchange(outbound(), [H2_START], 4000);
    assert.equal(idle.end, 'closed');
    const stalled = await exchange(
      outbound(),
      [
        H2_START,
        request(1, [['content-length', '100']], { method: 'POST', endStream: false }),
        frame(FRAME.DATA, 0, 1, Buffer.from('ab')),
      ],
      6000,
    );
    const reset = frames(stalled.data).find((f) => f.type === FRAME.RST_STREAM && f.stream === 1);
    assert.ok(reset || streamOutcome(stalled.data, 1) === 'response', 'stream 1 ended by the agent');
    assert.equal(stalled.end, 'closed');
  });

  it('15008: no TLS handshake, or a session without CONNECT, is closed', async () => {
    const silent = await exchange(dialTcp('127.0.0.1', target.ready.tunnel), [], 4000);
    assert.equal(silent.end, 'closed');
    const idle = await exchange(dialTunnel(target.ready.tunnel, target.ready.client), [H2_START], 5000);
    assert.equal(idle.end, 'closed');
    assert.ok(
      frames(idle.data).some((f) => f.type === FRAME.SETTINGS),
      'it did speak HTTP/2 after the handshake',
    );
  });

  it('rapid reset (CVE-2023-44487) ends the session with ENHANCE_YOUR_CALM, on h2c and on the tunnel', async () => {
    // The waits only bound a close that normally comes at once (a loaded machine took over 4 s).
    const h2c = await exchange(outbound(), [rapidReset(1000)], 15_000);
    assert.equal(goawayCode(h2c.data), 11, 'GOAWAY ENHANCE_YOUR_CALM on 15001');
    assert.equal(h2c.end, 'closed');
    const tunnel = await exchange(
      dialTunnel(target.ready.tunnel, target.ready.client),
      [rapidReset(1000, `127.0.0.1:${port}`)],
      15_000,
    );
    assert.equal(goawayCode(tunnel.data), 11, 'GOAWAY ENHANCE_YOUR_CALM on 15008');
    assert.equal(tunnel.end, 'closed');
    assert.ok(target.alive());
  });

  it(`${COUNT} seeded byte cases (seed ${SEED}): agent up, every connection closed, probes answered, memory bounded`, async () => {
    // A target of its own: the RSS figures are this run's alone.
    const report = await runBytesFuzz({ seed: SEED, count: COUNT, concurrency: 4 });
    const mib = (n: number) => `${(n / MiB).toFixed(0)} MiB`;
    console.log(
      `bytes fuzz: ${COUNT} cases, ${report.probes.ok} probes ok; RSS before ${mib(report.rss.before)}, peak ${mib(report.rss.peak)}, after ${mib(report.rss.after)}`,
    );
    assert.ok(report.alive, 'the agent process is alive');
    assert.deepEqual(report.leftOpen, [], 'every connection closed by the agent');
    assert.deepEqual(report.probes.failures, [], 'other clients answered during and after');
    assert.ok(report.probes.ok >= 6);
    assert.ok(
      report.rss.peak - report.rss.before < 256 * MiB,
      `peak ${mib(report.rss.peak)} from ${mib(report.rss.before)}`,
    );
    assert.ok(
      report.rss.after - report.rss.before < 96 * MiB,
      `after ${mib(report.rss.after)} from ${mib(report.rss.before)}`,
    );
  });
});
