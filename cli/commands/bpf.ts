import { type DataplaneStatus, detachPinned, SockopsDataplane } from '../../bpf-sockops/index.js';
import type { LabNode } from '../../lab/types.js';
import { SockmeshError } from '../../lib/errors.js';
import { nullLogger } from '../../lib/log.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { currentBed } from './lab.js';

interface Target {
  name: string;
  cgroupPath: string;
  bpffsDir: string;
}

/** Explicit --cgroup/--bpffs, else the nodes of the running local mesh (optionally one --node). */
function targets(values: { cgroup?: string; bpffs?: string; run?: string; node?: string }): Target[] {
  if (values.bpffs !== undefined || values.cgroup !== undefined) {
    if (values.bpffs === undefined || values.cgroup === undefined) {
      throw new SockmeshError('SOCKMESH_E_USAGE', '--cgroup and --bpffs go together');
    }
    return [{ name: values.bpffs, cgroupPath: values.cgroup, bpffsDir: values.bpffs }];
  }
  const bed = currentBed(values.run);
  const nodes: readonly LabNode[] = values.node ? [bed.node(values.node)] : bed.nodes;
  return nodes.map((n) => ({ name: n.name, cgroupPath: n.cgroupPath, bpffsDir: n.bpffsDir }));
}

function formatStatus(name: string, s: DataplaneStatus): string {
  const progs = s.programs.map((p) => `${p.name}#${p.id}${p.attached ? '' : ' (NOT ATTACHED)'}`).join(', ');
  const proxy = s.config.proxy
    ? `${s.config.proxy.ip}:${s.config.proxy.port}${s.config.proxyIp6 ? ` and [${s.config.proxyIp6}]:${s.config.proxy.port}` : ''}`
    : 'none (capture off)';
  return [
    `${name}:`,
    `  cgroup        ${s.cgroupPath}`,
    `  pins          ${s.bpffsDir}`,
    `  programs      ${progs}`,
    `  proxy         ${proxy}`,
    `  acceleration  ${s.config.acceleration ? 'on' : 'off'}`,
    `  meshed pods   ${s.pods} (${s.strictPods} strict; ${s.inboundPods} permissive with inbound plaintext on :15006)`,
    `  excluded      ports [${s.exclusions.ports.join(', ')}] cidrs [${s.exclusions.cidrs.join(', ')}]`,
    `  connections   ${s.connections.sm_orig_by_tuple + s.connections.sm_orig6_by_tuple} tracked, ${s.connections.sm_sockhash + s.connections.sm_sockhash6} accelerated sockets, ${s.connections.sm_orig_by_cookie + s.connections.sm_orig6_by_cookie} connecting`,
  ].join('\n');
}

export const bpfCommand: Command = {
  usage: `Usage: sockmesh bpf <status|counters|detach> [--run <id>] [--node <name>] [--json]
       sockmesh bpf <status|counters|detach> --cgroup <dir> --bpffs <dir> [--json]

  status     programs and whether they are attached, proxy address, acceleration,
             meshed pods, exclusions, per-connection map sizes
  counters   connects redirected, connections tracked, messages redirected,
             fallbacks, map-full events, sockets accelerated (since load)
  detach     detach the programs from the node cgroup and remove every pin;
             open connections fall back to plain TCP

Without --cgroup/--bpffs it acts on every node of the running local mesh
(\`sockmesh up\`), or on --node <name> only. Status and counters never load or
attach anything.

Exit codes: 0 ok, 1 failure, 2 usage, 3 precondition (not root, not built, ...).`,
  async run({ argv, stdout }) {
    const { values, positionals } = parseCommandArgs(argv, {
      run: { type: 'string' },
      node: { type: 'string' },
      cgroup: { type: 'string' },
      bpffs: { type: 'string' },
      json: { type: 'boolean' },
    });
    const sub = positionals[0];
    if (sub !== 'status' && sub !== 'counters' && sub !== 'detach') {
      throw new SockmeshError('SOCKMESH_E_USAGE', `expected status, counters or detach, got '${sub ?? ''}'`, {
        hint: 'see sockmesh bpf --help',
      });
    }
    const out: Record<string, unknown> = {};
    for (const t of targets(values)) {
      if (sub === 'detach') {
        let dp: SockopsDataplane | undefined;
        try {
          dp = SockopsDataplane.open({ ...t, adoptOnly: true, logger: nullLogger });
        } catch {
          dp = undefined;
        }
        if (dp) dp.detach();
        else detachPinned(t.bpffsDir, t.cgroupPath);
        out[t.name] = 'detached';
        if (!values.json) stdout.write(`${t.name}: detached, pins removed\n`);
        continue;
      }
      const dp = SockopsDataplane.open({ ...t, adoptOnly: true, logger: nullLogger });
      try {
        if (sub === 'status') {
          const s = dp.status();
          out[t.name] = s;
          if (!values.json) stdout.write(`${formatStatus(t.name, s)}\n`);
        } else {
          const c = dp.counters();
          out[t.name] = Object.fromEntries(Object.entries(c).map(([k, v]) => [k, v.toString()]));
          if (!values.json) {
            stdout.write(`${t.name}:\n`);
            for (const [k, v] of Object.entries(c)) stdout.write(`  ${k.padEnd(20)} ${v}\n`);
          }
        }
      } finally {
        dp.close();
      }
    }
    if (values.json) stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return EXIT.OK;
  },
};
