import { OutlierDetector, type OutlierEvent, type OutlierOutcome } from '../outlier/detector.js';
import type { MeshState } from '../state/mesh-state.js';

/** Where a cluster reports upstream outcomes and asks which endpoints are ejected. */
export interface OutlierChannel {
  report(cluster: string, endpoint: string, outcome: OutlierOutcome): void;
  isEjected(cluster: string, endpoint: string): boolean;
  /** The cluster left this process's config (a worker drops what it was told about it). */
  forget?(cluster: string): void;
  /** Keeps only what concerns the clusters of the current config (bounded by it). */
  retain?(clusters: ReadonlySet<string>): void;
}

/**
 * One outlier detector per cluster for the whole agent, as Envoy keeps them on
 * its main thread: every worker's outcomes count towards the same thresholds,
 * and an ejection applies to every worker at once.
 */
export class OutlierRegistry implements OutlierChannel {
  private readonly detectors = new Map<
    string,
    { detector: OutlierDetector; timer: NodeJS.Timeout; everyMs: number }
  >();

  constructor(private readonly onEvent: (cluster: string, ev: OutlierEvent) => void) {}

  /** Follows the config: clusters with outlier detection get (or keep) a detector, with the current endpoints. */
  update(state: MeshState): void {
    const wanted = new Set<string>();
    for (const name of state.clusterNames()) {
      const settings = state.cluster(name);
      if (!settings?.outlier) continue;
      wanted.add(name);
      let entry = this.detectors.get(name);
      if (!entry) {
        const detector = new OutlierDetector(settings.outlier, () => performance.now());
        entry = { detector, timer: this.sweepEvery(name, detector), everyMs: sweepMs(detector) };
        this.detectors.set(name, entry);
      } else {
        entry.detector.setConfig(settings.outlier);
        // A new interval takes effect now, not after the old one (10 s -> 100 ms must not wait 10 s).
        if (sweepMs(entry.detector) !== entry.everyMs) {
          clearInterval(entry.timer);
          entry.timer = this.sweepEvery(name, entry.detector);
          entry.everyMs = sweepMs(entry.detector);
        }
      }
      entry.detector.setHosts(state.endpoints(name).map((e) => e.key));
    }
    for (const [name, entry] of this.detectors) {
      if (wanted.has(name)) continue;
      clearInterval(entry.timer);
      this.detectors.delete(name);
    }
  }

  private sweepEvery(name: string, detector: OutlierDetector): NodeJS.Timeout {
    const timer = setInterval(() => {
      for (const ev of detector.sweep()) this.onEvent(name, ev);
    }, sweepMs(detector));
    timer.unref();
    return timer;
  }

  report(cluster: string, endpoint: string, outcome: OutlierOutcome): void {
    const ev = this.detectors.get(cluster)?.detector.report(endpoint, outcome);
    if (ev) this.onEvent(cluster, ev);
  }

  isEjected(cluster: string, endpoint: string): boolean {
    return this.detectors.get(cluster)?.detector.isEjected(endpoint) ?? false;
  }

  /** The endpoints of a cluster that are ejected now (what workers are told after each event). */
  ejected(cluster: string, endpoints: readonly string[]): string[] {
    return endpoints.filter((e) => this.isEjected(cluster, e));
  }

  close(): void {
    for (const e of this.detectors.values()) clearInterval(e.timer);
    this.detectors.clear();
  }
}

/** A worker's side: outcomes go to the primary, ejections come back from it. */
export class RemoteOutliers implements OutlierChannel {
  private readonly ejectedByCluster = new Map<string, ReadonlySet<string>>();

  constructor(private readonly send: (cluster: string, endpoint: string, outcome: OutlierOutcome) => void) {}

  report(cluster: string, endpoint: string, outcome: OutlierOutcome): void {
    this.send(cluster, endpoint, outcome);
  }

  isEjected(cluster: string, endpoint: string): boolean {
    return this.ejectedByCluster.get(cluster)?.has(endpoint) ?? false;
  }

  setEjected(cluster: string, endpoints: readonly string[]): void {
    if (endpoints.length === 0) this.ejectedByCluster.delete(cluster);
    else this.ejectedByCluster.set(cluster, new Set(endpoints));
  }

  forget(cluster: string): void {
    this.ejectedByCluster.delete(cluster);
  }

  /** Keeps only the clusters of the current config. */
  retain(clusters: ReadonlySet<string>): void {
    for (const c of this.ejectedByCluster.keys()) if (!clusters.has(c)) this.ejectedByCluster.delete(c);
  }

  /** Clusters with ejected endpoints this worker knows of. */
  get size(): number {
    return this.ejectedByCluster.size;
  }
}

function sweepMs(d: OutlierDetector): number {
  return Math.max(100, d.intervalMs);
}

/** This worker's share of a limit: the shares of all workers add up to the limit exactly. */
export function shareOf(limit: number, index: number, count: number): number {
  if (count <= 1) return limit;
  return Math.floor(limit / count) + (index < limit % count ? 1 : 0);
}
