/**
 * The JSON view of kernel TCP health served on /stats/tcp (and inside
 * /stats/config): what `sockmesh status`, `sockmesh explain` and the dashboard read.
 */
import type { TcpHealthPair } from './types.js';

/** Which hops are measured, in the order tools show them. */
export const TCP_HEALTH_LEGS = ['tunnel', 'pod_proxy', 'proxy_pod'] as const;

export interface TcpHealthReport {
  /** False when the agent has no kernel dataplane or TCP health is switched off. */
  measured: boolean;
  pairs: TcpHealthPair[];
}

const name = (w: TcpHealthPair['source']) => (w ? `${w.namespace}/${w.workload}` : '');

/** Reads the source once; pairs sorted by leg, source, destination so the output is stable. */
export function tcpHealthReport(source: (() => readonly TcpHealthPair[]) | null): TcpHealthReport {
  if (!source) return { measured: false, pairs: [] };
  const legOrder = (leg: string) => {
    const i = (TCP_HEALTH_LEGS as readonly string[]).indexOf(leg);
    return i < 0 ? TCP_HEALTH_LEGS.length : i;
  };
  const pairs = [...source()].sort(
    (a, b) =>
      legOrder(a.leg) - legOrder(b.leg) ||
      name(a.source).localeCompare(name(b.source)) ||
      name(a.destination).localeCompare(name(b.destination)),
  );
  return { measured: true, pairs };
}
