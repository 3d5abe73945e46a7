import { createInterface } from 'node:readline';
import { type CollectorConfig, collect } from '../../dashboard/collector.js';
import type { DashboardSnapshot } from '../../dashboard/model.js';
import { DashboardServer } from '../../dashboard/server.js';
import { cliArgv, LocalMesh } from '../../lab/mesh.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { currentBed } from './lab.js';

export const dashboardCommand: Command = {
  usage: `Usage: sockmesh dashboard [--port <n>] [--host <addr>] [--interval <s>] [--window <s>] [--run <id>]

Serves a live view of the local mesh in the browser (default
http://127.0.0.1:15030/): the service graph (workloads; edges with requests/s,
success rate and p99, and the kernel's TCP health per pair when the agents
export it), every weighted route's served weights next to the live share,
with its CanaryGuard's state, and the recent authorization denials. Updates
every --interval seconds (default 1) over Server-Sent Events; rates are over
the last --window seconds (default 10).

The data comes from the agents' admin ports (/metrics, /stats/config) and
the control plane's admin endpoint (/v1/canary, /v1/config), polled by a
collector inside the first node (where the agents are reachable). The page,
its script and style are served from dashboard/static: nothing from a CDN.
Runs until interrupted (Ctrl-C).

Exit codes: 0 stopped, 2 usage, 3 no mesh.`,
  async run({ argv, stdout, stderr }) {
    const { values } = parseCommandArgs(
      argv,
      {
        port: { type: 'string' },
        host: { type: 'string' },
        interval: { type: 'string' },
        window: { type: 'string' },
        run: { type: 'string' },
        collect: { type: 'string' },
      },
      false,
    );
    if (values.collect !== undefined) {
      // Internal: the collector, started by the dashboard inside a node.
      const cfg = JSON.parse(values.collect) as CollectorConfig;
      const ac = new AbortController();
      process.stdin.on('end', () => ac.abort()).resume();
      process.on('SIGTERM', () => ac.abort());
      await collect(cfg, stdout, ac.signal);
      return EXIT.OK;
    }
    const interval = Number(values.interval ?? 1);
    const window = Number(values.window ?? 10);
    const port = Number(values.port ?? 15030);
    if (!(interval >= 0.2 && interval <= 60))
      throw new SockmeshError('SOCKMESH_E_USAGE', '--interval must be 0.2 to 60 seconds');
    if (!(window >= interval && window <= 3600))
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        '--window must be at least --interval and at most 3600 seconds',
      );
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new SockmeshError('SOCKMESH_E_USAGE', `--port ${values.port}: not a port`);
    const mesh = await LocalMesh.attach(currentBed(values.run));
    const first = mesh.bed.nodes[0];
    if (!first) throw new SockmeshError('SOCKMESH_E_LAB', `local mesh ${mesh.bed.runId} has no node`);
    const cfg: CollectorConfig = {
      agents: mesh.bed.nodes.map((n) => ({ node: n.name, url: `http://${n.underlayIp}:15020` })),
      controlPlane: `unix:${mesh.paths.adminSocket}`,
      intervalMs: interval * 1000,
      windowMs: window * 1000,
    };
    const server = new DashboardServer();
    const addr = await server.listen(port, values.host ?? '127.0.0.1');
    const collector = mesh.bed.spawn(first, [...cliArgv(), 'dashboard', '--collect', JSON.stringify(cfg)]);
    collector.stderr?.on('data', (b: Buffer) => stderr.write(b));
    createInterface({ input: collector.stdout! }).on('line', (line) => {
      try {
        server.update(JSON.parse(line) as DashboardSnapshot);
      } catch {
        stderr.write(`dashboard: collector wrote something that is not a snapshot: ${line.slice(0, 200)}\n`);
      }
    });
    stdout.write(
      `sockmesh dashboard for local mesh ${mesh.bed.runId}: http://${addr.address}:${addr.port}/ (Ctrl-C stops)\n`,
    );
    const exited = new Promise<void>((resolve) => collector.on('exit', () => resolve()));
    await Promise.race([
      exited.then(() => stderr.write('dashboard: the collector stopped\n')),
      new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      }),
    ]);
    collector.stdin?.end();
    if (collector.exitCode === null && collector.pid) {
      try {
        process.kill(collector.pid, 'SIGTERM');
      } catch {}
    }
    await server.close();
    return EXIT.OK;
  },
};
