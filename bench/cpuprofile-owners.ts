/**
 * Who owns the JS thread's CPU in a V8 .cpuprofile (`node --cpu-prof`): each busy sample goes to
 * the first frame from the leaf up that belongs to a known area (undici, node:http, node:http2,
 * the agent's files, telemetry), else to node's streams/net/events below the app; a native leaf
 * (a syscall such as writev, llhttp) is marked as such. The first `--skip-ms` of the profile
 * (start-up, module loading) are left out.
 *
 *   node --import tsx bench/tunnel-micro.ts --path l7 --seconds 20 --proxy-args="--cpu-prof --cpu-prof-dir=/tmp/prof"
 *   node --import tsx bench/cpuprofile-owners.ts /tmp/prof/CPU.*.cpuprofile [--skip-ms 3000]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface Profile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

function area(cf: CallFrame): string | undefined {
  const u = cf.url;
  if (cf.functionName === '(garbage collector)') return 'GC';
  if (cf.functionName === '(program)') return 'native, no JS on the stack (libuv, nghttp2, OpenSSL, V8)';
  if (u.includes('undici')) return 'undici';
  if (/_http_(server|incoming|outgoing|common)/.test(u)) return 'node:http';
  if (u.includes('internal/http2')) return 'node:http2';
  if (u.includes('mesh-agent/telemetry') || u.includes('opentelemetry')) return 'telemetry (spans, metrics)';
  if (u.includes('mesh-agent/')) return `agent ${u.split('mesh-agent/')[1]!.replace(/\.[jt]s$/, '')}`;
  if (u.includes('bench/')) return 'bench harness (stubbed route)';
  return undefined;
}

export function owners(p: Profile, skipMs: number): { busy: number; shares: [string, number][] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const counts = new Map<string, number>();
  let t = 0;
  let busy = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    if (t < skipMs * 1000) continue;
    let id: number | undefined = p.samples[i]!;
    const leaf = byId.get(id)!.callFrame;
    if (leaf.functionName === '(idle)') continue;
    busy++;
    let owner: string | undefined;
    while (id !== undefined && owner === undefined) {
      owner = area(byId.get(id)!.callFrame);
      id = parent.get(id);
    }
    owner ??= 'node streams, net, events, timers (below the app)';
    if (!leaf.url && !leaf.functionName.startsWith('(')) owner += ` [native: ${leaf.functionName}]`;
    counts.set(owner, (counts.get(owner) ?? 0) + 1);
  }
  const shares = [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => [k, +((100 * v) / Math.max(1, busy)).toFixed(1)] as [string, number]);
  return { busy, shares };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { 'skip-ms': { type: 'string', default: '3000' } },
  });
  for (const file of positionals) {
    const { busy, shares } = owners(
      JSON.parse(readFileSync(file, 'utf8')) as Profile,
      Number(values['skip-ms']),
    );
    process.stdout.write(`${file}: ${busy} busy samples\n\n| % | owner |\n| ---: | --- |\n`);
    for (const [k, v] of shares) if (v >= 0.3) process.stdout.write(`| ${v} | ${k} |\n`);
    process.stdout.write('\n');
  }
}
