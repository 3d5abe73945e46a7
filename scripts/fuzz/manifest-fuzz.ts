/**
 * Structure-aware fuzzing of manifests. Each mutant is one example file
 * (examples/shop, examples/journeys) changed in one way, run through what
 * `sockmesh apply` runs (applyManifests against the shop directory) and what
 * the directory source runs (parseManifestText + buildModel over the whole
 * directory), with an oracle:
 * - nothing throws (a throw is a crash: a 500 from apply, a dead reload);
 * - a mutant the mutation makes invalid by rules written here, independently
 *   of the schemas (an unknown field, a port outside 1..65535, a name over
 *   253 characters, a wrong type, a duplicate key, an alias without anchor...)
 *   is rejected;
 * - an accepted mutant translates and encodes for every node, and the
 *   resources hold together (every referenced cluster and route exists,
 *   filter chain matches are unique, weights add up);
 * - every rejection names file, line and a bounded reason.
 * Seeded (mulberry32) and bounded: the same seed gives the same mutants.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { cp as copyDir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import { buildModel, type ModelOptions } from '../../xds/model/build.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../../xds/protos.js';
import { applyManifests } from '../../xds/server/apply.js';
import { Snapshot } from '../../xds/server/snapshot.js';
import { DirectorySource } from '../../xds/sources/directory.js';
import type { ConfigError, SourceObject } from '../../xds/sources/source.js';
import { parseManifestText } from '../../xds/sources/yaml.js';
import type { Json } from '../../xds/translate/envoy.js';
import { translateInbound, translateMesh } from '../../xds/translate/index.js';
import { mulberry32 } from './rng.js';

export const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHOP = path.join(ROOT, 'examples', 'shop');
const JOURNEYS = path.join(ROOT, 'examples', 'journeys');

/** A file to mutate, and the name it takes in the directory (a journey replaces the file it edits). */
export interface Seed {
  name: string;
  text: string;
  dirFile: string;
}

export function seeds(): { shop: Record<string, string>; seeds: Seed[] } {
  const shop: Record<string, string> = {};
  for (const f of readdirSync(SHOP)
    .filter((n) => n.endsWith('.yaml'))
    .sort())
    shop[f] = readFileSync(path.join(SHOP, f), 'utf8');
  const out: Seed[] = Object.entries(shop).map(([f, text]) => ({ name: `shop/${f}`, text, dirFile: f }));
  for (const f of readdirSync(JOURNEYS)
    .filter((n) => n.endsWith('.yaml') && n !== 'broken-route.yaml')
    .sort()) {
    const text = readFileSync(path.join(JOURNEYS, f), 'utf8');
    out.push({
      name: `journeys/${f}`,
      text,
      dirFile: text.includes('kind: HTTPRoute') ? '30-routes.yaml' : `50-${f}`,
    });
  }
  return { shop, seeds: out };
}

export { mulberry32 };

type Rand = () => number;
const pick = <T>(r: Rand, list: readonly T[]): T => list[Math.floor(r() * list.length)]!;

/** Must the mutant be rejected (by rules written here), or may it go either way? */
export type Expectation = 'reject' | 'any';

export interface Mutant {
  seed: Seed;
  mutation: string;
  /** What was changed, e.g. `doc 2 spec.ports[0].port -> 65536`. */
  detail: string;
  text: string;
  expect: Expectation;
}

type Path = (string | number)[];

