/**
 * The values table of docs/install.md, generated from charts/sockmesh/values.yaml (each `# --`
 * comment describes the key below it). `node --import tsx test/integration/chart/values-table.ts --write`
 * rewrites the table between the markers; values-table.test.ts fails when the two drift apart.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { CHART, ROOT } from './helm.js';

export const INSTALL_MD = join(ROOT, 'docs', 'install.md');
export const START = '<!-- values:start (generated from charts/sockmesh/values.yaml) -->';
export const END = '<!-- values:end -->';

export interface ValueRow {
  key: string;
  default: unknown;
  description: string;
}

export function valueRows(text = readFileSync(join(CHART, 'values.yaml'), 'utf8')): ValueRow[] {
  const values = parse(text) as Record<string, unknown>;
  const rows: ValueRow[] = [];
  const stack: { indent: number; key: string }[] = [];
  let pending: string[] | undefined;
  for (const line of text.split('\n')) {
    const start = /^\s*# -- (.*)$/.exec(line);
    if (start) {
      pending = [start[1]!];
      continue;
    }
    const more = /^\s*# (.*)$/.exec(line);
    if (more && pending) {
      pending.push(more[1]!);
      continue;
    }
    const key = /^(\s*)([A-Za-z0-9_]+):/.exec(line);
    if (!key) continue;
    const indent = key[1]!.length;
    while (stack.length && stack[stack.length - 1]!.indent >= indent) stack.pop();
    const path = [...stack.map((s) => s.key), key[2]!];
    if (pending) {
      let v: unknown = values;
      for (const p of path) v = (v as Record<string, unknown>)[p];
      rows.push({ key: path.join('.'), default: v, description: pending.join(' ') });
      pending = undefined;
    }
    stack.push({ indent, key: key[2]! });
  }
  return rows;
}

function show(v: unknown): string {
  if (typeof v === 'string') return v === '' ? '`""`' : `\`${v}\``;
  return `\`${JSON.stringify(v)}\``;
}

export function valuesTable(rows = valueRows()): string {
  const lines = ['| value | default | meaning |', '| --- | --- | --- |'];
  for (const r of rows)
    lines.push(`| \`${r.key}\` | ${show(r.default)} | ${r.description.replace(/\|/g, '\\|')} |`);
  return lines.join('\n');
}

/** The table as docs/install.md has it now, between the markers. */
export function documentedTable(md = readFileSync(INSTALL_MD, 'utf8')): string {
  const a = md.indexOf(START);
  const b = md.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${INSTALL_MD} has no ${START} ... ${END} block`);
  return md.slice(a + START.length, b).trim();
}

if (process.argv.includes('--write')) {
  const md = readFileSync(INSTALL_MD, 'utf8');
  const a = md.indexOf(START);
  const b = md.indexOf(END);
  writeFileSync(INSTALL_MD, `${md.slice(0, a + START.length)}\n${valuesTable()}\n${md.slice(b)}`);
}
