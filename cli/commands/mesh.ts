import { readFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { LocalMesh } from '../../lab/mesh.js';
import { SockmeshError } from '../../lib/errors.js';
import { MESH_LABEL, MTLS_LABEL } from '../../xds/model/kinds.js';
import { parseCommandArgs } from '../args.js';
import { type Command, EXIT } from '../command.js';
import { table } from '../table.js';
import { tcpHealthTable } from '../tcp-health-table.js';
import { currentBed } from './lab.js';
import { describeMesh, statusesOf } from './up.js';

async function runningMesh(runId: string | undefined): Promise<LocalMesh> {
  return LocalMesh.attach(currentBed(runId));
}

export const statusCommand: Command = {
  usage: `Usage: sockmesh status [--run <id>] [--json]

Asks every node agent (admin port 15020) and the control plane what they are
doing: config version and xDS connection, meshed pods and their SPIFFE IDs,
SVID serials and expiry, tunnels, the kernel's counters and the kernel's TCP
health per workload pair (RTT, jitter, retransmits, RTOs, failures).

Exit codes: 0 all agents answered, 1 an agent is down, 2 usage, 3 no mesh / not root.`,
  async run({ argv, stdout }) {
    const { values } = parseCommandArgs(argv, { run: { type: 'string' }, json: { type: 'boolean' } }, false);
    const mesh = await runningMesh(values.run);
    const statuses = await statusesOf(mesh);
    const admin = mesh.admin();
    const controlPlane = await admin.status().catch((err: Error) => ({ error: err.message }));
    await admin.close();
    const down = [...statuses.values()].some((s) => 'error' in s);
    if (values.json) {
      stdout.write(
        `${JSON.stringify({ runId: mesh.bed.runId, controlPlane, agents: Object.fromEntries(statuses) }, null, 2)}\n`,
      );
      return down ? EXIT.FAILURE : EXIT.OK;
    }
    const cp = controlPlane as { version?: unknown; clients?: unknown[]; error?: string };
    stdout.write(
      `local mesh ${mesh.bed.runId}: control plane ${cp.error ? `DOWN (${cp.error})` : `config version ${cp.version}, ${cp.clients?.length ?? 0} agents connected`}\n\n`,
    );
    stdout.write(`${await describeMesh(mesh, statuses)}\n`);
    const ids: string[][] = [];
    const counters: string[][] = [];
    for (const [node, s] of statuses) {
      if ('error' in s) continue;
      for (const i of s.identities) ids.push([node, i.spiffeId, i.serial.slice(0, 16), i.notAfter]);
      counters.push([
        node,
        Object.entries(s.bpf)
          .map(([k, v]) => `${k}=${v}`)
          .join(' '),
      ]);
    }
    stdout.write(table(['NODE', 'SVID', 'SERIAL', 'NOT AFTER'], ids));
    stdout.write(`\n${table(['NODE', 'BPF COUNTERS'], counters)}`);
    stdout.write(
      `\nTCP health from the kernel, per workload pair (SRTT, JITTER: mean since first seen):\n${tcpHealthTable(
        [...statuses].map(([node, s]) => [node, 'error' in s ? undefined : s.tcpHealth]),
      )}`,
    );
    return down ? EXIT.FAILURE : EXIT.OK;
  },
};

function printApply(
  stdout: NodeJS.WritableStream,
  stderr: NodeJS.WritableStream,
  r: Awaited<ReturnType<ReturnType<LocalMesh['admin']>['apply']>>,
): number {
  if (!r.applied && !r.dryRun) {
    stderr.write(`SOCKMESH_E_MANIFEST: rejected, nothing changed (still serving version ${r.version}):\n`);
    for (const m of r.messages ?? []) stderr.write(`  ${m}\n`);
    return EXIT.FAILURE;
  }
  for (const c of r.changes ?? [])
    stdout.write(
      `${c.object.replace('//', '/')} ${c.action}${c.action === 'unchanged' ? '' : ` (${c.file})`}\n`,
    );
  stdout.write(r.dryRun ? 'dry run: valid, nothing applied\n' : `config version ${r.version}\n`);
  return EXIT.OK;
}

export const applyCommand: Command = {
  usage: `Usage: sockmesh apply -f <file|-> [--dry-run] [--run <id>]

Sends the YAML documents to the control plane. They are validated together with
everything already applied; an invalid set is rejected as a whole with
file:line: field: reason, and the last good configuration stays in force.
Agents receive a valid change within about a second.

Exit codes: 0 applied (or valid with --dry-run), 1 rejected, 2 usage, 3 no mesh.`,
  async run({ argv, stdout, stderr }) {
    const { values } = parseCommandArgs(
      argv,
      { file: { type: 'string', short: 'f' }, 'dry-run': { type: 'boolean' }, run: { type: 'string' } },
      false,
    );
    if (!values.file) throw new SockmeshError('SOCKMESH_E_USAGE', '-f <file> is required (- reads stdin)');
    let text: string;
    try {
      text = readFileSync(values.file === '-' ? 0 : values.file, 'utf8');
    } catch (err) {
      throw new SockmeshError(
        'SOCKMESH_E_NOT_FOUND',
        `cannot read ${values.file}: ${(err as Error).message}`,
      );
    }
    const mesh = await runningMesh(values.run);
    const admin = mesh.admin();
    try {
      return printApply(stdout, stderr, await admin.apply(text, values['dry-run'] === true));
    } finally {
      await admin.close();
    }
  },
};

export const labelCommand: Command = {
  usage: `Usage: sockmesh label <namespace> mesh=enabled|disabled [--run <id>]
       sockmesh label <namespace> mtls=strict|permissive [--run <id>]

mesh: sets the ${MESH_LABEL} label of the Namespace. Its pods join (or leave)
the mesh live: each node agent enrols them in the kernel's membership map, so
their next connection is captured; connections already open are left alone.

mtls: sets ${MTLS_LABEL}. strict (the default) drops plaintext that did not
come through the mesh; permissive lets callers outside the mesh reach the
namespace's pods through the node agent, which applies AuthorizationPolicy to
them as unauthenticated callers (for migrating callers into the mesh).

Exit codes: 0 done, 1 rejected, 2 usage, 3 no mesh.`,
  async run({ argv, stdout, stderr }) {
    const { values, positionals } = parseCommandArgs(argv, { run: { type: 'string' } });
    const [ns, kv] = positionals;
    const m = kv?.match(/^(?:(mesh)=(enabled|disabled)|(mtls)=(strict|permissive))$/);
    if (!ns || !m)
      throw new SockmeshError(
        'SOCKMESH_E_USAGE',
        'expected: sockmesh label <namespace> mesh=enabled|disabled or mtls=strict|permissive',
      );
    const [key, value] = m[1] ? ['mesh', m[2]!] : ['mtls', m[4]!];
    const mesh = await runningMesh(values.run);
    const existing = mesh.model.namespaces.get(ns);
    if (!existing) {
      throw new SockmeshError('SOCKMESH_E_NOT_FOUND', `namespace '${ns}' is not declared`, {
        hint: `known: ${[...mesh.model.namespaces.keys()].join(', ')}`,
      });
    }
    const labels: Record<string, string> = { ...existing.labels };
    // Defaults are written as an absent label, so the manifest stays as short as it was.
    const [label, set] =
      key === 'mesh' ? [MESH_LABEL, value === 'enabled'] : [MTLS_LABEL, value === 'permissive'];
    if (set) labels[label] = value;
    else delete labels[label];
    const doc = stringify({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: ns, ...(Object.keys(labels).length ? { labels } : {}) },
    });
    const admin = mesh.admin();
    try {
      const code = printApply(stdout, stderr, await admin.apply(doc));
      if (code === EXIT.OK) stdout.write(`namespace ${ns}: ${key} ${value}\n`);
      return code;
    } finally {
      await admin.close();
    }
  },
};
