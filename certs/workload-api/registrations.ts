/**
 * A static registration table for the Workload API server, in the spirit of SPIRE's
 * registration entries: each entry names selectors (facts the kernel reports about
 * the caller) and the SPIFFE IDs a caller matching all of them is entitled to.
 * Pure parsing and matching; the file is read by whoever serves it.
 */
import { isNode, LineCounter, parseDocument } from 'yaml';
import { SockmeshError } from '../../lib/errors.js';
import { checkSpiffeId } from '../spiffe-id.js';

export interface Selectors {
  /** cgroup v2 path (from the cgroup2 root): the caller's cgroup is this one or below it. */
  cgroup?: string;
  uid?: number;
  gid?: number;
}

export interface RegistrationEntry {
  selectors: Selectors;
  /** Canonical SPIFFE IDs, in the order the entry lists them. */
  spiffeIds: string[];
  /** 1-based line of the entry in its file. */
  line: number;
}

export interface RegistrationTable {
  entries: RegistrationEntry[];
  /** Foreign trust domains' bundles: PEM files, relative to the table's directory. */
  federatedBundles: { trustDomain: string; file: string }[];
}

/** What the kernel says about a caller: SO_PEERCRED plus /proc/<pid>/cgroup. */
export interface CallerFacts {
  uid: number;
  gid: number;
  /** null when the process is gone or has no cgroup v2 path. */
  cgroup: string | null;
}

export class RegistrationError extends SockmeshError {
  constructor(file: string, line: number, path: string, reason: string) {
    super('SOCKMESH_E_CONFIG', `${file}:${line}: ${path ? `${path}: ` : ''}${reason}`, {
      hint: 'fix the registration table (see README, "Serving SVIDs to the node agent")',
    });
    this.name = 'RegistrationError';
  }
}

const SELECTOR_KEYS = new Set(['cgroup', 'uid', 'gid']);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseRegistrations(file: string, text: string): RegistrationTable {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const firstError = doc.errors[0];
  if (firstError) {
    throw new RegistrationError(
      file,
      lineCounter.linePos(firstError.pos[0]).line,
      '',
      `YAML syntax: ${firstError.message.split('\n')[0]}`,
    );
  }
  const lineOf = (path: (string | number)[]): number => {
    for (let n = path.length; n >= 0; n--) {
      const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
      if (isNode(node) && node.range) return lineCounter.linePos(node.range[0]).line;
    }
    return 1;
  };
  const fail = (path: (string | number)[], reason: string): never => {
    const shown = path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
    throw new RegistrationError(file, lineOf(path), shown, reason);
  };

  const root: unknown = doc.toJS({ maxAliasCount: 100 });
  if (!isRecord(root)) return fail([], 'expected a mapping with an `entries` list');
  for (const key of Object.keys(root)) {
    if (key !== 'entries' && key !== 'federatedBundles') fail([key], `unknown key '${key}'`);
  }
  if (!Array.isArray(root.entries)) return fail(['entries'], 'expected a list of entries');

  const entries = root.entries.map((raw: unknown, i): RegistrationEntry => {
    const at = ['entries', i];
    if (!isRecord(raw)) return fail(at, 'expected a mapping with selectors and spiffeIds');
    for (const key of Object.keys(raw)) {
      if (key !== 'selectors' && key !== 'spiffeIds') fail([...at, key], `unknown key '${key}'`);
    }
    if (!isRecord(raw.selectors)) return fail([...at, 'selectors'], 'expected a mapping of selectors');
    const selectors: Selectors = {};
    for (const [key, value] of Object.entries(raw.selectors)) {
      const p = [...at, 'selectors', key];
      if (!SELECTOR_KEYS.has(key)) fail(p, `unknown selector (known: ${[...SELECTOR_KEYS].join(', ')})`);
      if (key === 'cgroup') {
        if (typeof value !== 'string' || !value.startsWith('/'))
          fail(p, 'expected an absolute cgroup v2 path such as /kubepods/pod123');
        selectors.cgroup = (value as string).replace(/(.)\/+$/, '$1');
      } else {
        if (!Number.isInteger(value) || (value as number) < 0) fail(p, `${key} must be an integer >= 0`);
        selectors[key as 'uid' | 'gid'] = value as number;
      }
    }
    if (Object.keys(selectors).length === 0) {
      fail([...at, 'selectors'], 'an entry needs at least one selector (cgroup, uid or gid)');
    }
    if (!Array.isArray(raw.spiffeIds) || raw.spiffeIds.length === 0) {
      return fail([...at, 'spiffeIds'], 'expected a non-empty list of SPIFFE IDs');
    }
    const spiffeIds = raw.spiffeIds.map((id: unknown, j) => {
      const p = [...at, 'spiffeIds', j];
      if (typeof id !== 'string') return fail(p, 'expected a SPIFFE ID string');
      const checked = checkSpiffeId(id);
      if (!checked.ok) return fail(p, checked.reason);
      if (checked.id.path === '') return fail(p, 'a trust domain ID cannot name a workload');
      return checked.id.uri;
    });
    return { selectors, spiffeIds, line: lineOf(at) };
  });

  const federatedBundles: RegistrationTable['federatedBundles'] = [];
  if (root.federatedBundles !== undefined) {
    if (!isRecord(root.federatedBundles)) {
      fail(['federatedBundles'], 'expected a mapping of spiffe://<trust domain> to a PEM file');
    }
    for (const [td, f] of Object.entries(root.federatedBundles as Record<string, unknown>)) {
      const p = ['federatedBundles', td];
      const checked = checkSpiffeId(td);
      if (!checked.ok || checked.id.path !== '') return fail(p, 'keys are trust domain IDs (spiffe://<td>)');
      if (typeof f !== 'string' || f === '') fail(p, 'expected the path of a PEM bundle file');
      federatedBundles.push({ trustDomain: checked.id.trustDomain, file: f as string });
    }
  }
  return { entries, federatedBundles };
}

function cgroupMatches(selector: string, cgroup: string | null): boolean {
  if (cgroup === null) return false;
  if (selector === '/') return true;
  return cgroup === selector || cgroup.startsWith(`${selector}/`);
}

function entryMatches(s: Selectors, caller: CallerFacts): boolean {
  if (s.cgroup !== undefined && !cgroupMatches(s.cgroup, caller.cgroup)) return false;
  if (s.uid !== undefined && s.uid !== caller.uid) return false;
  if (s.gid !== undefined && s.gid !== caller.gid) return false;
  return true;
}

/** The SPIFFE IDs a caller is entitled to: every ID of every matching entry, first occurrence first. */
export function entitledSpiffeIds(table: RegistrationTable, caller: CallerFacts): string[] {
  const ids = new Set<string>();
  for (const e of table.entries) {
    if (!entryMatches(e.selectors, caller)) continue;
    for (const id of e.spiffeIds) ids.add(id);
  }
  return [...ids];
}
