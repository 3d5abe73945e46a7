import { spawnSync } from 'node:child_process';
import { commandIn, TestBed } from '../../lab/testbed.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';

/** The one running bed a verb acts on: `--run` names it, otherwise there must be exactly one. */
export function currentBed(runId: string | undefined): TestBed {
  if (runId) return TestBed.attach(runId);
  // A Kubernetes test cluster's own record (lab/kube/cluster.ts) is not a mesh a verb can act on.
  const beds = TestBed.list().filter((b) => b.extra.kubeCluster === undefined);
  if (beds.length === 0) {
    throw new SockmeshError('SOCKMESH_E_NOT_FOUND', 'no local mesh is running', {
      hint: 'start one with `sockmesh up`',
    });
  }
  if (beds.length > 1) {
    throw new SockmeshError(
      'SOCKMESH_E_USAGE',
      `${beds.length} local meshes are running: ${beds.map((b) => b.runId).join(', ')}`,
      {
        hint: 'choose one with --run <id>',
      },
    );
  }
  return TestBed.attach(beds[0]!.runId);
}

export const downCommand: Command = {
  usage: `Usage: sockmesh down [--run <id>] [--all]

Removes what 'sockmesh up' (or a crashed test) created, and nothing else:
network namespaces, cgroups (killing their processes), bpffs pins, /etc/netns
entries and the state file under /run/sockmesh.

  --run <id>   remove only the mesh with this run id
  --all        remove every recorded mesh, also ones owned by live processes

Exit codes: 0 removed (or nothing to remove), 2 usage, 3 precondition (not root).`,
  async run({ argv, stdout }) {
    const { values } = parseCommandArgs(argv, { run: { type: 'string' }, all: { type: 'boolean' } }, false);
    const beds = TestBed.list().filter((b) =>
      values.run ? b.runId === values.run : values.all || b.persistent,
    );
    if (values.run && beds.length === 0) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no local mesh with run id '${values.run}'`);
    }
    const reaped = TestBed.reapStale();
    for (const rec of beds) {
      TestBed.attach(rec.runId).destroySync();
      stdout.write(`removed local mesh ${rec.runId} (${rec.nodes.length} nodes, ${rec.pods.length} pods)\n`);
    }
    for (const id of reaped) stdout.write(`removed stale test bed ${id}\n`);
    if (beds.length === 0 && reaped.length === 0) stdout.write('nothing to remove\n');
    return EXIT.OK;
  },
};

export const execCommand: Command = {
  usage: `Usage: sockmesh exec [--run <id>] <namespace>/<pod> -- <command> [args...]

Runs the command inside the pod exactly as its workloads run: in the pod's
network namespace and cgroup, so the mesh captures its connections.
The command's exit code becomes sockmesh's exit code.

Example: sockmesh exec shop/frontend -- curl -s http://reviews.shop:9080/`,
  async run({ argv }) {
    const dash = argv.indexOf('--');
    if (dash < 0 || dash === argv.length - 1) {
      throw new SockmeshError('SOCKMESH_E_USAGE', 'missing `-- <command>`', {
        hint: 'sockmesh exec shop/frontend -- curl ...',
      });
    }
    const { values, positionals } = parseCommandArgs(argv.slice(0, dash), { run: { type: 'string' } });
    const target = positionals[0];
    const m = target?.match(/^([a-z0-9-]+)\/([a-z0-9-]+)$/);
    if (!m) throw new SockmeshError('SOCKMESH_E_USAGE', `expected <namespace>/<pod>, got '${target ?? ''}'`);
    const bed = currentBed(values.run);
    const pod = bed.pod(m[1]!, m[2]!);
    const [file, args] = commandIn(pod, argv.slice(dash + 1));
    const res = spawnSync(file, args, { stdio: 'inherit' });
    return res.status ?? EXIT.FAILURE;
  },
};