/** Maps whose keys are free (labels, selectors): an added or renamed key there is valid. */
const OPEN_MAPS = new Set(['labels', 'annotations', 'selector', 'matchLabels']);
/** Fields whose value is a DNS name of at most 253 (or 63) characters. */
const NAME_KEYS = new Set(['name', 'namespace', 'nodeName', 'serviceAccountName']);
/** Lists whose entries' `name` is an HTTP header or query parameter name. */
const HEADER_LISTS = new Set(['headers', 'queryParams', 'set', 'add']);
/** Enumerations (and the two identity fields): any other string is invalid. */
const ENUM_KEYS = new Set(['apiVersion', 'kind', 'action', 'type', 'protocol', 'method']);
/** Integer ranges from the Kubernetes and Gateway API references. */
const RANGES: Record<string, [number, number]> = {
  port: [1, 65535],
  containerPort: [1, 65535],
  weight: [0, 1_000_000],
  maxConnections: [1, 4_294_967_295],
  maxPendingRequests: [1, 4_294_967_295],
  maxRequests: [1, 4_294_967_295],
  maxRetries: [0, 4_294_967_295],
  consecutive5xx: [1, 4_294_967_295],
  consecutiveGatewayErrors: [1, 4_294_967_295],
  maxEjectionPercent: [0, 100],
  attempts: [0, 100],
};
/** Fields that take several types (so a type change may be valid). */
const MULTI_TYPED = new Set(['targetPort']);

/**
 * Fields that must be present, from the Kubernetes and Gateway API references and sockmesh's
 * own kinds (GAMMA routes need a Service parent; a TrafficPolicy its target; a Node its address),
 * as `Kind:path` with `*` for any list index.
 */
const REQUIRED = new Set([
  '*:apiVersion',
  '*:kind',
  '*:metadata',
  '*:metadata.name',
  'Service:spec',
  'Service:spec.ports',
  'Service:spec.ports.*.port',
  'Pod:spec.containers.*.ports.*.containerPort',
  'Node:spec',
  'Node:spec.address',
  'HTTPRoute:spec',
  'HTTPRoute:spec.parentRefs',
  'HTTPRoute:spec.parentRefs.*.name',
  'HTTPRoute:spec.rules.*.backendRefs.*.name',
  'HTTPRoute:spec.rules.*.backendRefs.*.port',
  'HTTPRoute:spec.rules.*.matches.*.headers.*.name',
  'HTTPRoute:spec.rules.*.matches.*.headers.*.value',
  'TrafficPolicy:spec',
  'TrafficPolicy:spec.targetRef',
  'TrafficPolicy:spec.targetRef.name',
  'AuthorizationPolicy:spec.targetRef.name',
]);

function isRequired(doc: unknown, p: Path): boolean {
  if (typeof p[p.length - 1] === 'number') return false; // a list element, not a field
  const kind = (doc as { kind?: unknown }).kind;
  const shape = p.map((k) => (typeof k === 'number' ? '*' : k)).join('.');
  return REQUIRED.has(`*:${shape}`) || (typeof kind === 'string' && REQUIRED.has(`${kind}:${shape}`));
}

function formatPath(p: Path): string {
  return p.map((x) => (typeof x === 'number' ? `[${x}]` : `.${x}`)).join('');
}

/** Every path in a value (maps and lists included), the root excluded. */
function paths(v: unknown, base: Path = [], out: Path[] = []): Path[] {
  if (Array.isArray(v))
    v.forEach((x, i) => {
      out.push([...base, i]);
      paths(x, [...base, i], out);
    });
  else if (typeof v === 'object' && v !== null)
    for (const [k, x] of Object.entries(v)) {
      out.push([...base, k]);
      paths(x, [...base, k], out);
    }
  return out;
}

function getAt(v: unknown, p: Path): unknown {
  let cur = v;
  for (const k of p) cur = (cur as Record<string | number, unknown>)[k];
  return cur;
}

function setAt(v: unknown, p: Path, value: unknown): void {
  const parent = getAt(v, p.slice(0, -1)) as Record<string | number, unknown>;
  parent[p[p.length - 1]!] = value;
}

function deleteAt(v: unknown, p: Path): void {
  const parent = getAt(v, p.slice(0, -1));
  const k = p[p.length - 1]!;
  if (Array.isArray(parent)) parent.splice(k as number, 1);
  else delete (parent as Record<string, unknown>)[k];
}

/** The nearest map key at or above the path (a list element belongs to its list's key). */
function keyOf(p: Path): string | undefined {
  for (let i = p.length - 1; i >= 0; i--) if (typeof p[i] === 'string') return p[i] as string;
  return undefined;
}

