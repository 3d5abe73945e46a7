// Schema-driven validation: every kind is checked against its JSON Schema (the
// Gateway API and sockmesh CRDs' own, hand-written ones for core kinds) before
// the model's semantic checks, with file:line: field.path: reason errors.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  GENERATED_FILE,
  type GeneratedSchemas,
  gatewayCrdsPresent,
  generate,
  generateSockmesh,
  render,
} from '../../../scripts/gen-schemas.js';
import { buildModel } from '../../../xds/model/build.js';
import { schemaErrors, schemaKinds } from '../../../xds/model/schema.js';
import { formatConfigError, type SourceObject } from '../../../xds/sources/source.js';
import { parseManifestText } from '../../../xds/sources/yaml.js';

const SHOP = 'examples/shop';

function shopFiles(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(SHOP)
    .filter((n) => n.endsWith('.yaml'))
    .sort())
    out[f] = readFileSync(path.join(SHOP, f), 'utf8');
  return out;
}

/** Errors of the shop with one more file (or one replaced). */
function errorsWith(name: string, text: string): string[] {
  const files = { ...shopFiles(), [name]: text };
  const objects: SourceObject[] = [];
  const errors: string[] = [];
  for (const [f, t] of Object.entries(files)) {
    const p = parseManifestText(f, t);
    objects.push(...p.objects);
    errors.push(...p.errors.map(formatConfigError));
  }
  if (errors.length > 0) return errors;
  const r = buildModel(objects);
  return r.ok ? [] : r.errors.map(formatConfigError);
}

const ROUTE = readFileSync('examples/journeys/reviews-50-50.yaml', 'utf8');

test('the examples conform to their schemas', () => {
  assert.deepEqual(errorsWith('x.yaml', ''), []);
  for (const j of ['reviews-50-50.yaml', 'reviews-0-100.yaml']) {
    assert.deepEqual(errorsWith('30-routes.yaml', readFileSync(`examples/journeys/${j}`, 'utf8')), [], j);
  }
  const deny = readFileSync('examples/journeys/deny-frontend-to-ratings.yaml', 'utf8');
  assert.deepEqual(errorsWith('deny.yaml', deny), []);
});

test('a top-level unknown field is refused (measured: weigth beside apiVersion was accepted)', () => {
  const text = ROUTE.replace('apiVersion:', 'weigth: 5\napiVersion:');
  const line = text.split('\n').findIndex((l) => l.startsWith('weigth')) + 1;
  assert.deepEqual(errorsWith('30-routes.yaml', text), [
    `30-routes.yaml:${line}: weigth: unknown field (expected one of: apiVersion, kind, metadata, spec, status)`,
  ]);
});

test('every kind refuses an unknown top-level field', () => {
  for (const { kind, apiVersion } of schemaKinds()) {
    const obj: SourceObject = {
      value: { apiVersion, kind, metadata: { name: 'x' }, spce: {} },
      origin: { file: 'k.yaml', line: 1 },
      locate: () => ({ file: 'k.yaml', line: 3 }),
    };
    const errs = schemaErrors(kind, apiVersion, obj).map(formatConfigError);
    assert.ok(
      errs.some((e) =>
        e.startsWith('k.yaml:3: spce: unknown field (expected one of: apiVersion, kind, metadata'),
      ),
      `${kind} ${apiVersion}: ${errs.join('; ')}`,
    );
  }
});

test('a match path that is not a map is refused (measured: path: -1 was accepted as match-all)', () => {
  const at = ROUTE.lastIndexOf('- path: { type: PathPrefix, value: / }');
  const text = `${ROUTE.slice(0, at)}- path: -1${ROUTE.slice(at + '- path: { type: PathPrefix, value: / }'.length)}`;
  const line = text.split('\n').findIndex((l) => l.includes('path: -1')) + 1;
  assert.deepEqual(errorsWith('30-routes.yaml', text), [
    `30-routes.yaml:${line}: spec.rules[1].matches[0].path: must be a map, got number -1`,
  ]);
});

test('Gateway API limits hold: out-of-range port and weight, unknown enum, too many parentRefs', () => {
  const port = errorsWith('30-routes.yaml', ROUTE.replace('port: 9080', 'port: 70000'));
  assert.ok(
    port.some((e) => /parentRefs\[0\]\.port: must be <= 65535, got 70000$/.test(e)),
    port.join('\n'),
  );
  const weight = errorsWith('30-routes.yaml', ROUTE.replace(/weight: \d+/, 'weight: 1000001'));
  assert.ok(
    weight.some((e) => /weight: must be <= 1000000, got 1000001$/.test(e)),
    weight.join('\n'),
  );
  const parents = Array.from({ length: 33 }, () => '{ kind: Service, name: reviews, port: 9080 }');
  const many = errorsWith(
    '30-routes.yaml',
    ROUTE.replace(/parentRefs:\n[\s\S]*?\n {2}rules:/, `parentRefs: [${parents.join(', ')}]\n  rules:`),
  );
  assert.ok(
    many.some((e) => /spec\.parentRefs: must have at most 32 items, got 33$/.test(e)),
    many.join('\n'),
  );
});

