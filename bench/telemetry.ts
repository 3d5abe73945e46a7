/**
 * Hot-path cost of telemetry calls (ns/op). Run: node --import tsx bench/telemetry.ts
 * Figures depend on the machine; they are for comparison between changes, not assertions.
 */
import { Writable } from 'node:stream';
import { nullLogger } from '../lib/log.js';
import {
  AccessLog,
  MeshTelemetry,
  parseTraceparent,
  type RequestEvent,
} from '../mesh-agent/telemetry/index.js';

const N = Number(process.env.BENCH_N ?? 200_000);

function bench(name: string, fn: (i: number) => void): void {
  for (let i = 0; i < 20_000; i++) fn(i); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fn(i);
  const ns = Number(process.hrtime.bigint() - t0) / N;
  console.log(`${name.padEnd(48)} ${ns.toFixed(0).padStart(7)} ns/op`);
}

const source = { workload: 'web', namespace: 'shop', version: 'v1', principal: 'spiffe://td/ns/shop/sa/web' };
const dests = ['v1', 'v2', 'v3'].map((v) => ({
  service: 'reviews.shop.svc.cluster.local',
  workload: `reviews-${v}`,
  namespace: 'shop',
  version: v,
  cluster: `reviews-${v}`,
}));
const codes = [200, 200, 200, 503];
const ev = (i: number): RequestEvent => ({
  source,
  destination: dests[i % 3]!,
  protocol: 'http',
  reporter: 'source',
  code: codes[i % 4]!,
  flags: i % 4 === 3 ? 'UO' : '-',
  durationMs: (i % 100) / 10,
});

const plain = new MeshTelemetry({ nodeName: 'bench', metricsPort: 0, logger: nullLogger });
const devNull = new Writable({
  write(_c, _e, cb) {
    cb();
  },
});
const logged = new MeshTelemetry({
  nodeName: 'bench',
  metricsPort: 0,
  accessLog: new AccessLog(devNull),
  logger: nullLogger,
});

bench('requestCompleted (metrics only)', (i) => plain.requestCompleted(ev(i)));
bench('requestCompleted (metrics + access log)', (i) => logged.requestCompleted(ev(i)));
bench('tcpOpened', (i) => plain.tcpOpened({ source, destination: dests[i % 3]!, reporter: 'source' }));
bench('tcpClosed (metrics only)', (i) =>
  plain.tcpClosed({
    source,
    destination: dests[i % 3]!,
    reporter: 'source',
    bytesSent: 100,
    bytesReceived: i % 50,
  }),
);
bench('startSpan+end, no exporter (propagation only)', () =>
  plain.startSpan('hop', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01').end('ok'),
);
bench('parseTraceparent', () => parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'));

// Scrape cost with a realistic number of series (the request path is unaffected by it).
const scraped = new MeshTelemetry({
  nodeName: 'bench',
  metricsHost: '127.0.0.1',
  metricsPort: 0,
  logger: nullLogger,
});
const { port } = await scraped.start();
for (let w = 0; w < 100; w++) {
  for (const code of [200, 404, 503]) {
    scraped.requestCompleted({ ...ev(0), code, destination: { ...dests[0]!, workload: `w${w}` } });
  }
}
const scrapes = 50;
let bytes = 0;
const s0 = process.hrtime.bigint();
for (let i = 0; i < scrapes; i++)
  bytes = (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).length;
const ms = Number(process.hrtime.bigint() - s0) / 1e6 / scrapes;
console.log(
  `${'scrape /metrics, 300 request series'.padEnd(48)} ${ms.toFixed(2).padStart(7)} ms (${bytes} bytes)`,
);

await scraped.close();
await plain.close();
await logged.close();
