import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { nullLogger } from '../../../../lib/log.js';
import {
  MeshTelemetry,
  type MetricsSnapshot,
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
const ev: RequestEvent = {
  source,
  destination,
  protocol: 'http',
  reporter: 'source',
  code: 200,
  flags: '-',
  durationMs: 2,
};

/**
 * A real worker process running its own MeshTelemetry, spoken to over IPC
 * (JSON serialisation, so this also proves snapshots survive JSON).
 */
async function startWorker(t: import('node:test').TestContext) {
  const child = fork(fileURLToPath(new URL('./fixtures/telemetry-worker.ts', import.meta.url)), ['node-a'], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  await once(child, 'message'); // ready
  // One request at a time per worker, so replies match requests.
  let chain: Promise<unknown> = Promise.resolve();
  const call = (msg: object) => {
    const result = chain.then(async () => {
      const reply = once(child, 'message');
      child.send(msg);
      return (await reply)[0] as { op: string; snapshot?: MetricsSnapshot };
    });
    chain = result.catch(() => {});
    return result;
  };
  return {
    child,
    record: (n: number, e: RequestEvent = ev) => call({ op: 'record', ev: e, n }),
    eject: () => call({ op: 'eject' }),
    snapshot: async () => (await call({ op: 'snapshot' })).snapshot!,
  };
}

/** The sample of `name` whose label text contains every comma-separated `label="value"` in `match`. */
function value(text: string, name: string, match: string): number | undefined {
  const parts = match.split(/,(?=[a-z_]+=")/);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && parts.every((p) => l.includes(p)));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test("the primary serves its own and its workers' metrics as one set, and keeps a dead worker's counts", async (t) => {
  const primary = new MeshTelemetry({
    nodeName: 'node-a',
    metricsHost: '127.0.0.1',
    metricsPort: 0,
    logger: nullLogger,
  });
  t.after(() => primary.close());
  const { port } = await primary.start();
  const scrape = async () => (await request(`http://127.0.0.1:${port}/metrics`)).body.text();

  const w1 = await startWorker(t);
  const w2 = await startWorker(t);
  primary.addWorker('w1', w1.snapshot);
  primary.addWorker('w2', w2.snapshot);

  primary.requestCompleted(ev);
  await w1.record(3);
  await w2.record(5);
  await w2.record(2, { ...ev, code: 503, flags: 'UO', durationMs: 0.2 });
  await w1.eject();
  await w2.eject();

  let text = await scrape();
  // One family, one series per label set, summed across primary + workers.
  assert.equal(text.match(/^# TYPE sockmesh_requests_total counter$/gm)?.length, 1);
  assert.equal(value(text, 'sockmesh_requests_total', 'response_code="200"'), 9);
  assert.equal(value(text, 'sockmesh_requests_total', 'response_code="503"'), 2);
  assert.equal(value(text, 'sockmesh_request_duration_milliseconds_count', 'response_code="200"'), 9);
  assert.equal(value(text, 'sockmesh_request_duration_milliseconds_sum', 'response_code="200"'), 18);
  assert.equal(
    value(text, 'sockmesh_request_duration_milliseconds_bucket', 'response_code="200",le="2.5"'),
    9,
  );
  assert.equal(
    value(text, 'sockmesh_request_duration_milliseconds_bucket', 'response_code="503",le="0.25"'),
    2,
  );
  assert.match(text, /^# TYPE sockmesh_request_duration_milliseconds histogram$/m);
  assert.match(text, /^target_info\{.*k8s_node_name="node-a"/m);
  // Gauges take the max: both workers ejected the same endpoint.
  assert.equal(value(text, 'sockmesh_outlier_ejected_endpoints', 'cluster="reviews-v1"'), 1);
  assert.equal(value(text, 'sockmesh_outlier_ejections_total', 'cluster="reviews-v1"'), 2);

  // Worker 2 crashes: its counts stay, its gauges go, and new ones from w1 add up.
  const exited = once(w2.child, 'exit');
  w2.child.kill('SIGKILL');
  await exited;
  primary.removeWorker('w2');
  await w1.record(1);
  text = await scrape();
  assert.equal(value(text, 'sockmesh_requests_total', 'response_code="200"'), 10);
  assert.equal(value(text, 'sockmesh_requests_total', 'response_code="503"'), 2);
  assert.equal(value(text, 'sockmesh_outlier_ejections_total', 'cluster="reviews-v1"'), 2);
  assert.equal(
    value(text, 'sockmesh_outlier_ejected_endpoints', 'cluster="reviews-v1"'),
    1,
    'still ejected in w1',
  );
});

test('a worker that does not answer contributes its last snapshot', async (t) => {
  const primary = new MeshTelemetry({
    nodeName: 'n',
    metricsHost: '127.0.0.1',
    metricsPort: 0,
    logger: nullLogger,
  });
  t.after(() => primary.close());
  const { port } = await primary.start();
  const w = await startWorker(t);
  let hang = false;
  primary.addWorker('w', () => (hang ? new Promise<MetricsSnapshot>(() => {}) : w.snapshot()));
  await w.record(4);
  let text = await (await request(`http://127.0.0.1:${port}/metrics`)).body.text();
  assert.equal(value(text, 'sockmesh_requests_total', 'response_code="200"'), 4);
  hang = true;
  await w.record(1);
  text = await (await request(`http://127.0.0.1:${port}/metrics`)).body.text();
  assert.equal(value(text, 'sockmesh_requests_total', 'response_code="200"'), 4);
});