test('a field a decoder also checks is reported once, in the decoder words', () => {
  const errs = errorsWith(
    '40-policies.yaml',
    readFileSync(`${SHOP}/40-policies.yaml`, 'utf8').replace(/interval: \S+/, 'interval: 10 seconds'),
  );
  assert.equal(errs.length, 1, errs.join('\n'));
  assert.match(errs[0]!, /outlierDetection\.interval: invalid duration '10 seconds': use e\.g\./);
});

test('core kinds: wrong types and unknown fields, with lines', () => {
  const svc = `apiVersion: v1
kind: Service
metadata: { name: extra, namespace: shop, labels: { tier: [a] } }
spec:
  clusterIP: 10.96.0.99
  selector: { app: reviews }
  ports:
    - { name: http, port: "80", appProtocol: http }
  loadBalancerIP: 1.2.3.4
`;
  assert.deepEqual(errorsWith('extra.yaml', svc), [
    'extra.yaml:3: metadata.labels.tier: must be a string, got a list',
    'extra.yaml:8: spec.ports[0].port: must be an integer, got string "80"',
    'extra.yaml:9: spec.loadBalancerIP: unknown field (expected one of: selector, ports, clusterIP, clusterIPs, type, sessionAffinity)',
  ]);
});

test('a null field counts as absent, as on an API server', () => {
  assert.deepEqual(errorsWith('30-routes.yaml', ROUTE.replace('spec:\n', 'status:\nspec:\n')), []);
});

test('a huge value is quoted in bounded form', () => {
  const huge = 'x'.repeat(100_000);
  const errs = errorsWith('30-routes.yaml', ROUTE.replace(/name: reviews-v1/, `name: ${huge}`));
  assert.ok(errs.length > 0);
  for (const e of errs) assert.ok(e.length < 400, `message of ${e.length} characters`);
});

test('YAML that cannot be resolved is a manifest error, never an exception', () => {
  const unresolved = parseManifestText(
    'a.yaml',
    'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: *nope\n',
  );
  assert.deepEqual(unresolved.objects, []);
  assert.deepEqual(unresolved.errors.map(formatConfigError), [
    'a.yaml:4: YAML syntax: Unresolved alias (the anchor must be set before the alias): nope',
  ]);
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 12; i++) {
    const prev = String.fromCharCode(96 + i);
    const cur = String.fromCharCode(97 + i);
    bomb.push(
      `${cur}: &${cur} [*${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}, *${prev}]`,
    );
  }
  const billion = parseManifestText('b.yaml', `${bomb.join('\n')}\n`);
  assert.deepEqual(billion.objects, []);
  assert.equal(billion.errors.length, 1);
  assert.match(formatConfigError(billion.errors[0]!), /^b\.yaml:\d+: YAML syntax: .*alias/i);
});

test('the generated CRD schemas match the CRDs they come from', (t) => {
  const committed = JSON.parse(readFileSync(GENERATED_FILE, 'utf8')) as GeneratedSchemas;
  const sockmesh = generateSockmesh();
  for (const kind of Object.keys(sockmesh))
    assert.deepEqual(
      committed.kinds[kind],
      sockmesh[kind],
      `${kind}: rerun node --import tsx scripts/gen-schemas.ts`,
    );
  if (!gatewayCrdsPresent()) {
    t.diagnostic(
      'Gateway API CRDs not built (bash scripts/k8s/build.sh): only the sockmesh part was compared',
    );
    return;
  }
  assert.equal(
    readFileSync(GENERATED_FILE, 'utf8'),
    render(generate()),
    'crds.generated.json drifted: rerun node --import tsx scripts/gen-schemas.ts',
  );
});

test('found by the manifest fuzzer: container typos, long label values, long namespaces and node names', () => {
  const pods = readFileSync(`${SHOP}/20-pods.yaml`, 'utf8');
  const typo = errorsWith(
    '20-pods.yaml',
    pods.replace('    - name: app\n', '    - name: app\n      imgae: nginx\n'),
  );
  assert.equal(typo.length, 1, typo.join('\n'));
  assert.match(
    typo[0]!,
    /^20-pods\.yaml:\d+: spec\.containers\[0\]\.imgae: unknown field \(did you mean image\?\)$/,
  );
  const label = errorsWith('20-pods.yaml', pods.replace('version: v1 }', `version: ${'v'.repeat(64)} }`));
  assert.match(label[0] ?? '', /metadata\.labels\.version: must be at most 63 characters long, got 64$/);
  const ns = errorsWith(
    '30-routes.yaml',
    ROUTE.replace('namespace: shop', `namespace: ${'n'.repeat(70_000)}`),
  );
  assert.ok(ns.length > 0 && ns.every((e) => e.length < 400), ns.join('\n').slice(0, 2000));
  const node = errorsWith('20-pods.yaml', pods.replace('nodeName: node1', `nodeName: ${'n'.repeat(254)}`));
  assert.match(node[0] ?? '', /spec\.nodeName: must be at most 253 characters long, got 254$/);
});