/** Inside a free map (labels...), where keys are data. */
function inOpenMap(p: Path): boolean {
  return p.slice(0, -1).some((k) => typeof k === 'string' && OPEN_MAPS.has(k));
}

function nested(depth: number, list: boolean): unknown {
  let v: unknown = 'x';
  for (let i = 0; i < depth; i++) v = list ? [v] : { n: v };
  return v;
}

function typeChange(r: Rand, v: unknown): unknown {
  if (typeof v === 'string') return pick(r, [7, true, ['x'], { a: 1 }]);
  if (typeof v === 'number') return pick(r, [String(v), false, [v], { v }]);
  if (typeof v === 'boolean') return pick(r, ['yes', 1, [v]]);
  if (Array.isArray(v)) return pick(r, ['list', 3, { 0: v[0] ?? 'x' }]);
  return pick(r, ['map', 3, [v]]);
}

function typeName(v: unknown): string {
  return Array.isArray(v) ? 'list' : v === null ? 'null' : typeof v;
}

/** One mutation of the parsed documents; undefined when the chosen spot does not fit it. */
function mutateStructure(r: Rand, seed: Seed): Mutant | undefined {
  const docs = parseAllDocuments(seed.text).map((d) => d.toJS() as unknown);
  const di = Math.floor(r() * docs.length);
  const doc = docs[di];
  if (r() < 0.08) {
    // A copy of a Service under another name: its cluster IP is then claimed twice.
    const copy = structuredClone(doc) as {
      kind?: string;
      metadata?: { name?: unknown };
      spec?: { clusterIP?: unknown };
    };
    // Services only: two Pods on one IP are how the proxyless-gRPC tests put two servers on
    // loopback, and the model takes them (see docs/reliability.md, "Not covered yet").
    if (copy?.kind !== 'Service' || typeof copy.metadata?.name !== 'string') return undefined;
    copy.metadata.name = `${copy.metadata.name}-copy`;
    docs.push(copy);
    const vip = typeof copy.spec?.clusterIP === 'string' && copy.spec.clusterIP !== 'None';
    const text = docs.map((d) => stringify(d, { aliasDuplicateObjects: false })).join('---\n');
    return {
      seed,
      mutation: 'clone-object',
      detail: `doc ${di} copied as ${copy.metadata.name}`,
      text,
      expect: vip ? 'reject' : 'any',
    };
  }
  const all = paths(doc);
  if (all.length === 0) return undefined;
  const p = pick(r, all);
  const key = keyOf(p);
  const last = p[p.length - 1];
  const old = getAt(doc, p);
  const open = inOpenMap(p);
  const kind = pick(r, [
    'wrong-type',
    'drop-field',
    'rename-field',
    'add-field',
    'out-of-range',
    'huge-string',
    'deep-nesting',
    'bad-enum',
    'null-value',
  ]);
  let detail = `doc ${di} ${formatPath(p)}`;
  let expect: Expectation = 'any';
  switch (kind) {
    case 'wrong-type': {
      const v = typeChange(r, old);
      setAt(doc, p, v);
      detail += ` ${typeName(old)} -> ${JSON.stringify(v)}`;
      // A free map's value must stay a string; elsewhere a type change breaks the field unless it takes several.
      const numberAsString = typeof old === 'number' && typeof v === 'string';
      if (!(key && MULTI_TYPED.has(key)) && !(open && numberAsString && typeof old !== 'object'))
        expect = 'reject';
      if (open && typeof old === 'string' && typeof v !== 'string') expect = 'reject';
      break;
    }
    case 'drop-field':
      if (isRequired(doc, p)) expect = 'reject';
      deleteAt(doc, p);
      detail += ' dropped';
      break;
    case 'rename-field': {
      if (typeof last !== 'string') return undefined;
      const parent = getAt(doc, p.slice(0, -1)) as Record<string, unknown>;
      const renamed = last.length > 1 ? `${last.slice(0, -2)}${last.at(-1)}${last.at(-2)}` : `${last}x`;
      if (renamed === last || renamed in parent) return undefined;
      parent[renamed] = parent[last];
      delete parent[last];
      detail += ` renamed to ${renamed}`;
      if (!open) expect = 'reject';
      break;
    }
    case 'add-field': {
      const target = typeof old === 'object' && old !== null && !Array.isArray(old) ? p : p.slice(0, -1);
      const parent = getAt(doc, target);
      if (typeof parent !== 'object' || parent === null || Array.isArray(parent)) return undefined;
      const name = `zz${Math.floor(r() * 1000)}`;
      (parent as Record<string, unknown>)[name] = 'x';
      detail = `doc ${di} ${formatPath([...target, name])} added`;
      if (!target.some((k) => typeof k === 'string' && OPEN_MAPS.has(k))) expect = 'reject';
      break;
    }
    case 'out-of-range': {
      if (typeof old !== 'number' || !key) return undefined;
      const v = pick(r, [-1, 0, 65_536, 101, 1_000_001, 2 ** 31, 2 ** 53, 1.5, -0.5, 1e300]);
      setAt(doc, p, v);
      detail += ` ${old} -> ${v}`;
      const range = RANGES[key];
      if (range && (!Number.isInteger(v) || v < range[0] || v > range[1])) expect = 'reject';
      break;
    }
    case 'huge-string': {
      if (typeof old !== 'string' || !key) return undefined;
      const n = pick(r, [254, 1025, 70_000, 1_000_000]);
      setAt(doc, p, 'a'.repeat(n));
      detail += ` -> ${n} characters`;
      // A header or query parameter name may be 256 characters (Gateway API); other names are DNS names.
      const headerish = p.some((k) => typeof k === 'string' && HEADER_LISTS.has(k));
      if (NAME_KEYS.has(key) && (!headerish || n > 256)) expect = 'reject';
      if (ENUM_KEYS.has(key) || (open && n > 63)) expect = 'reject';
      break;
    }
    case 'deep-nesting': {
      const depth = pick(r, [50, 200, 400]); // deeper: the deep-flow text mutation (yaml.stringify itself recurses)
      setAt(doc, p, nested(depth, r() < 0.5));
      detail += ` -> ${depth} levels`;
      // Only a free-form place could hold a structure: none of the example fields is one.
      expect = 'reject';
      break;
    }
    case 'bad-enum': {
      if (typeof old !== 'string' || !key || !ENUM_KEYS.has(key) || open) return undefined;
      const v = pick(r, [
        '',
        'Bogus',
        old.toLowerCase() === old ? old.toUpperCase() : old.toLowerCase(),
        `${old} `,
      ]);
      if (v === old) return undefined;
      setAt(doc, p, v);
      detail += ` '${old}' -> '${v}'`;
      expect = 'reject';
      break;
    }
    case 'null-value':
      if (isRequired(doc, p)) expect = 'reject'; // null is absent, as on an API server
      setAt(doc, p, null);
      detail += ' -> null';
      break;
  }
  const text = docs.map((d) => stringify(d, { aliasDuplicateObjects: false })).join('---\n');
  return { seed, mutation: kind, detail, text, expect };
}

