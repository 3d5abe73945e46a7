/** Kernel TCP health per workload pair as `sockmesh status` prints it (one row per node and pair). */
import type { TcpHealthReport } from '../mesh-agent/telemetry/tcp-health.js';
import type { TcpHealthPair } from '../mesh-agent/telemetry/types.js';
import { table } from './table.js';

export const TCP_HEALTH_HEADER = [
  'NODE',
  'LEG',
  'SOURCE',
  'DESTINATION',
  'CONNS',
  'FAILED',
  'RETRANS',
  'RTO',
  'SRTT',
  'JITTER',
];

/** 180 -> 180us, 1530 -> 1.53ms, 0 (no sample) -> - */
export function formatMicros(us: number): string {
  if (us <= 0) return '-';
  return us < 1000 ? `${us}us` : `${(us / 1000).toFixed(us < 10_000 ? 2 : 1)}ms`;
}

const workload = (w: TcpHealthPair['source']) => (w ? `${w.namespace}/${w.workload}` : 'unknown');

/** SRTT and JITTER are means over every sample since the pair was first seen. */
export function tcpHealthTable(byNode: [string, TcpHealthReport | undefined][]): string {
  const rows: string[][] = [];
  const off: string[] = [];
  for (const [node, report] of byNode) {
    if (!report?.measured) {
      off.push(node);
      continue;
    }
    for (const p of report.pairs) {
      rows.push([
        node,
        p.leg,
        workload(p.source),
        workload(p.destination),
        String(p.connections),
        String(p.failures),
        String(p.retransmits),
        String(p.rtos),
        formatMicros(p.srttMeanUs),
        formatMicros(p.rttvarMeanUs),
      ]);
    }
  }
  const note =
    off.length > 0 ? `(not measured on ${off.join(', ')}: agent run with --no-tcp-health or too old)\n` : '';
  return table(TCP_HEALTH_HEADER, rows) + note;
}
