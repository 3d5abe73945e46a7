import { replaceAgent, waitExit } from '../../lab/agent-restart.js';
import { LocalMesh } from '../../lab/mesh.js';
import { SockmeshError } from '../../lib/errors.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { currentBed } from './lab.js';

export const restartAgentCommand: Command = {
  usage: `Usage: sockmesh restart-agent <node> [--run <id>] [--kill] [--drain-timeout <s>] [--wait]

Replaces the agent of one node of the local mesh, the way a DaemonSet rollout
would. By default an upgrade: a new agent starts beside the running one with the
same options, takes its listening sockets over the handoff socket (see
'sockmesh agent --help'), serves, and the old one drains and exits; no
connection is refused. --kill is a crash instead: the running agent gets SIGKILL
first, then the new one starts (pods' new connections fail until it serves).

  --run <id>            which local mesh (default: the only one running)
  --kill                kill -9 the running agent first (measure a crash)
  --drain-timeout <s>   drain bound of the new agent (for its own successor)
  --wait                also wait for the old agent to exit (up to its drain bound + 10 s)

Prints the old and new pids and how long the new agent took to serve.`,
  async run({ argv, stdout }) {
    const { values, positionals } = parseCommandArgs(argv, {
      run: { type: 'string' },
      kill: { type: 'boolean' },
      'drain-timeout': { type: 'string' },
      wait: { type: 'boolean' },
    });
    const node = positionals[0];
    if (!node)
      throw new SockmeshError('SOCKMESH_E_USAGE', 'which node?', { hint: 'sockmesh restart-agent node1' });
    const mesh = await LocalMesh.attach(currentBed(values.run));
    if (!mesh.bed.nodes.some((n) => n.name === node)) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `no node ${node} in local mesh ${mesh.bed.runId}`);
    }
    const r = await replaceAgent(mesh, node, {
      mode: values.kill ? 'crash' : 'upgrade',
      ...(values['drain-timeout'] ? { extraArgs: ['--drain-timeout', values['drain-timeout']] } : {}),
    });
    stdout.write(
      `${node}: agent ${r.oldPid} -> ${r.newPid} (${r.mode}); serving ${r.servingMs} ms after start` +
        (r.inherited.length ? `, inherited ${r.inherited.join(', ')}` : ', no socket inherited') +
        '\n',
    );
    if (values.wait && r.mode === 'upgrade') {
      const gone = await waitExit(r.oldPid, 45_000);
      stdout.write(
        gone ? `old agent ${r.oldPid} drained and exited\n` : `old agent ${r.oldPid} still running\n`,
      );
    }
    return EXIT.OK;
  },
};
