/**
 * The process behind `sockmesh up --kube` that owns the local mesh's Kubernetes
 * control plane (helper cluster.ts: kine, kube-apiserver, kube-controller-manager)
 * and runs the lab kubelet against it. It lives in the test bed's host cgroup and
 * is recorded as a graceful daemon, so teardown stops it with SIGTERM first: it
 * then stops the cluster, which removes what the cluster made outside the bed.
 *
 * SIGUSR2 restarts kube-apiserver on the same port (kine keeps the data): the
 * e2e tests' "API server restarted mid-run". ready.json is rewritten when the
 * restart is done (new pids, `apiServerRestarts` counted up, or the failure).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger } from '../../lib/log.js';
import { KubeClient } from '../../xds/sources/kube/client.js';
import { loadKubeconfig } from '../../xds/sources/kube/config.js';
import { TestBed } from '../testbed.js';
import { startKubeCluster } from './cluster.js';
import { LabKubelet } from './kubelet.js';
import { applySockmeshCrds, type KubeLabInfo, kubeDir, readyPath } from './mesh.js';

export interface RunningLabKube {
  stop(): Promise<void>;
}

export const RESTART_API_SERVER_SIGNAL = 'SIGUSR2';

export async function runLabKube(runId: string): Promise<RunningLabKube> {
  const log = createLogger('lab-kube');
  const bed = TestBed.attach(runId);
  // Before anything else: teardown must stop this process with SIGTERM so it stops the cluster.
  bed.addGracefulDaemon(process.pid);
  const started = performance.now();
  const cluster = await startKubeCluster({
    name: `sockmesh-${runId}`,
    dir: kubeDir(bed),
    gatewayCrds: true,
  });
  const client = new KubeClient(loadKubeconfig(cluster.kubeconfig));
  let kubelet: LabKubelet | undefined;
  let info: KubeLabInfo | undefined;
  const publish = (next: KubeLabInfo): void => {
    info = next;
    const file = readyPath(bed);
    writeFileSync(`${file}.tmp`, `${JSON.stringify(next, null, 2)}\n`);
    renameSync(`${file}.tmp`, file);
  };
  // One restart at a time; a signal during a restart is folded into it (the caller waits for the count).
  let restarting: Promise<void> | undefined;
  const onRestart = (): void => {
    restarting ??= (async () => {
      const t0 = performance.now();
      let error: string | undefined;
      try {
        await cluster.restartApiServer();
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
        log.error('kube-apiserver restart failed', { error });
      }
      if (info) {
        publish({
          ...info,
          clusterPids: cluster.pids(),
          apiServerRestarts: (info.apiServerRestarts ?? 0) + 1,
          lastRestartMs: Math.round(performance.now() - t0),
          ...(error ? { lastRestartError: error } : {}),
        });
      }
      log.info('kube-apiserver restarted', { ms: Math.round(performance.now() - t0), error });
    })().finally(() => {
      restarting = undefined;
    });
  };
  process.on(RESTART_API_SERVER_SIGNAL, onRestart);
  try {
    await applySockmeshCrds(cluster);
    const clusterMs = Math.round(performance.now() - started);
    kubelet = new LabKubelet({ bed, client, logsDir: join(bed.runDir, 'logs'), log });
    await kubelet.start();
    publish({
      server: cluster.server,
      kubeconfig: cluster.kubeconfig,
      pid: process.pid,
      clusterPids: cluster.pids(),
      clusterRunId: cluster.runId,
      clusterMs,
      apiServerRestarts: 0,
    });
    log.info('Kubernetes control plane and lab kubelet ready', { server: cluster.server, clusterMs });
  } catch (err) {
    process.off(RESTART_API_SERVER_SIGNAL, onRestart);
    await kubelet?.stop();
    await client.close();
    await cluster.stop();
    throw err;
  }
  return {
    async stop() {
      process.off(RESTART_API_SERVER_SIGNAL, onRestart);
      await restarting;
      await kubelet?.stop();
      await client.close();
      await cluster.stop();
    },
  };
}
