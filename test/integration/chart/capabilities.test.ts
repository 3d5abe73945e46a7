/**
 * The agent DaemonSet's capability set (values.yaml agent.capabilities) is enough for what the agent
 * does with the kernel, and each capability in it is needed: the agent's kernel start-up
 * (fixtures/dataplane-caps.ts) runs as root under a capability bounding set, as a container runtime
 * runs the agent with `drop: [ALL]` and `add:` that list. Everything it makes (a cgroup, a bpffs
 * directory, a netns and the process in it) has a unique name and is removed in after().
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { findCgroup2Mount } from '../../../lab/host.js';
import { CHART, ROOT } from './helm.js';

const notRoot = typeof process.getuid === 'function' && process.getuid() !== 0;
const built = existsSync(join(ROOT, 'bpf-sockops', 'obj', 'sockops.bpf.o'));
const CAPS = (
  parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as { agent: { capabilities: string[] } }
).agent.capabilities;

describe('agent capabilities (charts/sockmesh agent.capabilities)', {
  skip: notRoot
    ? 'needs root (BPF, cgroups, netns)'
    : built
      ? false
      : 'BPF objects not built (npm run build:bpf)',
}, () => {
  const id = randomBytes(3).toString('hex');
  const netns = `sockmesh-capt-${id}`;
  const cgroupRoot = join(findCgroup2Mount(), `sockmesh-capt-${id}`);
  const bpffsRoot = `/sys/fs/bpf/sockmesh-capt-${id}`;
  let pod: ChildProcess | undefined;
  let runs = 0;

  before(async () => {
    mkdirSync(cgroupRoot);
    mkdirSync(bpffsRoot);
    execFileSync('ip', ['netns', 'add', netns]);
    // A pod process of another user inside the netns: the agent opens /proc/<pid>/ns/net.
    pod = spawn(
      'ip',
      ['netns', 'exec', netns, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', '600'],
      {
        stdio: 'ignore',
      },
    );
    const deadline = Date.now() + 10_000;
    while (readFileSync(`/proc/${pod.pid}/comm`, 'utf8').trim() !== 'sleep') {
      if (Date.now() > deadline) throw new Error('the pod process did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  after(() => {
    if (pod?.pid) pod.kill('SIGKILL');
    try {
      execFileSync('ip', ['netns', 'del', netns]);
    } catch {
      // not created
    }
    // Removing a cgroup detaches its programs; removing the pins frees the rest.
    rmSync(bpffsRoot, { recursive: true, force: true });
    for (let i = runs; i >= 0; i--) {
      for (const d of [join(cgroupRoot, `n${i}`, 'pod'), join(cgroupRoot, `n${i}`)]) {
        try {
          rmdirSync(d);
        } catch {
          // not made
        }
      }
    }
    try {
      rmdirSync(cgroupRoot);
    } catch {
      // not made
    }
  });

  /** One node's start-up under `caps`; `reuse` runs on the previous node's cgroup and pins (a restart). */
  function startUnder(
    caps: string[],
    reuse = false,
  ): { ok: boolean; adopted?: boolean; step?: string; code?: string; message?: string } {
    if (!reuse) runs++;
    const node = join(cgroupRoot, `n${runs}`);
    const podCgroup = join(node, 'pod');
    mkdirSync(podCgroup, { recursive: true });
    const bounding = ['-all', ...caps.map((c) => `+${c.toLowerCase()}`)].join(',');
    const res = spawnSyncJson([
      'setpriv',
      '--inh-caps=-all',
      `--bounding-set=${bounding}`,
      process.execPath,
      '--import',
      'tsx',
      join(ROOT, 'test', 'integration', 'chart', 'fixtures', 'dataplane-caps.ts'),
      node,
      join(bpffsRoot, `n${runs}`),
      podCgroup,
      `/proc/${pod!.pid}/ns/net`,
    ]);
    return res;
  }

  it(`loads, enrols and captures with exactly ${CAPS.join(', ')}`, () => {
    const r = startUnder(CAPS);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.adopted, false);
    // A new agent on the same node adopts the pins under the same set.
    const again = startUnder(CAPS, true);
    assert.equal(again.ok, true, JSON.stringify(again));
    assert.equal(again.adopted, true);
  });

  for (const cap of CAPS) {
    it(`fails without ${cap}`, () => {
      const r = startUnder(CAPS.filter((c) => c !== cap));
      assert.equal(r.ok, false, `${cap} is not needed: ${JSON.stringify(r)}`);
    });
  }

  // Without SYS_ADMIN the BPF side needs its three own capabilities, and permissive pods are out of reach.
  const STRICT_ONLY = ['BPF', 'PERFMON', 'NET_ADMIN'];
  it(`${STRICT_ONLY.join(', ')}: the dataplane loads, a permissive pod's netns is refused`, () => {
    const r = startUnder(STRICT_ONLY);
    assert.equal(r.ok, false);
    assert.equal(r.step, 'captureInbound', JSON.stringify(r));
    // Without SYS_PTRACE the netns of another user's process cannot even be opened.
    assert.match(
      r.message ?? '',
      /in netns \/proc\/\d+\/ns\/net: (Permission denied|Operation not permitted)/,
    );
  });
  for (const cap of STRICT_ONLY) {
    it(`without SYS_ADMIN, ${cap} is needed to load the dataplane, and the error names it`, () => {
      const r = startUnder(STRICT_ONLY.filter((c) => c !== cap));
      assert.equal(r.ok, false);
      assert.equal(r.step, 'open', JSON.stringify(r));
      // Named as a capability, not as a kernel feature the kernel has.
      assert.equal(r.code, 'SOCKMESH_E_NO_CAPABILITY', JSON.stringify(r));
      assert.match(r.message ?? '', new RegExp(`running without CAP_${cap}\\b`));
    });
  }
  it('with none of them the error names all three', () => {
    const r = startUnder(['SYS_PTRACE']);
    assert.equal(r.code, 'SOCKMESH_E_NO_CAPABILITY', JSON.stringify(r));
    assert.match(r.message ?? '', /running without CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN /);
  });
});

function spawnSyncJson(argv: string[]): {
  ok: boolean;
  adopted?: boolean;
  step?: string;
  code?: string;
  message?: string;
} {
  let out = '';
  try {
    out = execFileSync(argv[0]!, argv.slice(1), {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    out = String((err as { stdout?: string }).stdout ?? '');
    if (!out.trim()) throw err;
  }
  const line = out.trim().split('\n').pop()!;
  return JSON.parse(line) as {
    ok: boolean;
    adopted?: boolean;
    step?: string;
    code?: string;
    message?: string;
  };
}
