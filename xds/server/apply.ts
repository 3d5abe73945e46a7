/**
 * `apply`: validate a set of documents against everything already declared
 * and, when the result is valid, write them into the manifests directory:
 * an object declared in an existing file is rewritten in place, a new one goes
 * to `applied/<kind>-<namespace>-<name>.yaml`. Nothing is written when any
 * error is found.
 */
import { stringify } from 'yaml';
import { buildModel, type ModelOptions, objectIdentity } from '../model/build.js';
import type { DirectorySource } from '../sources/directory.js';
import type { ConfigError, SourceObject } from '../sources/source.js';
import { parseManifestText } from '../sources/yaml.js';

export interface ApplyChange {
  /** `Kind/namespace/name` (namespace empty for cluster-scoped kinds). */
  object: string;
  action: 'created' | 'configured' | 'unchanged';
  /** Manifest file, relative to the directory. */
  file: string;
}

/** `malformed`: the input itself is not readable manifests (YAML errors, nothing to apply). */
export type ApplyResult =
  | { ok: true; changes: ApplyChange[] }
  | { ok: false; errors: ConfigError[]; malformed?: boolean };

/** JSON with sorted keys, to compare documents regardless of key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function appliedFileName(identity: string): string {
  const [kind, ns, name] = identity.split('/') as [string, string, string];
  return `applied/${[kind.toLowerCase(), ns, name].filter((s) => s !== '').join('-')}.yaml`;
}

export async function applyManifests(
  source: DirectorySource,
  text: string,
  options: ModelOptions,
  { dryRun = false, inputName = '<apply>' }: { dryRun?: boolean; inputName?: string } = {},
): Promise<ApplyResult> {
  const input = parseManifestText(inputName, text);
  if (input.errors.length > 0) return { ok: false, errors: input.errors, malformed: true };
  if (input.objects.length === 0) {
    return {
      ok: false,
      errors: [{ file: inputName, line: 1, path: '', reason: 'no documents to apply' }],
      malformed: true,
    };
  }
  const state = await source.load();
  if (state.errors.length > 0) return { ok: false, errors: state.errors };

  const existing = new Map<string, SourceObject>();
  for (const o of state.objects) {
    const id = objectIdentity(o.value);
    if (id) existing.set(id, o);
  }
  const incoming = new Map<string, SourceObject>();
  for (const o of input.objects) {
    const id = objectIdentity(o.value);
    if (id) incoming.set(id, o); // the last of duplicate documents wins, as with kubectl
  }
  const merged = [
    ...state.objects.filter((o) => {
      const id = objectIdentity(o.value);
      return id === undefined || !incoming.has(id);
    }),
    ...input.objects.filter((o) => {
      const id = objectIdentity(o.value);
      return id === undefined || incoming.get(id) === o;
    }),
  ];
  const built = buildModel(merged, options);
  if (!built.ok) return { ok: false, errors: built.errors };

  const changes: ApplyChange[] = [];
  const rewrites = new Map<string, Map<string, unknown>>();
  for (const [id, obj] of incoming) {
    const old = existing.get(id);
    if (!old) {
      changes.push({ object: id, action: 'created', file: appliedFileName(id) });
    } else if (canonical(old.value) === canonical(obj.value)) {
      changes.push({ object: id, action: 'unchanged', file: old.origin.file });
    } else {
      changes.push({ object: id, action: 'configured', file: old.origin.file });
      let m = rewrites.get(old.origin.file);
      if (!m) {
        m = new Map();
        rewrites.set(old.origin.file, m);
      }
      m.set(id, obj.value);
    }
  }
  if (!dryRun) {
    for (const [file, m] of rewrites) {
      await source.rewriteDocuments(file, (value) => {
        const id = objectIdentity(value);
        return id !== undefined && m.has(id) ? stringify(m.get(id)) : undefined;
      });
    }
    for (const c of changes) {
      if (c.action === 'created')
        await source.writeManifest(c.file, stringify(incoming.get(c.object)!.value));
    }
  }
  return { ok: true, changes };
}
