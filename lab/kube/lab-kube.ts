/**
 * The process behind `sockmesh up --kube` that owns the local mesh's Kubernetes
 * control plane (helper cluster.ts: kine, kube-apiserver, kube-controller-manager)
 * and runs the lab kubelet against it. It lives in the test bed's host cgroup and
 * is recorded as a graceful daemon, so teardown stops it with SIGTERM first: it
 * then stops the cluster, which removes what the cluster made outside the bed.
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
  try {
    await applySockmeshCrds(cluster);
    const clusterMs = Math.round(performance.now() - started);
    kubelet = new LabKubelet({ bed, client, logsDir: join(bed.runDir, 'logs'), log });
    await kubelet.start();
    const info: KubeLabInfo = {
      server: cluster.server,
      kubeconfig: cluster.kubeconfig,
      pid: process.pid,
      clusterPids: cluster.pids(),
      clusterRunId: cluster.runId,
      clusterMs,
    };
    const file = readyPath(bed);
    writeFileSync(`${file}.tmp`, `${JSON.stringify(info, null, 2)}\n`);
    renameSync(`${file}.tmp`, file);
    log.info('Kubernetes control plane and lab kubelet ready', { server: cluster.server, clusterMs });
  } catch (err) {
    await kubelet?.stop();
    await client.close();
    await cluster.stop();
    throw err;
  }
  return {
    async stop() {
      await kubelet?.stop();
      await client.close();
      await cluster.stop();
    },
  };
}
