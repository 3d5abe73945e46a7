/** Entry point of one proxy worker process, forked by ProxyWorkers. */
import { OriginalDestinationMap, TcpHealthMaps } from '../../bpf-sockops/index.js';
import { svidFromWire } from '../../certs/index.js';
import { createLogger } from '../../lib/log.js';
import { MeshTelemetry } from '../telemetry/mesh-telemetry.js';
import { RemoteOutliers } from './outliers.js';
import { ProxyRuntime } from './proxy-runtime.js';
import { type FromWorker, type ToWorker, WORKER_ENV, type WorkerSettings } from './workers.js';

const settings = JSON.parse(process.env[WORKER_ENV] ?? '{}') as WorkerSettings;
const log = createLogger('agent').child({ node: settings.nodeName, worker: process.pid });
const send = (m: FromWorker) => process.send?.(m);

// Never started: the primary serves :15020 and pulls this worker's snapshots.
const telemetry = new MeshTelemetry({
  nodeName: settings.nodeName,
  logger: log,
  ...(settings.otlpEndpoint ? { otlpEndpoint: settings.otlpEndpoint } : {}),
});
const outliers = new RemoteOutliers((cluster, endpoint, outcome) =>
  send({ type: 'outcome', cluster, endpoint, outcome }),
);
const runtime = new ProxyRuntime({
  nodeName: settings.nodeName,
  proxyIp: settings.proxyIp,
  tunnelIp: settings.tunnelIp,
  ports: settings.ports,
  ...(settings.trustTunnelSenders ? { trustTunnelSenders: true } : {}),
  origDst: OriginalDestinationMap.open(settings.bpffsDir),
  ...(settings.tcpHealth ? { tcp: TcpHealthMaps.open(settings.bpffsDir) } : {}),
  telemetry,
  cluster: { outliers, worker: { index: settings.index, count: settings.count } },
  log,
});

let haveConfig = false;
let haveSvids = false;
let started = false;

async function maybeStart(): Promise<void> {
  if (started || !haveConfig || !haveSvids) return;
  started = true;
  await runtime.start();
  send({ type: 'ready' });
}

process.on('message', (m: ToWorker) => {
  if (m.type === 'config') {
    try {
      runtime.applyConfig(m.config);
      haveConfig = true;
    } catch (err) {
      send({ type: 'config-error', error: (err as Error).message });
    }
  } else if (m.type === 'svids') {
    runtime.setSvids(m.svids.map(svidFromWire));
    haveSvids = true;
  } else if (m.type === 'ejections') {
    outliers.setEjected(m.cluster, m.endpoints);
  } else if (m.type === 'snapshot') {
    void telemetry.snapshot().then((snapshot) => send({ type: 'snapshot', id: m.id, snapshot }));
  }
  maybeStart().catch((err: Error) => {
    log.error('proxy worker could not listen', { err });
    process.exit(1);
  });
});

send({ type: 'hello' });

process.on('SIGTERM', () => {
  void runtime.stop().finally(() => process.exit(0));
});
