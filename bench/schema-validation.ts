/**
 * What the schema check costs the model build: a generated mesh (N Services with one HTTP port,
 * 2 Pods each, an HTTPRoute on every 10th), parsed once; then, per round, the full buildModel
 * (schemas included) and the schema check alone over the same objects. The share is the ratio of
 * the two medians of one run, so a loaded machine slows both alike.
 *
 *   node --import tsx bench/schema-validation.ts [--services 10000] [--rounds 5]
 *
 * Writes bench/results/schema-validation.json.
 */
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildModel } from '../xds/model/build.js';
import { schemaErrors } from '../xds/model/schema.js';
import { parseManifestText } from '../xds/sources/yaml.js';

const { values } = parseArgs({
  options: { services: { type: 'string', default: '10000' }, rounds: { type: 'string', default: '5' } },
});
const n = Number(values.services);
const rounds = Number(values.rounds);

const docs = [
  'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, labels: { sockmesh.io/mesh: enabled } }\n',
];
for (let i = 0; i < n; i++) {
  docs.push(
    `apiVersion: v1\nkind: Service\nmetadata: { name: s${i}, namespace: shop }\nspec:\n  clusterIP: 10.96.${i >> 8}.${i & 255}\n  selector: { app: s${i} }\n  ports: [{ name: http, port: 80, appProtocol: http }]\n`,
  );
  for (let j = 0; j < 2; j++) {
    docs.push(
      `apiVersion: v1\nkind: Pod\nmetadata: { name: p${i}-${j}, namespace: shop, labels: { app: s${i}, version: v1 } }\nspec: { nodeName: node${(i + j) % 10}, containers: [{ name: app, ports: [{ name: http, containerPort: 80 }] }] }\nstatus: { podIP: 10.${1 + j}.${i >> 8}.${i & 255} }\n`,
    );
  }
  if (i % 10 === 0 && i + 1 < n) {
    docs.push(
      `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r${i}, namespace: shop }\nspec:\n  parentRefs: [{ group: "", kind: Service, name: s${i}, port: 80 }]\n  rules:\n    - backendRefs: [{ name: s${i}, port: 80, weight: 90 }, { name: s${i + 1}, port: 80, weight: 10 }]\n`,
    );
  }
}
const parsed = parseManifestText('bench.yaml', docs.join('---\n'));
if (parsed.errors.length > 0)
  throw new Error(`generated manifests do not parse: ${parsed.errors[0]?.reason}`);
const objects = parsed.objects;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const build: number[] = [];
const schema: number[] = [];
for (let r = 0; r < rounds; r++) {
  let t0 = performance.now();
  const m = buildModel(objects);
  build.push(performance.now() - t0);
  if (!m.ok) throw new Error(`generated mesh is invalid: ${m.errors[0]?.reason}`);
  t0 = performance.now();
  for (const o of objects) {
    const v = o.value as { kind: string; apiVersion: string };
    schemaErrors(v.kind, v.apiVersion, o);
  }
  schema.push(performance.now() - t0);
}
const result = {
  services: n,
  objects: objects.length,
  rounds,
  buildModelMs: Math.round(median(build)),
  schemaCheckMs: Math.round(median(schema)),
  schemaShare: Number((median(schema) / median(build)).toFixed(3)),
  perObjectUs: Number(((median(schema) * 1000) / objects.length).toFixed(1)),
  loadavg1: Number(loadavg()[0]!.toFixed(1)),
  node: process.version,
  command: `node --import tsx bench/schema-validation.ts --services ${n} --rounds ${rounds}`,
};
console.log(JSON.stringify(result, null, 2));
const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'schema-validation.json');
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
