/**
 * Which Kubernetes watch recovers: @kubernetes/client-node 1.4's informer (makeInformer) against
 * sockmesh's reflector (xds/sources/kube/reflector.ts), side by side on one real kube-apiserver
 * (lab/kube/cluster.ts), each reaching it through the same loopback TCP proxy that can blackhole
 * its connections (test/integration/kube/source-helpers.ts StallProxy). Three watchers of the same
 * ConfigMaps:
 *   reflector            sockmesh's, its defaults except the watchdog (--idle-ms, see below)
 *   informer             client-node's makeInformer, as is
 *   informer+restart     the same with client-node's own example error handler
 *                        (examples/typescript/informer: on 'error', start() again after 5 s)
 * Scenarios, each timed from the moment the change could be seen to the watcher's cache holding it
 * (capped at --cap-s):
 *   restart  kube-apiserver restarts (kine keeps the data); a ConfigMap is created right after
 *   stall    every open connection of the proxy goes silent for good (kept open, nothing
 *            forwarded: a hung peer or a middlebox that lost the flow; the proxy's kernel still
 *            answers TCP keep-alives); a ConfigMap is created, new connections flow 1 s later
 *
 *   node --import tsx bench/kube-informers.ts [--rounds 2] [--idle-ms 10000] [--cap-s 120]
 *
 * Writes bench/results/kube-informers.{json,md}. A bench, not a test: @kubernetes/client-node is a
 * devDependency for this script only; nothing shipped uses it.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { startKubeCluster } from '../lab/kube/cluster.js';
import { nullLogger } from '../lib/log.js';
import { StallProxy } from '../test/integration/kube/source-helpers.js';
import { KubeClient } from '../xds/sources/kube/client.js';
import { loadKubeconfig } from '../xds/sources/kube/config.js';
import { Reflector } from '../xds/sources/kube/reflector.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '2' },
    'idle-ms': { type: 'string', default: '10000' },
    'cap-s': { type: 'string', default: '120' },
  },
});
const ROUNDS = Number(values.rounds);
const IDLE_MS = Number(values['idle-ms']);
const CAP_MS = Number(values['cap-s']) * 1000;
const NS = 'informers';
const RESULTS = path.join(import.meta.dirname, 'results');

interface Watcher {
  name: string;
  has(name: string): boolean;
  /** Lists done, errors reported: what the watcher itself says happened. */
  counters(): Record<string, number>;
  stop(): Promise<void>;
}

function reflectorWatcher(kubeconfig: string, server: string): Watcher {
  const client = new KubeClient({ ...loadKubeconfig(kubeconfig), server });
  const noop = () => {};
  const r = new Reflector(
    client,
    { kind: 'ConfigMap', apiVersion: 'v1', path: `/api/v1/namespaces/${NS}/configmaps`, namespaced: true },
    { replaced: noop, upserted: noop, deleted: noop },
    nullLogger,
    { idleTimeoutMs: IDLE_MS },
  );
  const started = r.list().then(() => r.start());
  return {
    name: 'reflector',
    has: (name) => r.store.has(`${NS}/${name}`),
    counters: () => ({
      lists: r.stats.lists,
      gone410: r.stats.gone,
      watches: r.stats.watches,
      watchdogRestarts: r.stats.idleRestarts,
      errors: r.stats.errors,
    }),
    async stop() {
      await started.catch(() => {});
      await r.stop();
      await client.close();
    },
  };
}

function informerWatcher(kubeconfig: string, server: string, restartOnError: boolean): Watcher {
  const kc = new k8s.KubeConfig();
  kc.loadFromString(readFileSync(kubeconfig, 'utf8').replace(/server: \S+/, `server: ${server}`));
  const api = kc.makeApiClient(k8s.CoreV1Api);
  const c = { lists: 0, errors: 0, restarts: 0 };
  const listFn = () => {
    c.lists++;
    return api.listNamespacedConfigMap({ namespace: NS });
  };
  const informer = k8s.makeInformer(kc, `/api/v1/namespaces/${NS}/configmaps`, listFn);
  let stopped = false;
  informer.on('error', () => {
    c.errors++;
    if (!restartOnError || stopped) return;
    // client-node's example: "Restart informer after 5sec".
    setTimeout(() => {
      if (stopped) return;
      c.restarts++;
      void informer.start().catch(() => {});
    }, 5000);
  });
  void informer.start().catch(() => {});
  return {
    name: restartOnError ? 'informer+restart' : 'informer',
    has: (name) => informer.get(name, NS) !== undefined,
    counters: () => ({ ...c }),
    async stop() {
      stopped = true;
      await informer.stop();
    },
  };
}

async function until(check: () => boolean, capMs: number): Promise<number | null> {
  const t0 = performance.now();
  while (!check()) {
    if (performance.now() - t0 > capMs) return null;
    await new Promise((r) => setTimeout(r, 10));
  }
  return Math.round(performance.now() - t0);
}

