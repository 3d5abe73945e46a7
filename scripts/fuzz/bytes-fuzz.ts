/**
 * Bytes into the proxy's listeners (issue 17, part 2c): 15001 (a pod's captured connection),
 * 15006 (plaintext into a permissive pod), 15008 before TLS and, with a real SVID, the tunnel's
 * HTTP/2 inside it. Seeded (mulberry32) and bounded: the same seed gives the same cases.
 *
 * Families: truncated prefaces and requests, random bytes, random and damaged HTTP/2 frames,
 * oversized headers, header floods, slowloris (slow headers, slow and stalled bodies, HTTP/2
 * headers that never end), SETTINGS/PING/WINDOW_UPDATE floods, rapid reset (CVE-2023-44487:
 * HEADERS then RST_STREAM, over and over) and CONTINUATION floods (CVE-2024-27316 class).
 *
 * The oracle, checked by runBytesFuzz against an agent process (bytes-target.ts): the agent
 * stays up; every attacking connection is closed by the agent (within the test-sized timeouts);
 * a prober's requests through 15001, 15006 and 15008, during and after, are all answered 200;
 * resident memory stays bounded (before, peak and after are reported). How many of the
 * fuzzer's requests were whole enough to reach the upstream is counted, not judged.
 */

import {
  dialTcp,
  dialTunnel,
  exchange,
  FLAG,
  FRAME,
  frame,
  H2_START,
  headerFrames,
  hpack,
  PREFACE,
  ping,
  RecordingUpstream,
  rst,
  settings,
  startTarget,
  statuses,
  type Target,
  tunnelExchange,
} from './bytes-wire.js';
import { mulberry32 } from './rng.js';

export type Listener = 'outbound' | 'plaintext' | 'tunnel-tls' | 'tunnel-h2';

export interface ByteCase {
  index: number;
  listener: Listener;
  family: string;
  /** Bytes to send, a number being a pause in ms. */
  chunks: Array<Buffer | number>;
}

