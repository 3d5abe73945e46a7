import { OutlierDetector, type OutlierEvent, type OutlierOutcome } from '../outlier/detector.js';
import type { MeshState } from '../state/mesh-state.js';

/** Where a cluster reports upstream outcomes and asks which endpoints are ejected. */
export interface OutlierChannel {
  report(cluster: string, endpoint: string, outcome: OutlierOutcome): void;
  isEjected(cluster: string, endpoint: string): boolean;
}

/**
 * One outlier detector per cluster for the whole agent, as Envoy keeps them on
 * its main thread: every worker's outcomes count towards the same thresholds,
 * and an ejection applies to every worker at once.
 */
export class OutlierRegistry implements OutlierChannel {
  private readonly detectors = new Map<string, { detector: OutlierDetector; timer: NodeJS.Timeout }>();

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
        const timer = setInterval(
          () => {
            for (const ev of detector.sweep()) this.onEvent(name, ev);
          },
          Math.max(100, detector.intervalMs),
        );
        timer.unref();
        entry = { detector, timer };
        this.detectors.set(name, entry);
      } else {
        entry.detector.setConfig(settings.outlier);
      }
      entry.detector.setHosts(state.endpoints(name).map((e) => e.key));
    }
    for (const [name, entry] of this.detectors) {
      if (wanted.has(name)) continue;
      clearInterval(entry.timer);
      this.detectors.delete(name);
    }
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
    this.ejectedByCluster.set(cluster, new Set(endpoints));
  }
}

/** This worker's share of a limit: the shares of all workers add up to the limit exactly. */
export function shareOf(limit: number, index: number, count: number): number {
  if (count <= 1) return limit;
  return Math.floor(limit / count) + (index < limit % count ? 1 : 0);
}
