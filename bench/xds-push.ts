/**
 * Control-plane benchmark: translation + push time for 1k and 10k Services
 * with 10 and 100 connected ADS clients, and the control plane's RSS.
 *
 *   node --import tsx bench/xds-push.ts [--services 1000,10000] [--clients 10,100] [--rounds 3]
 *
 * Each scenario writes a generated mesh (N Services with one HTTP port, 2 pods
 * each on 10 nodes, an HTTPRoute splitting every 10th Service) to a temp dir,
 * starts the real ControlPlane on a unix socket, connects C raw ADS streams from
 * a child process (wildcard LDS/RDS/CDS/EDS; they read only each response's
 * header), so the RSS and CPU measured here are the control plane's, and times,
 * from the file write to the last client receiving the push:
 *   eds    one pod IP changes          (1 ClusterLoadAssignment)
 *   rds    one HTTPRoute weight change (1 RouteConfiguration)
 *   svc    one new Service             (all four types; every Cluster and the outbound Listener resent: SotW)
 * "translate" is the reload (read + validate + translate + encode) alone.
 * Writes bench/results/xds-push.json.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nullLogger } from '../lib/log.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../xds/protos.js';
import { ControlPlane, type ReloadResult } from '../xds/server/control-plane.js';
import { DirectorySource } from '../xds/sources/directory.js';
import { RawAdsStream, responseHeader } from './lib/raw-ads.js';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '1000,10000' },
    clients: { type: 'string', default: '10,100' },
    rounds: { type: 'string', default: '3' },
    worker: { type: 'string' },
    count: { type: 'string' },
  },
});
const SERVICES = values.services.split(',').map(Number);
const CLIENTS = values.clients.split(',').map(Number);
const ROUNDS = Number(values.rounds);
const NODES = 10;

function ip(base: number, i: number): string {
  return `${base}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** The generated mesh, split in files of 500 Services so a change rewrites one small file. */