type Rand = () => number;
const pick = <T>(r: Rand, list: readonly T[]): T => list[Math.floor(r() * list.length)]!;
const int = (r: Rand, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const bytes = (r: Rand, n: number) => Buffer.from(Array.from({ length: n }, () => int(r, 0, 255)));

/** The marker in every request the fuzzer makes, to count those that reached the upstream. */
export const MARKER = 'fuzzmark';
const H = `Host: reviews.shop\r\nX-M: ${MARKER}\r\n`;

/** A request's HEADERS block: a GET through the mesh (h2c), or a CONNECT (the tunnel's HTTP/2). */
function h2Request(listener: Listener, extra: Array<[string, string]> = []): Array<[string, string]> {
  if (listener === 'tunnel-h2') return [[':method', 'CONNECT'], [':authority', '127.0.0.1:1'], ...extra];
  return [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', `/${MARKER}`],
    [':authority', 'reviews.shop'],
    ...extra,
  ];
}

const H1_FAMILIES = [
  'truncated-request',
  'random-bytes',
  'oversized-headers',
  'header-flood',
  'slow-headers',
  'slow-body',
  'stalled-body',
  'truncated-preface',
] as const;
const H2_FAMILIES = [
  'truncated-preface',
  'random-frames',
  'damaged-session',
  'oversized-headers',
  'header-flood',
  'slow-headers',
  'stalled-body',
  'settings-flood',
  'ping-flood',
  'window-update-flood',
  'rapid-reset',
  'continuation-flood',
] as const;

function h1Case(r: Rand, family: (typeof H1_FAMILIES)[number]): Array<Buffer | number> {
  const req = Buffer.from(`GET /${MARKER} HTTP/1.1\r\n${H}X-A: ${'a'.repeat(int(r, 0, 200))}\r\n\r\n`);
  switch (family) {
    case 'truncated-request':
      return [req.subarray(0, int(r, 1, req.length - 2))];
    case 'random-bytes':
      return [bytes(r, int(r, 1, 4096))];
    case 'oversized-headers':
      return [
        Buffer.from(`GET /${MARKER} HTTP/1.1\r\n${H}X-Big: ${'b'.repeat(int(r, 62_000, 400_000))}\r\n\r\n`),
      ];
    case 'header-flood': {
      const n = int(r, 101, 20_000);
      return [Buffer.from(`GET /${MARKER} HTTP/1.1\r\n${H}${'X: 1\r\n'.repeat(n)}\r\n`)];
    }
    case 'slow-headers': {
      const out: Array<Buffer | number> = [Buffer.from(`GET /${MARKER} HTTP/1.1\r\n${H}`)];
      for (let i = 0; i < 12; i++) out.push(int(r, 100, 400), Buffer.from(`X-${i}: ${i}\r\n`));
      return out;
    }
    case 'slow-body': {
      // A body that keeps coming, then stops short of its Content-Length.
      const out: Array<Buffer | number> = [
        Buffer.from(`POST /${MARKER} HTTP/1.1\r\n${H}Content-Length: 100000\r\n\r\n`),
      ];
      for (let i = 0; i < 6; i++) out.push(int(r, 100, 300), bytes(r, int(r, 1, 10)));
      return out;
    }
    case 'stalled-body':
      return [Buffer.from(`POST /${MARKER} HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nab`)];
    case 'truncated-preface':
      return [PREFACE.subarray(0, int(r, 1, PREFACE.length - 1))];
  }
}

function h2Case(r: Rand, listener: Listener, family: (typeof H2_FAMILIES)[number]): Array<Buffer | number> {
  const start = H2_START;
  const req = (stream: number, extra: Array<[string, string]> = [], end = true) =>
    frame(
      FRAME.HEADERS,
      FLAG.END_HEADERS | (end ? FLAG.END_STREAM : 0),
      stream,
      hpack(h2Request(listener, extra)),
    );
  switch (family) {
    case 'truncated-preface':
      return [PREFACE.subarray(0, int(r, 1, PREFACE.length - 1))];
    case 'random-frames': {
      const out: Buffer[] = [start];
      for (let i = int(r, 1, 20); i > 0; i--) {
        const payload = bytes(r, int(r, 0, 64));
        const f = frame(
          int(r, 0, 12),
          int(r, 0, 255),
          pick(r, [0, 1, 2, 3, int(r, 0, 2 ** 31 - 1)]),
          payload,
        );
        // Now and then a length that lies.
        if (r() < 0.2) f.writeUIntBE(int(r, 0, 2 ** 24 - 1), 0, 3);
        out.push(f);
      }
      return out;
    }
    case 'damaged-session': {
      const good = Buffer.concat([req(1), req(3, [['x-b', 'y']]), ping()]);
      for (let i = int(r, 1, 8); i > 0; i--) {
        const at = int(r, 0, good.length - 1);
        good[at] = good[at]! ^ (1 << int(r, 0, 7));
      }
      return [start, good];
    }
    case 'oversized-headers':
      return [
        start,
        headerFrames(1, hpack(h2Request(listener, [['x-big', 'b'.repeat(int(r, 62_000, 400_000))]]))),
      ];
    case 'header-flood': {
      const n = int(r, 101, 5000);
      return [
        start,
        headerFrames(
          1,
          hpack(
            h2Request(
              listener,
              Array.from({ length: n }, (_, i): [string, string] => [`x-${i}`, '1']),
            ),
          ),
        ),
      ];
    }
    case 'slow-headers': {
      // HEADERS without END_HEADERS, then CONTINUATION now and then: a stream that never begins.
      const block = hpack(h2Request(listener, [['x-slow', 'z'.repeat(200)]]));
      const out: Array<Buffer | number> = [
        start,
        frame(FRAME.HEADERS, FLAG.END_STREAM, 1, block.subarray(0, 10)),
      ];
      for (let at = 10; at < block.length && out.length < 30; at += 20)
        out.push(int(r, 100, 300), frame(FRAME.CONTINUATION, 0, 1, block.subarray(at, at + 20)));
      return out;
    }
    case 'stalled-body':
      return [
        start,
        req(1, [['content-length', '1000']], false),
        frame(FRAME.DATA, 0, 1, bytes(r, int(r, 1, 100))),
      ];
    case 'settings-flood':
      return [start, Buffer.concat(Array.from({ length: int(r, 100, 20_000) }, () => settings([[3, 100]])))];
    case 'ping-flood':
      return [start, Buffer.concat(Array.from({ length: int(r, 100, 20_000) }, () => ping(bytes(r, 8))))];
    case 'window-update-flood': {
      const p = Buffer.alloc(4);
      p.writeUInt32BE(int(r, 1, 2 ** 31 - 1));
      return [
        start,
        Buffer.concat(Array.from({ length: int(r, 100, 20_000) }, () => frame(FRAME.WINDOW_UPDATE, 0, 0, p))),
      ];
    }
    case 'rapid-reset': {
      const n = int(r, 100, 5000);
      const out: Buffer[] = [start];
      for (let i = 0; i < n; i++) out.push(req(2 * i + 1, [], listener !== 'tunnel-h2'), rst(2 * i + 1));
      return [Buffer.concat(out)];
    }
    case 'continuation-flood': {
      // Never END_HEADERS: every CONTINUATION adds a header nobody will ever see complete.
      const out: Buffer[] = [start, frame(FRAME.HEADERS, FLAG.END_STREAM, 1, hpack(h2Request(listener)))];
      const n = int(r, 1000, 20_000);
      for (let i = 0; i < n; i++)
        out.push(frame(FRAME.CONTINUATION, 0, 1, hpack([[`x-${i % 100}`, 'v'.repeat(int(r, 0, 30))]])));
      return [Buffer.concat(out)];
    }
  }
}

/** The cases for a seed: each listener and family equally likely. */
export function generate(seed: number, count: number): ByteCase[] {
  const r = mulberry32(seed);
  const out: ByteCase[] = [];
  for (let index = 0; index < count; index++) {
    const listener = pick(r, ['outbound', 'plaintext', 'tunnel-tls', 'tunnel-h2'] as const);
    if (listener === 'tunnel-tls') {
      // Before the handshake: garbage, a ClientHello cut short, or silence.
      const family = pick(r, ['random-bytes', 'truncated-hello', 'silence'] as const);
      const hello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), bytes(r, int(r, 2, 300))]);
      out.push({
        index,
        listener,
        family,
        chunks:
          family === 'random-bytes'
            ? [bytes(r, int(r, 1, 4096))]
            : family === 'truncated-hello'
              ? [hello]
              : [],
      });
      continue;
    }
    const h2 = listener === 'tunnel-h2' || r() < 0.5;
    const family = h2 ? pick(r, H2_FAMILIES) : pick(r, H1_FAMILIES);
    const chunks = h2
      ? h2Case(r, listener, family as (typeof H2_FAMILIES)[number])
      : h1Case(r, family as (typeof H1_FAMILIES)[number]);
    out.push({ index, listener, family: `${h2 ? 'h2' : 'h1'}:${family}`, chunks });
  }
  return out;
}