/** One mutation of the text: YAML damage, duplicate keys, aliases, deep flow nesting. */
function mutateText(r: Rand, seed: Seed): Mutant | undefined {
  const lines = seed.text.split('\n');
  const kind = pick(r, [
    'duplicate-key',
    'yaml-damage',
    'truncate',
    'unresolved-alias',
    'alias-bomb',
    'anchor-alias',
    'deep-flow',
    'bad-indent',
    'tab',
  ]);
  const keyLines = lines
    .map((l, i) => [l, i] as const)
    .filter(([l]) => /^\s*(- )?[A-Za-z][\w.-]*:( |$)/.test(l));
  const mut = (text: string, detail: string, expect: Expectation): Mutant => ({
    seed,
    mutation: kind,
    detail,
    text,
    expect,
  });
  switch (kind) {
    case 'duplicate-key': {
      if (keyLines.length === 0) return undefined;
      const [l, i] = pick(r, keyLines);
      // A block-map key repeated on the next line at the same indentation.
      const copy = l.replace(/^(\s*)- /, '$1  ');
      if (/:\s*$/.test(l)) return undefined; // its value is the block below: the copy would take it
      const out = [...lines.slice(0, i + 1), copy, ...lines.slice(i + 1)];
      return mut(out.join('\n'), `line ${i + 1} repeated`, 'reject');
    }
    case 'yaml-damage': {
      const at = Math.floor(r() * seed.text.length);
      const junk = pick(r, [
        ':',
        '[',
        '{',
        '"',
        "'",
        '&',
        '*',
        '!',
        '|',
        '>',
        '%',
        '@',
        '`',
        ']',
        '}',
        ',',
        '#',
      ]);
      return mut(
        `${seed.text.slice(0, at)}${junk}${seed.text.slice(at)}`,
        `'${junk}' at offset ${at}`,
        'any',
      );
    }
    case 'truncate': {
      const at = Math.floor(r() * seed.text.length);
      return mut(seed.text.slice(0, at), `cut at offset ${at}`, 'any');
    }
    case 'unresolved-alias': {
      const valueLines = keyLines.filter(([l]) => /: \S/.test(l));
      if (valueLines.length === 0) return undefined;
      const [, i] = pick(r, valueLines);
      const out = [...lines];
      out[i] = out[i]!.replace(/: \S.*$/, ': *nowhere');
      return mut(out.join('\n'), `line ${i + 1} value -> *nowhere`, 'reject');
    }
    case 'alias-bomb': {
      const bomb = ['x-bomb0: &b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
      for (let k = 1; k < 9; k++)
        bomb.push(
          `x-bomb${k}: &b${k} [${Array(9)
            .fill(`*b${k - 1}`)
            .join(', ')}]`,
        );
      const first = seed.text.indexOf('apiVersion:');
      return mut(
        `${seed.text.slice(0, first)}${bomb.join('\n')}\n${seed.text.slice(first)}`,
        'billion laughs in doc 0',
        'reject',
      );
    }
    case 'anchor-alias': {
      // A valid anchor and alias of the same scalar: resolves to the same document.
      const valueLines = keyLines.filter(([l]) => /: [A-Za-z0-9]\S*$/.test(l) && !/: [&*]/.test(l));
      if (valueLines.length < 1) return undefined;
      const [l, i] = pick(r, valueLines);
      const value = l.replace(/^.*?: /, '');
      const out = [...lines];
      out[i] = l.replace(/: (\S+)$/, ': &a1 $1');
      const later = out.findIndex((x, j) => j > i && x.endsWith(`: ${value}`));
      if (later < 0) return undefined;
      out[later] = out[later]!.replace(
        new RegExp(`: ${value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`),
        ': *a1',
      );
      return mut(out.join('\n'), `&a1 on line ${i + 1}, *a1 on line ${later + 1}`, 'any');
    }
    case 'deep-flow': {
      if (keyLines.length === 0) return undefined;
      const valueLines = keyLines.filter(([l]) => /: \S/.test(l));
      if (valueLines.length === 0) return undefined;
      const [, i] = pick(r, valueLines);
      const depth = pick(r, [100, 1000, 5000, 20_000]);
      const out = [...lines];
      out[i] = out[i]!.replace(/: \S.*$/, `: ${'['.repeat(depth)}x${']'.repeat(depth)}`);
      return mut(out.join('\n'), `line ${i + 1} value -> ${depth} nested lists`, 'reject');
    }
    case 'bad-indent': {
      if (keyLines.length === 0) return undefined;
      const [, i] = pick(r, keyLines);
      const out = [...lines];
      out[i] = ` ${out[i]}`;
      return mut(out.join('\n'), `line ${i + 1} indented one more`, 'any');
    }
    case 'tab': {
      const [, i] = keyLines.length > 0 ? pick(r, keyLines) : ['', 0];
      const out = [...lines];
      out[i] = `\t${out[i]}`;
      return mut(out.join('\n'), `line ${i + 1} starts with a tab`, 'any');
    }
  }
  return undefined;
}

export function mutate(r: Rand, list: readonly Seed[]): Mutant {
  for (;;) {
    const seed = pick(r, list);
    const m = r() < 0.65 ? mutateStructure(r, seed) : mutateText(r, seed);
    if (m && m.text !== seed.text) return m;
  }
}

/** Envoy-level invariants of one translation: what is referenced exists, matches are unique, weights add up. */
export function invariantViolations(model: Parameters<typeof translateMesh>[0]): string[] {
  const out: string[] = [];
  const shared = translateMesh(model);
  const clusters = new Set(shared.clusters.map((c) => c.name as string));
  const routes = new Set(shared.routes.map((r) => r.name as string));
  const cla = new Set(shared.endpoints.map((e) => e.cluster_name as string));
  for (const c of shared.clusters)
    if (c.type === 'EDS' && !cla.has(c.name as string))
      out.push(`cluster ${c.name} has no ClusterLoadAssignment`);
  const listeners: Json[] = [shared.outboundListener];
  for (const node of model.nodes.keys()) listeners.push(translateInbound(model, shared, node));
  const walk = (v: unknown, where: string): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x, where);
    } else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      if (typeof o.cluster === 'string' && !clusters.has(o.cluster) && o.cluster !== 'sockmesh-passthrough')
        out.push(`${where}: cluster ${o.cluster} does not exist`);
      if (typeof o.route_config_name === 'string' && !routes.has(o.route_config_name))
        out.push(`${where}: route configuration ${o.route_config_name} does not exist`);
      const wc = o.weighted_clusters as
        | { clusters?: { name: string; weight?: { value: number } }[]; total_weight?: { value: number } }
        | undefined;
      if (wc?.clusters) {
        for (const c of wc.clusters)
          if (!clusters.has(c.name)) out.push(`${where}: weighted cluster ${c.name} does not exist`);
        const sum = wc.clusters.reduce((s, c) => s + (c.weight?.value ?? 0), 0);
        if (wc.total_weight && wc.total_weight.value !== sum)
          out.push(`${where}: total_weight ${wc.total_weight.value} != ${sum}`);
      }
      for (const x of Object.values(o)) walk(x, where);
    }
  };
  for (const l of listeners) {
    walk(l, `listener ${l.name}`);
    const seen = new Set<string>();
    for (const fc of (l.filter_chains as Json[] | undefined) ?? []) {
      const key = JSON.stringify(fc.filter_chain_match ?? {});
      if (seen.has(key)) out.push(`listener ${l.name}: two filter chains match ${key}`);
      seen.add(key);
    }
  }
  for (const r of shared.routes) walk(r, `route ${r.name}`);
  return out;
}

