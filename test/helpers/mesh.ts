import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalMesh, type LocalMeshOptions } from '../../lab/mesh.js';
import { FIXTURES } from './lab.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const SHOP = join(REPO, 'examples', 'shop');

/** examples/shop plus the given overlay directories, as one manifests directory. */
export function shopWith(...overlays: string[]): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'sockmesh-e2e-'));
  cpSync(SHOP, dir, { recursive: true, filter: (src) => !src.includes('/app') });
  for (const o of overlays) cpSync(o, dir, { recursive: true });
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function startShop(
  overlays: string[] = [],
  opts: Partial<LocalMeshOptions> = {},
): Promise<LocalMesh> {
  const m = shopWith(...overlays);
  try {
    return await LocalMesh.start({ manifestsDir: m.dir, ...opts });
  } finally {
    m.cleanup();
  }
}

export interface LoadSummary {
  total: number;
  byStatus: Record<string, number>;
  byVersion: Record<string, number>;
  byCaller: Record<string, number>;
  byFlags: Record<string, number>;
  errors: Record<string, number>;
  p50: number;
  p99: number;
}

/** Closed-loop HTTP load from inside a pod (so the kernel captures it like any app traffic). */
export async function load(
  mesh: LocalMesh,
  from: string,
  url: string,
  total: number,
  concurrency: number,
  headers: Record<string, string> = {},
): Promise<LoadSummary> {
  const res = await mesh.exec(
    from,
    [
      process.execPath,
      join(FIXTURES, 'http-load.mjs'),
      url,
      String(total),
      String(concurrency),
      JSON.stringify(headers),
    ],
    120_000,
  );
  if (res.code !== 0) throw new Error(`load from ${from} failed: ${res.stderr}`);
  return JSON.parse(res.stdout) as LoadSummary;
}

/** One request from inside a pod; status 0 means the connection failed. */
export async function call(
  mesh: LocalMesh,
  from: string,
  url: string,
  init: { method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: string; flags: string | null; error?: string }> {
  const script = `fetch(${JSON.stringify(url)}, ${JSON.stringify(init)}).then(async r=>process.stdout.write(JSON.stringify({status:r.status,flags:r.headers.get('x-sockmesh-flags'),body:await r.text()}))).catch(e=>process.stdout.write(JSON.stringify({status:0,body:'',flags:null,error:String(e.cause?.code??e.cause??e)})))`;
  const res = await mesh.exec(from, [process.execPath, '-e', script], 20_000);
  return JSON.parse(res.stdout) as { status: number; body: string; flags: string | null; error?: string };
}

/** Retries `check` until it passes or the deadline; returns the last value. */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 8000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  // A poll that throws (an agent busy restarting a worker, a truncated answer) counts as "not yet".
  const attempt = async (): Promise<{ value: T } | { error: unknown }> => {
    try {
      return { value: await fn() };
    } catch (error) {
      return { error };
    }
  };
  let last = await attempt();
  while (!('value' in last) || !ok(last.value)) {
    if (Date.now() > deadline) {
      if ('error' in last) throw last.error;
      throw new Error(`${what}: not reached in ${timeoutMs} ms; last: ${JSON.stringify(last.value)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
    last = await attempt();
  }
  return last.value;
}

/** The value of one Prometheus sample (summed over series matching every given label). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
