/** Human durations for the CLI: `90s`, `30m`, `1h`, `2h30m`, `7d`, `500ms`. */
import { SockmeshError } from '../lib/errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (text.length === 0 || matched !== text.length) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `invalid duration '${text}'`, {
      hint: 'use a number with a unit: 90s, 30m, 1h, 2h30m, 7d',
    });
  }
  return Math.round(total);
}

export function formatDuration(ms: number): string {
  const neg = ms < 0;
  let rest = Math.abs(Math.round(ms / 1000));
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
  ] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest}s`);
  return `${neg ? '-' : ''}${parts.slice(0, 2).join('')}`;
}