export interface BytesFuzzReport {
  seed: number;
  count: number;
  ms: number;
  byFamily: Record<string, { tried: number; closedByAgent: number }>;
  /** Cases whose connection the agent had not closed when the bound passed. */
  leftOpen: Array<{ index: number; listener: Listener; family: string }>;
  probes: { ok: number; failed: number; failures: string[] };
  /** Fuzzer requests that reached the upstream (well-formed enough, e.g. a body that stalled after its headers). */
  forwardedUpstream: number;
  alive: boolean;
  /** Bytes: resident after warm-up (post-GC), the high-water mark, resident at the end (post-GC). */
  rss: { before: number; peak: number; after: number };
  heapUsed: { before: number; after: number };
}

/** Test-sized HTTP limits, so a case's connection must be closed within a few seconds. */
export const FUZZ_LIMITS = { headersTimeoutMs: 1000, idleTimeoutMs: 1500, streamIdleTimeoutMs: 1500 };
/** How long after its last byte a case's connection may stay open: the longest bound above, plus slack. */
const CLOSE_WITHIN_MS = Number(process.env.SOCKMESH_FUZZ_CLOSE_MS ?? 6000);

export async function runBytesFuzz(o: {
  seed: number;
  count: number;
  concurrency?: number;
  /** Only the cases with these indexes (of the same seed and count). */
  only?: number[];
  onCase?: (c: ByteCase, closed: boolean) => void;
}): Promise<BytesFuzzReport> {
  const started = Date.now();
  const upstream = new RecordingUpstream();
  const port = await upstream.listen();
  const target = await startTarget(port, FUZZ_LIMITS);
  try {
    const { ready } = target;
    const probe = prober(target, port);
    // Warm-up: every listener served once, so "before" counts the agent's working set.
    await probe.round();
    const before = await target.memory();
    const report: BytesFuzzReport = {
      seed: o.seed,
      count: o.count,
      ms: 0,
      byFamily: {},
      leftOpen: [],
      probes: { ok: 0, failed: 0, failures: [] },
      forwardedUpstream: 0,
      alive: true,
      rss: { before: before.rss, peak: 0, after: 0 },
      heapUsed: { before: before.heapUsed, after: 0 },
    };
    const cases = generate(o.seed, o.count).filter((c) => !o.only || o.only.includes(c.index));
    let next = 0;
    let running = true;
    const probing = (async () => {
      while (running) {
        await probe.round();
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const worker = async () => {
      while (next < cases.length) {
        const c = cases[next++]!;
        const dial =
          c.listener === 'outbound'
            ? dialTcp('127.0.0.1', ready.outbound)
            : c.listener === 'plaintext'
              ? dialTcp(ready.plaintext.host, ready.plaintext.port)
              : c.listener === 'tunnel-tls'
                ? dialTcp('127.0.0.1', ready.tunnel)
                : dialTunnel(ready.tunnel, ready.client);
        const ex = await exchange(dial, c.chunks, CLOSE_WITHIN_MS);
        const closed = ex.end === 'closed';
        const key = `${c.listener} ${c.family}`;
        const f = report.byFamily[key] ?? { tried: 0, closedByAgent: 0 };
        report.byFamily[key] = f;
        f.tried++;
        if (closed) f.closedByAgent++;
        else report.leftOpen.push({ index: c.index, listener: c.listener, family: c.family });
        o.onCase?.(c, closed);
      }
    };
    await Promise.all(Array.from({ length: o.concurrency ?? 8 }, worker));
    running = false;
    await probing;
    await probe.round();
    report.probes = probe.result();
    report.alive = target.alive();
    report.rss.peak = target.rss().peak;
    const after = await target.memory();
    report.rss.after = after.rss;
    report.heapUsed.after = after.heapUsed;
    report.forwardedUpstream = upstream.take().bytes.toString('latin1').split(MARKER).length - 1;
    report.ms = Date.now() - started;
    return report;
  } finally {
    await target.stop();
    upstream.close();
  }
}

/** Another client of each listener: one request each per round, all must be answered 200. */
function prober(target: Target, upstreamPort: number) {
  const { ready } = target;
  let ok = 0;
  const failures: string[] = [];
  const get = `GET /probe HTTP/1.1\r\nHost: reviews.shop\r\nConnection: close\r\n\r\n`;
  const check = async (where: string, run: () => Promise<{ data: Buffer; error?: string }>) => {
    try {
      const ex = await run();
      if (statuses(ex.data)[0] === 200) ok++;
      else failures.push(`${where}: ${ex.error ?? ex.data.toString('latin1').slice(0, 80)}`);
    } catch (err) {
      failures.push(`${where}: ${(err as Error).message}`);
    }
  };
  return {
    round: () =>
      Promise.all([
        check('15001', () => exchange(dialTcp('127.0.0.1', ready.outbound), [get], 15_000)),
        check('15006', () => exchange(dialTcp(ready.plaintext.host, ready.plaintext.port), [get], 15_000)),
        check('15008', () =>
          tunnelExchange(ready.tunnel, ready.client, `127.0.0.1:${upstreamPort}`, [get], 15_000),
        ),
      ]),
    result: () => ({ ok, failed: failures.length, failures: failures.slice(0, 20) }),
  };
}
