import { spawnSync } from 'node:child_process';
import { kubeBinaries } from '../../lab/kube/binaries.js';
import { runLabKube } from '../../lab/kube/lab-kube.js';
import { kubeLabInfo } from '../../lab/kube/mesh.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { currentBed } from './lab.js';

export const kubectlCommand: Command = {
  usage: `Usage: sockmesh kubectl [--run <id>] -- <kubectl args...>
       sockmesh kubectl <kubectl args...>

Runs the kubectl built by scripts/k8s/build.sh against the local mesh's
Kubernetes API server (a mesh started with 'sockmesh up --kube'), with
KUBECONFIG set to the lab's admin kubeconfig. The exit code is kubectl's.

Example: sockmesh kubectl label ns legacy sockmesh.io/mesh=enabled`,
  async run({ argv }) {
    const dash = argv.indexOf('--');
    const own = dash >= 0 ? argv.slice(0, dash) : argv[0] === '--run' ? argv.slice(0, 2) : [];
    const rest = dash >= 0 ? argv.slice(dash + 1) : argv.slice(own.length);
    const { values } = parseCommandArgs(own, { run: { type: 'string' } }, false);
    const bed = currentBed(values.run);
    const info = kubeLabInfo(bed);
    if (!info) {
      throw new SockmeshError('SOCKMESH_E_USAGE', `local mesh ${bed.runId} does not run on Kubernetes`, {
        hint: "start one with 'sockmesh up --kube'",
      });
    }
    const res = spawnSync(kubeBinaries().kubectl, rest, {
      stdio: 'inherit',
      env: { ...process.env, KUBECONFIG: info.kubeconfig },
    });
    if (res.error) throw new SockmeshError('SOCKMESH_E_COMMAND', `kubectl: ${res.error.message}`);
    return res.status ?? EXIT.FAILURE;
  },
};

export const labKubeCommand: Command = {
  usage: `Usage: sockmesh lab-kube --run <id>

Internal to 'sockmesh up --kube': runs a local mesh's Kubernetes control plane
(kine, kube-apiserver, kube-controller-manager on 127.0.0.1) and the lab kubelet
(registers the lab's nodes, realizes the Pods bound to them as netns + cgroup)
in the foreground, until SIGTERM. Writes <run dir>/kube/ready.json once serving.`,
  async run({ argv, stderr }) {
    const { values } = parseCommandArgs(argv, { run: { type: 'string' } }, false);
    if (!values.run) throw new SockmeshError('SOCKMESH_E_USAGE', '--run <id> is required');
    // Handlers first: a SIGTERM that arrives right after ready.json is written (a test tearing down
    // at once) must stop the cluster, not kill this process and orphan the API server.
    const stopped = new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    const lab = await runLabKube(values.run);
    await stopped;
    stderr.write('sockmesh lab-kube: stopping\n');
    await lab.stop();
    return EXIT.OK;
  },
};
