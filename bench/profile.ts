/**
 * CPU profile of one agent under the scenario-2 load: starts the bench mesh, opens the agent's
 * inspector (SIGUSR1, listens on 127.0.0.1:9229 inside the node's namespace), samples it while
 * 1000 rps of 1 KiB HTTP go through the chosen path, and prints the hottest functions.
 *
 *   node --import tsx bench/profile.ts [--path l4|l7] [--node node1|node2] [--seconds 10] [--agent-workers N] [--src] [--perf]
 *
 * --perf samples the whole process with Linux perf (kernel and native code included, JS named
 * through --perf-basic-prof) instead of the inspector, which sees the JS thread only.
 *
 * Writes bench/results/profile-<path>-<node>[-perf].md and leaves the raw .cpuprofile in the OS temp dir
 * (open it in Chrome DevTools or speedscope for a flame graph).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LocalMesh } from '../lab/mesh.js';
import {
  agentGroups,
  agentsForBench,
  CLIENT,
  execIn,
  MANIFESTS,
  NODE,
  startServers,
  VIP,
  WORKLOADS,
  waitServers,
} from './lib/bed.js';
import { perfAnalyze, perfMarkdown, perfRecord, removePerfMaps } from './lib/perf.js';
import { cpuSeconds, cpuSplit } from './lib/proc.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..');

const { values } = parseArgs({
  options: {
    path: { type: 'string', default: 'l4' },
    node: { type: 'string', default: 'node2' },
    seconds: { type: 'string', default: '10' },
    rate: { type: 'string', default: '1000' },
    'agent-workers': { type: 'string' },
    src: { type: 'boolean', default: false },
    perf: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const vip = values.path === 'l7' ? VIP.l7 : VIP.l4;

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    hitCount?: number;
    children?: number[];
  }[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

interface Hot {
  fn: string;
  where: string;
  selfPct: number;
}

/** Self time per function (name + file:line), as a share of all samples. */
function hotSpots(
  p: CpuProfile,
  top: number,
): { byFunction: Hot[]; byFile: Hot[]; inclusive: Hot[]; idlePct: number } {
  const hits = new Map<number, number>();
  for (const s of p.samples ?? []) hits.set(s, (hits.get(s) ?? 0) + 1);
  const total = p.samples?.length ?? 0;
  const fns = new Map<string, Hot>();
  const files = new Map<string, Hot>();
  let idle = 0;
  for (const n of p.nodes) {
    const h = hits.get(n.id) ?? 0;
    if (h === 0) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') idle += h;
    const file = url ? relative(REPO, url.replace(/^file:\/\//, '')) : '';
    const where = file ? `${file}:${lineNumber + 1}` : '';
    const key = `${functionName}@${where}`;
    const f = fns.get(key) ?? { fn: functionName || '(anonymous)', where, selfPct: 0 };
    f.selfPct += (100 * h) / total;
    fns.set(key, f);
    const fk = file || functionName;
    const g = files.get(fk) ?? { fn: '', where: fk, selfPct: 0 };
    g.selfPct += (100 * h) / total;
    files.set(fk, g);
  }
  // Inclusive time of the project's own functions: each sample counts once for every distinct
  // project frame on its stack, which shows which code path the native time is spent under.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const inclusive = new Map<string, Hot>();
  for (const [id, h] of hits) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur);
      if (!n) break;
      const url = n.callFrame.url.replace(/^file:\/\//, '');
      if (!url.startsWith(REPO) || url.includes('/node_modules/')) continue;
      const where = relative(REPO, url);
      const key = `${n.callFrame.functionName}@${where}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const f = inclusive.get(key) ?? { fn: n.callFrame.functionName || '(anonymous)', where, selfPct: 0 };
      f.selfPct += (100 * h) / total;
      inclusive.set(key, f);
    }
  }
  const sort = (m: Map<string, Hot>) => [...m.values()].sort((a, b) => b.selfPct - a.selfPct).slice(0, top);
  return {
    byFunction: sort(fns),
    byFile: sort(files),
    inclusive: sort(inclusive),
    idlePct: total ? (100 * idle) / total : 0,
  };
}

async function main(): Promise<void> {
  agentsForBench({ src: values.src }, (s) => process.stderr.write(`[profile] ${s}\n`));
  const mesh = await LocalMesh.start({
    manifestsDir: MANIFESTS,
    workloads: false,
    ...(values['agent-workers'] ? { agentWorkers: Number(values['agent-workers']) } : {}),
    // perf names JS frames from the map file V8 writes under this flag.
    ...(values.perf ? { agentNodeFlags: ['--perf-basic-prof'] } : {}),
  });
  try {
    startServers(mesh);
    const broken = await waitServers(mesh);
    if (broken.length > 0) process.stderr.write(`warning: not answering: ${broken.join('; ')}\n`);
    const group = agentGroups(mesh).find((g) => g.name === `agent ${values.node}`);
    const pids = group?.pids() ?? [];
    const ppid = (p: number) => Number(readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
    const workers = pids.filter((p) => pids.includes(ppid(p)));
    // The load starts first; after 3 s the busiest worker (the kernel does not spread one pooled
    // tunnel connection over workers) or the agent itself is the one profiled.
    const loading = execIn(
      mesh,
      CLIENT.meshed,
      [
        NODE,
        join(WORKLOADS, 'open-loop.mjs'),
        `http://${vip}:8080/`,
        values.rate,
        String(seconds + 2),
        '16',
        '2',
      ],
      seconds * 1000 + 120_000,
    );
    const candidates = workers.length > 0 ? workers : pids;
    const before = new Map(candidates.map((p) => [p, cpuSeconds(p)]));
    await new Promise((r) => setTimeout(r, 3000));
    const busiest = candidates
      .map((p) => ({ p, used: cpuSeconds(p) - (before.get(p) ?? 0) }))
      .sort((a, b) => b.used - a.used);
    const pid = busiest[0]?.p;
    if (pid === undefined) throw new Error(`no agent process on ${values.node}`);
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    const node = mesh.bed.node(values.node);
    const split0 = cpuSplit(pid);
    const header = (
      how: string,
    ) => `# Agent CPU profile: ${values.path.toUpperCase()} path, ${values.node}, ${values.rate} rps of 1 KiB HTTP for ${seconds} s

Profiled process: \`${cmdline}\` (pid ${pid}${workers.length ? `, the busiest of ${workers.length} proxy workers over 3 s of load: ${busiest.map((b) => `${b.p}: ${b.used.toFixed(2)} CPU-s`).join(', ')}` : ''})

${how}
`;
    let md: string;
    if (values.perf) {
      const data = join(mesh.paths.runDir, 'agent.perf.data');
      try {
        await perfRecord(pid, seconds, data);
      } finally {
        for (const g of agentGroups(mesh)) removePerfMapsLater.push(...g.pids());
      }
      const split1 = cpuSplit(pid);
      const load = await loading;
      const cpu = split1.user - split0.user + (split1.system - split0.system);
      md = `${header(`Load: ${load.trim()}

CPU of the profiled process while sampled: ${(split1.user - split0.user).toFixed(2)} s user + ${(split1.system - split0.system).toFixed(2)} s system over ${seconds} s (${((100 * cpu) / seconds).toFixed(1)} % of a core).`)}
${perfMarkdown(perfAnalyze(data))}`;
    } else {
      process.kill(pid, 'SIGUSR1');
      await new Promise((r) => setTimeout(r, 500));
      const out = join(mesh.paths.runDir, 'agent.cpuprofile');
      const prof = await mesh.bed.exec(
        node,
        [NODE, join(WORKLOADS, 'cdp-profile.mjs'), String(seconds), out],
        {
          timeoutMs: seconds * 1000 + 30_000,
        },
      );
      const split1 = cpuSplit(pid);
      const user = split1.user - split0.user;
      const system = split1.system - split0.system;
      const load = await loading;
      if (prof.code !== 0) throw new Error(`profiling failed: ${prof.stderr}`);
      const profile = JSON.parse(readFileSync(out, 'utf8')) as CpuProfile;
      const keep = join(tmpdir(), `sockmesh-agent-${values.path}-${values.node}.cpuprofile`);
      copyFileSync(out, keep);
      const hot = hotSpots(profile, 25);
      const rows = (xs: Hot[], withFn: boolean) =>
        xs
          .map(
            (h) => `| ${h.selfPct.toFixed(1)} | ${withFn ? `\`${h.fn}\` | ` : ''}${h.where || '(native)'} |`,
          )
          .join('\n');
      md = `${header(`Load: ${load.trim()}

CPU of the profiled process while sampled: ${user.toFixed(2)} s user + ${system.toFixed(2)} s system
over ${seconds} s (${((100 * (user + system)) / seconds).toFixed(1)} % of a core). The sampler sees the JS thread only, and
counts native work done in I/O callbacks (TLS, nghttp2, llhttp, socket syscalls) as "(idle)": use --perf for the whole process.

Sampled through the inspector (1 ms interval); ${hot.idlePct.toFixed(1)} % of samples idle.
Raw profile: ${keep}`)}
## Self time by function (top 25)

| self % | function | where |
| ---: | --- | --- |
${rows(hot.byFunction, true)}

## Inclusive time of the agent's own functions (top 25; % of all samples, idle included)

| total % | function | where |
| ---: | --- | --- |
${rows(hot.inclusive, true)}

## Self time by file (top 25)

| self % | file |
| ---: | --- |
${rows(hot.byFile, false)}
`;
    }
    mkdirSync(join(HERE, 'results'), { recursive: true });
    const name = `profile-${values.path}-${values.node}${values.perf ? '-perf' : ''}.md`;
    writeFileSync(join(HERE, 'results', name), md);
    process.stdout.write(`${md}\nwritten to bench/results/${name}\n`);
  } finally {
    await mesh.stop();
    removePerfMaps(removePerfMapsLater);
  }
}

const removePerfMapsLater: number[] = [];

await main();
