/**
 * Whole-process CPU profile of an agent with Linux perf, for `bench/profile.ts --perf`.
 *
 * The inspector's sampler (the default of profile.ts) sees the JS thread only and counts the
 * native work done inside libuv callbacks (TLS, nghttp2, llhttp, socket syscalls) as idle, so it
 * shows ~4 % busy for a process that uses ~10 % of a core. perf samples the process on CPU,
 * kernel included; with the agent started under `--perf-basic-prof` it also names JS functions.
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';

export interface PerfProfile {
  samples: number;
  /** Self time by component (what the leaf frame belongs to). */
  byComponent: { name: string; pct: number }[];
  /** Hottest leaf symbols. */
  bySymbol: { name: string; pct: number }[];
  /** Share of samples with a JS frame of the area on the stack (under it: the native work it caused, as far as perf can unwind). */
  byJsArea: { name: string; pct: number }[];
}

/** What the leaf frame (the code actually on CPU) belongs to: self time by component. */
const COMPONENTS: [string, (sym: string, dso: string) => boolean][] = [
  [
    'kernel: scheduler (wake-ups, context switches)',
    (f, d) =>
      d === '[kernel.kallsyms]' &&
      /(finish_task_switch|_raw_spin_unlock_irq|__schedule|schedule|try_to_wake_up)/.test(f),
  ],
  ['kernel: the rest (syscalls, TCP/IP, veth, bridge, BPF)', (_f, d) => d === '[kernel.kallsyms]'],
  ['JS (JIT code: node core, undici, sockmesh)', (_f, d) => /perf-\d+\.map$/.test(d)],
  [
    'V8: garbage collection',
    (f) => /v8::internal::(Scavenger|MarkCompact|ConcurrentMarking|Sweeper|Heap|.*Marking)/.test(f),
  ],
  ['V8: builtins, inline caches, runtime', (f) => /^(Builtins_|v8::)/.test(f)],
  ['nghttp2 (HTTP/2 framing)', (f) => /^nghttp2_/.test(f)],
  [
    'OpenSSL (TLS records, AES-GCM)',
    (f) => /^(ssl|tls|aesni_|EVP_|ossl_|SSL_|BIO_|CRYPTO_|gcm_|OPENSSL_)/i.test(f),
  ],
  ['llhttp (node:http parser)', (f) => /^llhttp/.test(f)],
  ['libuv (event loop)', (f) => /^uv_/.test(f)],
  ['node C++ (stream glue, wraps, callbacks)', (f) => /^(node::|non-virtual thunk to node::)/.test(f)],
  ['libc (malloc, syscall wrappers, memcpy)', (_f, d) => /libc\.so/.test(d)],
];

/** JS areas, matched against the JIT frames of a stack (which perf unwinds reliably through frame pointers). */
const JS_AREAS: [string, RegExp][] = [
  ['sockmesh agent code (mesh-agent/, lib/)', /\/(mesh-agent|lib)\/[^ ]+\.(js|ts)/],
  ['undici', /node_modules\/undici\//],
  ['node:http server and incoming', /node:_http_(server|incoming|common)/],
  ['node:http outgoing (response writing)', /node:_http_outgoing/],
  ['node:http2 (JS side)', /node:internal\/http2\//],
  ['node streams', /node:internal\/streams\//],
];

export async function perfRecord(pid: number, seconds: number, out: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(
      'perf',
      ['record', '-F', '999', '-g', '-p', String(pid), '-o', out, '--', 'sleep', String(seconds)],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    p.stderr?.on('data', (b: Buffer) => {
      err += b.toString();
    });
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`perf record failed (${code}): ${err.slice(-500)}`)),
    );
  });
}

export function perfAnalyze(data: string, top = 25): PerfProfile {
  const res = spawnSync('perf', ['script', '-i', data, '-F', 'ip,sym,dso'], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  if (res.status !== 0) throw new Error(`perf script failed: ${res.stderr.slice(-500)}`);
  const stacks = res.stdout.split('\n\n').filter((s) => s.trim());
  const components = new Map<string, number>();
  const symbols = new Map<string, number>();
  const areas = new Map<string, number>();
  const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const st of stacks) {
    const frames = st
      .split('\n')
      .map((l) => l.trim().replace(/^[0-9a-f]+ /, ''))
      .filter(Boolean);
    const leaf = frames[0] ?? '';
    const dso = /\(([^)]*)\)$/.exec(leaf)?.[1] ?? '';
    const sym = leaf.replace(/\+0x[0-9a-f]+/, '').replace(/ \([^)]*\)$/, '');
    add(components, COMPONENTS.find(([, test]) => test(sym, dso))?.[0] ?? 'other');
    add(symbols, sym);
    const js = frames.filter((f) => /^JS:/.test(f));
    for (const [name, re] of JS_AREAS) if (js.some((f) => re.test(f))) add(areas, name);
  }
  const n = stacks.length || 1;
  const list = (m: Map<string, number>, k: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([name, c]) => ({ name, pct: (100 * c) / n }));
  return {
    samples: stacks.length,
    byComponent: list(components, 20),
    bySymbol: list(symbols, top),
    byJsArea: JS_AREAS.map(([name]) => ({ name, pct: (100 * (areas.get(name) ?? 0)) / n })),
  };
}

/** `--perf-basic-prof` leaves /tmp/perf-<pid>.map behind (it grows with the JIT's output). */
export function removePerfMaps(pids: readonly number[]): void {
  for (const pid of pids) rmSync(`/tmp/perf-${pid}.map`, { force: true });
}

export function perfMarkdown(p: PerfProfile): string {
  const rows = (xs: { name: string; pct: number }[]) =>
    xs.map((x) => `| ${x.pct.toFixed(1)} | ${x.name.replace(/\|/g, '\\|')} |`).join('\n');
  return `Sampled with Linux perf (999 Hz, call graphs), ${p.samples} samples of the process on CPU (kernel included).

## Self time by component (what the code on CPU belongs to)

| % | component |
| ---: | --- |
${rows(p.byComponent)}

## JS on the stack (share of samples with a JS frame of the area; lower bounds: perf cannot always unwind native frames back into JS)

| % | area |
| ---: | --- |
${rows(p.byJsArea)}

## Hottest leaf symbols

| % | symbol |
| ---: | --- |
${rows(p.bySymbol)}
`;
}