/** Encodes everything every node receives (what the ADS server would send). */
function encodeAll(model: Parameters<typeof translateMesh>[0]): void {
  const snap = new Snapshot(model, 1, undefined);
  for (const node of ['', ...model.nodes.keys()])
    for (const t of [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE] as const) snap.wildcard(t, node);
}

export interface Finding {
  index: number;
  path: 'apply' | 'directory';
  kind: 'crash' | 'accepted-invalid' | 'invariant' | 'bad-error';
  seed: string;
  mutation: string;
  detail: string;
  message: string;
}

export interface FuzzReport {
  seed: number;
  count: number;
  /** Per run path: accepted and rejected mutants. */
  accepted: { apply: number; directory: number };
  rejected: { apply: number; directory: number };
  /** Mutants the oracle says must be rejected. */
  mustReject: number;
  byMutation: Record<string, { tried: number; acceptedApply: number; acceptedDirectory: number }>;
  findings: Finding[];
  ms: number;
}

const MAX_MESSAGE = 600;

function badErrors(errors: readonly ConfigError[]): string | undefined {
  if (errors.length === 0) return 'rejected without an error';
  for (const e of errors) {
    if (
      typeof e.file !== 'string' ||
      e.file === '' ||
      !Number.isInteger(e.line) ||
      e.line < 0 ||
      e.reason === ''
    )
      return `malformed error ${JSON.stringify(e).slice(0, 200)}`;
    const len = e.path.length + e.reason.length;
    if (len > MAX_MESSAGE) return `error of ${len} characters at ${e.file}:${e.line}`;
  }
  return undefined;
}