function meshFiles(
  n: number,
  variant: { podShift: number; weight: number; extra: boolean },
): Map<string, string> {
  const files = new Map<string, string>();
  files.set(
    '00-ns.yaml',
    'apiVersion: v1\nkind: Namespace\nmetadata: { name: bench, labels: { sockmesh.io/mesh: enabled } }\n',
  );
  const chunk = 100;
  for (let start = 0; start < n; start += chunk) {
    const docs: string[] = [];
    for (let i = start; i < Math.min(n, start + chunk); i++) {
      docs.push(`apiVersion: v1
kind: Service
metadata: { name: svc-${i}, namespace: bench }
spec:
  clusterIP: ${ip(10, 0x600000 + i)}
  selector: { app: svc-${i} }
  ports: [{ name: http, port: 8080, appProtocol: http }]`);
      for (let p = 0; p < 2; p++) {
        const podIp = ip(11, 2 * i + p + (i === 0 ? variant.podShift : 0));
        docs.push(`apiVersion: v1
kind: Pod
metadata: { name: svc-${i}-${p}, namespace: bench, labels: { app: svc-${i}, version: v${p + 1} } }
spec: { nodeName: node${(2 * i + p) % NODES}, serviceAccountName: svc-${i} }
status: { podIP: ${podIp} }`);
      }
      if (i % 10 === 0 && i + 1 < n) {
        docs.push(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: split-${i}, namespace: bench }
spec:
  parentRefs: [{ kind: Service, name: svc-${i}, port: 8080 }]
  rules:
    - backendRefs:
        - { name: svc-${i}, port: 8080, weight: ${i === 0 ? variant.weight : 90} }
        - { name: svc-${i + 1}, port: 8080, weight: 10 }`);
      }
    }
    files.set(`svc-${String(start).padStart(6, '0')}.yaml`, `${docs.join('\n---\n')}\n`);
  }
  if (variant.extra) {
    files.set(
      'zz-extra.yaml',
      `apiVersion: v1
kind: Service
metadata: { name: extra, namespace: bench }
spec:
  clusterIP: 10.127.0.1
  selector: { app: extra }
  ports: [{ name: http, port: 8080, appProtocol: http }]
`,
    );
  }
  return files;
}

class RawClient {
  private readonly ads: RawAdsStream;
  private waiters: { type: string; resolve: () => void }[] = [];
  readonly received = new Map<string, number>();

  constructor(target: string, id: number) {
    this.ads = new RawAdsStream(target, { id: `node${id % NODES}` }, (raw) => {
      const { type } = responseHeader(raw);
      this.received.set(type, (this.received.get(type) ?? 0) + 1);
      const hit = this.waiters.filter((w) => w.type === type);
      this.waiters = this.waiters.filter((w) => w.type !== type);
      for (const w of hit) w.resolve();
    });
  }

  next(type: string): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ type, resolve }));
  }

  close(): void {
    this.ads.close();
  }
}

class Clients {
  private readonly child: ChildProcess;
  private seq = 0;
  private readonly waiters = new Map<string, () => void>();

  constructor(socket: string, count: number) {
    this.child = fork(fileURLToPath(import.meta.url), ['--worker', socket, '--count', String(count)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (m: { ready?: boolean; armed?: number; done?: number }) => {
      const key = m.ready ? 'ready' : m.armed !== undefined ? `armed:${m.armed}` : `done:${m.done}`;
      this.waiters.get(key)?.();
      this.waiters.delete(key);
    });
  }

  private when(key: string): Promise<void> {
    return new Promise((resolve) => this.waiters.set(key, resolve));
  }

  ready(): Promise<void> {
    return this.when('ready');
  }

  /** Arms a wait for `type` on every client; resolves (once armed) to a promise of "all received". */
  async arm(types: string[]): Promise<{ done: Promise<void> }> {
    const id = ++this.seq;
    const done = this.when(`done:${id}`);
    const armed = this.when(`armed:${id}`);
    this.child.send({ arm: types, id });
    await armed;
    return { done }; // wrapped: an async function would otherwise adopt (wait for) the promise
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.send({ stop: true });
    await exited;
  }
}

interface Row {
  services: number;
  clients: number;
  translateMs: number;
  edsPushMs: number;
  rdsPushMs: number;
  newServicePushMs: number;
  rssMiB: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Temp dirs of running scenarios, removed also when the run is interrupted. */
const tempDirs = new Set<string>();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
    process.exit(130);
  });
}

async function scenario(services: number, clients: number): Promise<Row> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sockmesh-bench-xds-'));
  tempDirs.add(dir);
  const mdir = path.join(dir, 'm');
  mkdirSync(mdir);
  const write = (files: Map<string, string>, only?: string[]) => {
    for (const [f, text] of files) if (!only || only.includes(f)) writeFileSync(path.join(mdir, f), text);
  };
  write(meshFiles(services, { podShift: 0, weight: 90, extra: false }));
  const cp = new ControlPlane({
    source: new DirectorySource(mdir),
    listen: [{ address: `unix:${path.join(dir, 'xds.sock')}` }],
    logger: nullLogger,
    debounceMs: 10,
  });
  let clientsProc: Clients | undefined;
  try {
    await cp.start();
    const translate: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      (cp as unknown as { fingerprint: string }).fingerprint = ''; // force a full rebuild
      await cp.reload();
      translate.push(performance.now() - t0);
    }
    clientsProc = new Clients(cp.addresses()[0]!, clients);
    await clientsProc.ready(); // every client has its initial state (all four types)
    const cl = clientsProc;

    const push = async (types: string[], change: () => void): Promise<number> => {
      const { done: all } = await cl.arm(types);
      const reloaded = new Promise<ReloadResult>((resolve) => cp.once('reload', resolve));
      const t0 = performance.now();
      change();
      const r = await reloaded;
      if (!r.applied) throw new Error(`bench mesh rejected: ${JSON.stringify(r.errors.slice(0, 3))}`);
      await all;
      return performance.now() - t0;
    };
    const eds: number[] = [];
    const rds: number[] = [];
    const cds: number[] = [];
    const first = 'svc-000000.yaml';
    for (let r = 0; r < ROUNDS; r++) {
      eds.push(
        await push([ENDPOINT_TYPE], () =>
          write(meshFiles(Math.min(services, 100), { podShift: 1000 + r, weight: 90, extra: false }), [
            first,
          ]),
        ),
      );
      rds.push(
        await push([ROUTE_TYPE], () =>
          write(meshFiles(Math.min(services, 100), { podShift: 1000 + r, weight: 50 + r, extra: false }), [
            first,
          ]),
        ),
      );
      // A new Service changes all four types; its removal (not timed) CDS and LDS (SotW does not announce RDS/EDS removals).
      cds.push(
        await push([CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE], () =>
          write(meshFiles(1, { podShift: 0, weight: 90, extra: true }), ['zz-extra.yaml']),
        ),
      );
      await push([CLUSTER_TYPE, LISTENER_TYPE], () => rmSync(path.join(mdir, 'zz-extra.yaml')));
    }
    return {
      services,
      clients,
      translateMs: median(translate),
      edsPushMs: median(eds),
      rdsPushMs: median(rds),
      newServicePushMs: median(cds),
      rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
  } finally {
    await clientsProc?.stop();
    await cp.close();
    rmSync(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const s of SERVICES) {
    for (const c of CLIENTS) {
      const row = await scenario(s, c);
      rows.push(row);
      process.stdout.write(`${JSON.stringify(row)}\n`);
    }
  }
  const fmt = (n: number) => n.toFixed(1).padStart(9);
  process.stdout.write(
    `\nservices clients translate_ms eds_push_ms rds_push_ms new_svc_push_ms rss_MiB\n${rows
      .map(
        (r) =>
          `${String(r.services).padStart(8)} ${String(r.clients).padStart(7)} ${fmt(r.translateMs)}    ${fmt(r.edsPushMs)}  ${fmt(r.rdsPushMs)}  ${fmt(r.newServicePushMs)} ${String(r.rssMiB).padStart(7)}`,
      )
      .join('\n')}\n`,
  );
  const out = path.join(import.meta.dirname, 'results', 'xds-push.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, rounds: ROUNDS, note: 'RSS is the control plane process alone (clients run in a child process); push times include the 10 ms debounce, file read, validation, translation and encoding of the whole mesh', rows }, null, 2)}\n`,
  );
  process.stdout.write(`wrote ${out}\n`);
}

/** Worker mode: the ADS clients live in a child process, so the parent's RSS and CPU are the control plane's. */
if (values.worker) {
  const conns = Array.from({ length: Number(values.count) }, (_, i) => new RawClient(values.worker!, i));
  const waitAll = async (types: string[]) => {
    await Promise.all(conns.flatMap((c) => types.map((t) => c.next(t))));
  };
  while (conns.some((c) => c.received.size < 4)) await new Promise((r) => setTimeout(r, 20));
  process.send!({ ready: true });
  process.on('message', (m: { arm?: string[]; id?: number; stop?: boolean }) => {
    if (m.stop) {
      for (const c of conns) c.close();
      process.exit(0);
    }
    if (m.arm) {
      const done = waitAll(m.arm);
      process.send!({ armed: m.id });
      void done.then(() => process.send!({ done: m.id }));
    }
  });
} else {
  await main();
}