async function main(): Promise<void> {
  const date = new Date().toISOString();
  const loadAtStart = loadavg().map((x) => Math.round(x * 10) / 10);
  const kube = await startKubeCluster({ name: `informers-${process.pid}` });
  const proxy = new StallProxy(Number(new URL(kube.server).port));
  const admin = new KubeClient(loadKubeconfig(kube.kubeconfig));
  let watchers: Watcher[] = [];
  const rows: { scenario: string; round: number; watcher: string; ms: number | null }[] = [];
  try {
    await proxy.start();
    await admin.json('POST', '/api/v1/namespaces', { body: { metadata: { name: NS } } });
    let seq = 0;
    const create = async () => {
      const name = `cm-${++seq}`;
      await admin.json('POST', `/api/v1/namespaces/${NS}/configmaps`, {
        body: { metadata: { name, namespace: NS }, data: { n: String(seq) } },
      });
      return name;
    };
    const fresh = () => {
      const server = `https://127.0.0.1:${proxy.port}`;
      return [
        reflectorWatcher(kube.kubeconfig, server),
        informerWatcher(kube.kubeconfig, server, false),
        informerWatcher(kube.kubeconfig, server, true),
      ];
    };
    const measure = async (scenario: string, round: number, name: string) => {
      const times = await Promise.all(watchers.map((w) => until(() => w.has(name), CAP_MS)));
      watchers.forEach((w, i) => {
        rows.push({ scenario, round, watcher: w.name, ms: times[i] ?? null });
      });
      process.stderr.write(
        `[kube-informers] ${scenario} #${round}: ${watchers.map((w, i) => `${w.name} ${times[i] ?? `not in ${CAP_MS / 1000} s`}`).join(', ')}\n`,
      );
    };
    const settle = async () => {
      const probe = await create();
      const ok = await Promise.all(watchers.map((w) => until(() => w.has(probe), 30_000)));
      if (ok.some((t) => t === null)) throw new Error('a watcher did not start');
    };

    for (let round = 1; round <= ROUNDS; round++) {
      watchers = fresh();
      await settle();
      await kube.restartApiServer();
      await measure('restart', round, await create());

      await Promise.all(watchers.map((w) => w.stop()));
      watchers = fresh();
      await settle();
      proxy.freeze();
      const name = await create();
      setTimeout(() => proxy.thaw(), 1000);
      await measure('stall', round, name);
      const counters = Object.fromEntries(watchers.map((w) => [w.name, w.counters()]));
      process.stderr.write(`[kube-informers] counters after stall #${round}: ${JSON.stringify(counters)}\n`);
      await Promise.all(watchers.map((w) => w.stop()));
      watchers = [];
      // The blackholed connections of this round stay open until the proxy stops; new ones flow.
      proxy.thaw();
    }
    const result = {
      date,
      node: process.version,
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      loadavg: { atStart: loadAtStart, atEnd: loadavg().map((x) => Math.round(x * 10) / 10) },
      clientNode: (
        JSON.parse(
          readFileSync(
            path.join(
              import.meta.dirname,
              '..',
              'node_modules',
              '@kubernetes',
              'client-node',
              'package.json',
            ),
            'utf8',
          ),
        ) as { version: string }
      ).version,
      command: `node --import tsx bench/kube-informers.ts --rounds ${ROUNDS} --idle-ms ${IDLE_MS} --cap-s ${CAP_MS / 1000}`,
      reflectorIdleMs: IDLE_MS,
      capMs: CAP_MS,
      rows,
    };
    writeFileSync(path.join(RESULTS, 'kube-informers.json'), `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(path.join(RESULTS, 'kube-informers.md'), render(result));
    process.stdout.write(render(result));
  } finally {
    await Promise.all(watchers.map((w) => w.stop().catch(() => {})));
    await admin.close();
    await proxy.stop();
    await kube.stop();
  }
}

function render(r: {
  date: string;
  node: string;
  cpus: number;
  cpu: string | undefined;
  loadavg: { atStart: number[]; atEnd: number[] };
  clientNode: string;
  command: string;
  reflectorIdleMs: number;
  capMs: number;
  rows: { scenario: string; round: number; watcher: string; ms: number | null }[];
}): string {
  const names = [...new Set(r.rows.map((x) => x.watcher))];
  const cell = (scenario: string, w: string) =>
    r.rows
      .filter((x) => x.scenario === scenario && x.watcher === w)
      .map((x) => (x.ms === null ? `not within ${r.capMs / 1000} s` : `${x.ms} ms`))
      .join(', ');
  return `# Kubernetes watch recovery: client-node ${r.clientNode} informer vs sockmesh's reflector

${r.date}, ${r.cpus} x ${r.cpu}, Node ${r.node}, load average ${r.loadavg.atStart.join(' ')} -> ${r.loadavg.atEnd.join(' ')}.
Reproduce: \`${r.command}\`. Time from the change being visible to each watcher's cache holding it,
one value per round. The reflector's watchdog is set to ${r.reflectorIdleMs / 1000} s here (its default: the watch's
timeoutSeconds + 30 s, 5.5-10.5 min); client-node's informer has no setting for it.

| scenario | ${names.join(' | ')} |
|---|${names.map(() => '---').join('|')}|
| kube-apiserver restart, object created right after | ${names.map((w) => cell('restart', w)).join(' | ')} |
| connections blackholed (kept open), object created, new connections flow 1 s later | ${names.map((w) => cell('stall', w)).join(' | ')} |
`;
}

await main();