export interface FuzzOptions {
  seed: number;
  count: number;
  /** Model options for both paths (defaults: the shop's own Node objects). */
  model?: ModelOptions;
  /** Called after each mutant (progress). */
  onMutant?: (i: number, m: Mutant) => void;
}

/** Runs `count` mutants; the shop directory is copied to a temporary directory for the apply path. */
export async function runManifestFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const started = performance.now();
  const { shop, seeds: list } = seeds();
  const tmp = await mkdtemp(path.join(tmpdir(), 'sockmesh-fuzz-'));
  const report: FuzzReport = {
    seed: opts.seed,
    count: opts.count,
    accepted: { apply: 0, directory: 0 },
    rejected: { apply: 0, directory: 0 },
    mustReject: 0,
    byMutation: {},
    findings: [],
    ms: 0,
  };
  try {
    await copyDir(SHOP, tmp, { recursive: true, filter: (src) => !src.includes(`${path.sep}app`) });
    const source = new DirectorySource(tmp);
    const parsedShop = new Map(Object.entries(shop).map(([f, t]) => [f, parseManifestText(f, t)]));
    const r = mulberry32(opts.seed);
    for (let i = 0; i < opts.count; i++) {
      const m = mutate(r, list);
      opts.onMutant?.(i, m);
      if (m.expect === 'reject') report.mustReject++;
      const stats = report.byMutation[m.mutation] ?? { tried: 0, acceptedApply: 0, acceptedDirectory: 0 };
      report.byMutation[m.mutation] = stats;
      stats.tried++;
      const finding = (path: Finding['path'], kind: Finding['kind'], message: string) =>
        report.findings.push({
          index: i,
          path,
          kind,
          seed: m.seed.name,
          mutation: m.mutation,
          detail: m.detail,
          message,
        });

      // What `sockmesh apply` runs (a dry run: the same validation, nothing written).
      try {
        const res = await applyManifests(source, m.text, opts.model ?? {}, { dryRun: true });
        if (res.ok) {
          report.accepted.apply++;
          stats.acceptedApply++;
          if (m.expect === 'reject') finding('apply', 'accepted-invalid', 'accepted');
        } else {
          report.rejected.apply++;
          const bad = badErrors(res.errors);
          if (bad) finding('apply', 'bad-error', bad);
        }
      } catch (err) {
        finding('apply', 'crash', String((err as Error)?.stack ?? err).slice(0, 800));
      }

      // What the directory source runs, with the mutant in place of the file it edits.
      try {
        const objects: SourceObject[] = [];
        const errors: ConfigError[] = [];
        const files = new Map(parsedShop);
        files.set(m.seed.dirFile, parseManifestText(m.seed.dirFile, m.text));
        for (const [, p] of [...files].sort(([a], [b]) => (a < b ? -1 : 1))) {
          objects.push(...p.objects);
          errors.push(...p.errors);
        }
        const built =
          errors.length > 0 ? ({ ok: false, errors } as const) : buildModel(objects, opts.model ?? {});
        if (built.ok) {
          report.accepted.directory++;
          stats.acceptedDirectory++;
          if (m.expect === 'reject') finding('directory', 'accepted-invalid', 'accepted');
          encodeAll(built.model);
          for (const v of invariantViolations(built.model)) finding('directory', 'invariant', v);
        } else {
          report.rejected.directory++;
          const bad = badErrors(built.errors);
          if (bad) finding('directory', 'bad-error', bad);
        }
      } catch (err) {
        finding('directory', 'crash', String((err as Error)?.stack ?? err).slice(0, 800));
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}
