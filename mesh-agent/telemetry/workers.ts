/**
 * Metrics from proxy workers (threads or processes) served as one set on the
 * primary's port 15020: one snapshot source per worker, pulled at scrape time.
 * When a worker goes away its last counters are kept, so totals never go
 * backwards when a worker crashes.
 */
import { cumulativeOnly, type MetricsSnapshot, mergeSnapshots } from './snapshot.js';

export type SnapshotSource = () => Promise<MetricsSnapshot>;

/**
 * The primary's view of its workers: one snapshot source per worker, pulled
 * at scrape time; a source that fails or is slow contributes its last good
 * snapshot.
 */
export class WorkerMetrics {
  private readonly sources = new Map<string, { fetch: SnapshotSource; last: MetricsSnapshot | null }>();
  private retired: MetricsSnapshot = { metrics: [] };

  constructor(private readonly timeoutMs = 1000) {}

  /** True once any worker was added: from then on scrapes merge. */
  get active(): boolean {
    return this.sources.size > 0 || this.retired.metrics.length > 0;
  }

  /** Adds (or replaces: the old one is retired first) the source for worker `id`. */
  add(id: string, fetch: SnapshotSource): void {
    this.remove(id);
    this.sources.set(id, { fetch, last: null });
  }

  /** The worker is gone: its last counters stay in the totals, its gauges go. */
  remove(id: string): void {
    const s = this.sources.get(id);
    if (!s) return;
    this.sources.delete(id);
    if (s.last) this.retired = mergeSnapshots([this.retired, cumulativeOnly(s.last)]);
  }

  /** Current snapshots of every worker (pulled now) plus the retired totals. */
  async collect(): Promise<MetricsSnapshot[]> {
    await Promise.all(
      [...this.sources.values()].map(async (s) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          const snap = await Promise.race([
            s.fetch(),
            new Promise<null>((resolve) => {
              timer = setTimeout(() => resolve(null), this.timeoutMs);
            }),
          ]);
          if (snap) s.last = snap;
        } catch {
          // keep the last good snapshot
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    const out: MetricsSnapshot[] = [this.retired];
    for (const s of this.sources.values()) if (s.last) out.push(s.last);
    return out;
  }
}
