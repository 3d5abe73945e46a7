import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CHART } from './helm.js';
import { documentedTable, valueRows, valuesTable } from './values-table.js';

/** Every leaf of values.yaml, as dotted paths (maps described as a whole stop the walk). */
function leaves(v: unknown, prefix: string, described: Set<string>, out: string[]): string[] {
  if (described.has(prefix)) return [...out, prefix];
  if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0) {
    for (const [k, x] of Object.entries(v)) out = leaves(x, prefix ? `${prefix}.${k}` : k, described, out);
    return out;
  }
  return [...out, prefix];
}

describe('docs/install.md values table', () => {
  it('is the one generated from values.yaml (regenerate: node --import tsx test/integration/chart/values-table.ts --write)', () => {
    assert.equal(documentedTable(), valuesTable());
  });

  it('describes every value of values.yaml and of the schema', async () => {
    const { parse } = await import('yaml');
    const values = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8'));
    const described = new Set(valueRows().map((r) => r.key));
    const all = leaves(values, '', described, []);
    assert.deepEqual(
      all.filter((k) => !described.has(k)),
      [],
      'values without a `# --` description',
    );
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
    const inSchema = (path: string): boolean => {
      let s = schema;
      for (const p of path.split('.')) {
        s = s?.properties?.[p];
        if (!s) return false;
      }
      return true;
    };
    assert.deepEqual(
      [...described].filter((k) => !inSchema(k)),
      [],
      'values the schema does not declare',
    );
  });
});
