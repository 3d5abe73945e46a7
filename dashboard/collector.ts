/**
 * Polls the agents' admin ports and the control plane's admin endpoint every
 * interval and writes one DashboardSnapshot per line (NDJSON) to `out`. It
 * runs where the agents are reachable (in the lab: inside a node's netns,
 * whose underlay reaches every node; the control plane's unix socket is
 * reachable from any netns).
 */
import { AdminClient } from '../xds/client/admin.js';
import { MeshView, type Scrape } from './model.js';

export interface CollectorConfig {
  /** Each node's agent admin base URL, e.g. `http://10.10.0.1:15020`. */
  agents: Array<{ node: string; url: string }>;
  /** The control plane's admin address (`unix:/path` or `host:port`). */
  controlPlane: string;
  intervalMs: number;
  /** Window for rates, success and p99. */
  windowMs: number;
}

async function text(url: string, timeoutMs: number): Promise<string | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return r.ok ? await r.text() : null;
  } catch {
    return null;
  }
}

/** One round: every agent and the control plane, in parallel; what does not answer is null. */
export async function scrapeOnce(cfg: CollectorConfig, admin: AdminClient): Promise<Scrape> {
  const timeout = Math.max(500, cfg.intervalMs);
  const [agents, canary, config] = await Promise.all([
    Promise.all(
      cfg.agents.map(async (a) => {
        const [metrics, status] = await Promise.all([
          text(`${a.url}/metrics`, timeout),
          text(`${a.url}/stats/config`, timeout),
        ]);
        let parsed: Scrape['agents'][number]['status'] = null;
        try {
          parsed = status ? (JSON.parse(status) as Scrape['agents'][number]['status']) : null;
        } catch {}
        return { node: a.node, metrics, status: parsed };
      }),
    ),
    admin.canary().catch(() => null),
    admin.config(cfg.agents[0]?.node ?? '').catch(() => null),
  ]);
  return {
    at: Date.now(),
    agents,
    guards: canary?.guards ?? null,
    routes: config?.routes ?? null,
    version: config?.version ?? canary?.version ?? null,
  };
}

/** Runs until `signal` aborts. */
export async function collect(
  cfg: CollectorConfig,
  out: NodeJS.WritableStream,
  signal: AbortSignal,
): Promise<void> {
  const admin = new AdminClient(cfg.controlPlane);
  const view = new MeshView(cfg.windowMs);
  try {
    while (!signal.aborted) {
      const started = Date.now();
      const snap = view.add(await scrapeOnce(cfg, admin));
      out.write(`${JSON.stringify(snap)}\n`);
      const wait = Math.max(0, cfg.intervalMs - (Date.now() - started));
      await new Promise<void>((r) => {
        const t = setTimeout(r, wait);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          r();
        });
      });
    }
  } finally {
    await admin.close();
  }
}
