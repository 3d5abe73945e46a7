// Golden translation tests: every case under test/golden/xds/<case>/manifests.yaml is
// translated for node1, each resource round-trips through the real Envoy protos (so a
// misspelt field is caught, not silently dropped), and the decoded result must equal
// <case>/expected.json. Regenerate with UPDATE_GOLDEN=1 after reviewing the diff.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { decodeResource, encodeResource } from '../../../xds/codec.js';
import { buildModel } from '../../../xds/model/build.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../../../xds/protos.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';
import { translateApiListener, translateForNode } from '../../../xds/translate/index.js';

const GOLDEN = path.resolve(import.meta.dirname, '../../golden/xds');
const API_NAMES: Record<string, string[]> = {
  basic: ['reviews.shop.svc.cluster.local:9080', 'reviews.shop:9090', 'db.shop:5432', 'nope.shop:1'],
  canary: ['reviews.shop.svc:9080', 'reviews.shop'],
};

// Enum values numbered 0 are not on the wire: a missing field in the decoded copy is fine for these.
const ZERO_ENUMS = new Set([
  'ROUND_ROBIN',
  'DEFAULT',
  'ALLOW',
  'XX_HASH',
  'APPEND_IF_EXISTS_OR_ADD',
  'UNSPECIFIED',
]);

/** Every leaf of `want` must be in `got` (decoding adds oneof names; int64 become strings). */
function assertSubset(want: unknown, got: unknown, at: string): void {
  if (want === undefined) return;
  if (want === null || typeof want !== 'object') {
    if (got === undefined && (want === 0 || want === '' || want === false || ZERO_ENUMS.has(String(want))))
      return;
    assert.equal(String(got), String(want), `field ${at} lost or changed in protobuf round trip`);
    return;
  }
  if (Array.isArray(want)) {
    if (want.length === 0 && got === undefined) return;
    assert.ok(Array.isArray(got), `${at} is not a list after round trip`);
    assert.equal(got.length, want.length, `${at} length changed`);
    for (const [i, w] of want.entries()) assertSubset(w, got[i], `${at}[${i}]`);
    return;
  }
  const entries = Object.entries(want as Record<string, unknown>);
  if (got === undefined && entries.every(([, v]) => v === undefined || v === 0 || ZERO_ENUMS.has(String(v))))
    return;
  assert.ok(got && typeof got === 'object', `${at} missing after round trip`);
  for (const [k, v] of entries) assertSubset(v, (got as Record<string, unknown>)[k], `${at}.${k}`);
}

function roundTrip(typeUrl: string, resources: object[]): unknown[] {
  return resources.map((r) => {
    const decoded = decodeResource(typeUrl, encodeResource(typeUrl, r));
    assertSubset(
      r,
      { ...decoded, '@type': typeUrl },
      (r as { name?: string; cluster_name?: string }).name ?? 'resource',
    );
    return decoded;
  });
}

for (const name of readdirSync(GOLDEN).sort()) {
  test(`golden translation: ${name}`, () => {
    const dir = path.join(GOLDEN, name);
    const parsed = parseManifestText(
      `${name}/manifests.yaml`,
      readFileSync(path.join(dir, 'manifests.yaml'), 'utf8'),
    );
    assert.deepEqual(parsed.errors, []);
    const built = buildModel(parsed.objects, {});
    assert.ok(built.ok, built.ok ? '' : JSON.stringify(built.errors, null, 2));
    const model = built.model;
    const res = translateForNode(model, 'node1');
    const api: Record<string, unknown> = {};
    for (const n of API_NAMES[name] ?? []) {
      const l = translateApiListener(model, n);
      api[n] = l === undefined ? null : roundTrip(LISTENER_TYPE, [l])[0];
    }
    const actual = {
      listeners: roundTrip(LISTENER_TYPE, res.listeners),
      routes: roundTrip(ROUTE_TYPE, res.routes),
      clusters: roundTrip(CLUSTER_TYPE, res.clusters),
      endpoints: roundTrip(ENDPOINT_TYPE, res.endpoints),
      apiListeners: api,
    };
    const file = path.join(dir, 'expected.json');
    const text = `${JSON.stringify(actual, null, 2)}\n`;
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, text);
    assert.equal(
      text,
      readFileSync(file, 'utf8'),
      `${name}: translation differs from ${file} (UPDATE_GOLDEN=1 to accept)`,
    );
  });
}
