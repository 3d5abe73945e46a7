/**
 * envoy.config.rbac.v3.RBAC decoded into matcher trees. Accepts the bare RBAC
 * message or the network/HTTP RBAC filter config that wraps it in `rules`.
 */
import { parseHeaderMatcher } from '../routing/config.js';
import { parseStringMatcher, type StringMatcher } from '../routing/string-match.js';
import type { HeaderMatcher } from '../routing/types.js';
import {
  anyTypeName,
  decodeError,
  isRecord,
  list,
  obj,
  optBool,
  optEnum,
  optUint,
  str,
  type Wire,
} from '../state/wire.js';

export type Permission =
  | { kind: 'any' }
  | { kind: 'and'; rules: readonly Permission[] }
  | { kind: 'or'; rules: readonly Permission[] }
  | { kind: 'not'; rule: Permission }
  | { kind: 'destination-port'; port: number }
  | { kind: 'destination-port-range'; start: number; end: number }
  | { kind: 'header'; matcher: HeaderMatcher }
  | { kind: 'url-path'; matcher: StringMatcher };

export type Principal =
  | { kind: 'any' }
  | { kind: 'and'; ids: readonly Principal[] }
  | { kind: 'or'; ids: readonly Principal[] }
  | { kind: 'not'; id: Principal }
  /** A verified peer certificate; with a matcher, on its SPIFFE ID (URI SAN). */
  | { kind: 'authenticated'; principalName: StringMatcher | undefined }
  /** sockmesh metadata about the source, e.g. `source.namespace`. */
  | { kind: 'metadata'; key: MetadataKey; matcher: StringMatcher }
  | { kind: 'header'; matcher: HeaderMatcher }
  | { kind: 'url-path'; matcher: StringMatcher };

export interface RbacPolicy {
  name: string;
  permissions: readonly Permission[];
  principals: readonly Principal[];
}

export interface RbacConfig {
  /** LOG policies never decide; they are kept for a shadow log. */
  action: 'ALLOW' | 'DENY' | 'LOG';
  policies: readonly RbacPolicy[];
}

/** The metadata filter namespace a principal.metadata matcher must use. */
export const SOCKMESH_METADATA_FILTER = 'sockmesh';

/** The keys a principal.metadata matcher may read under that filter. */
export const METADATA_KEYS = ['source.namespace'] as const;
export type MetadataKey = (typeof METADATA_KEYS)[number];

const FILTER_FIELDS = [
  'rules',
  'stat_prefix',
  'shadow_rules',
  'shadow_rules_stat_prefix',
  'matcher',
  'shadow_matcher',
];

/** True for a network or HTTP RBAC filter config (which wraps the RBAC message in `rules`). */
export function isRbacFilter(v: Wire): boolean {
  const type = anyTypeName(v);
  if (type !== undefined) return type !== 'envoy.config.rbac.v3.RBAC' && type.endsWith('.RBAC');
  return FILTER_FIELDS.some((f) => v[f] != null);
}

/**
 * An RBAC filter config: its `rules`, or undefined when it has none (Envoy
 * then enforces nothing). A bare RBAC message is accepted too.
 */
export function parseRbacFilter(v: unknown, path = 'RBAC'): RbacConfig | undefined {
  const r = obj(v, path);
  if (!isRbacFilter(r)) return parseRbac(r, path);
  if (r.matcher != null)
    throw decodeError(`${path}.matcher`, 'matcher-based RBAC is not supported; use rules');
  return r.rules == null ? undefined : parseRbac(r.rules, `${path}.rules`);
}

/** envoy.config.rbac.v3.RBAC (the message itself, not a filter config). */
export function parseRbac(v: unknown, path = 'RBAC'): RbacConfig {
  const r = obj(v, path);
  const action = optEnum(r.action, `${path}.action`, ['ALLOW', 'DENY', 'LOG'] as const) ?? 'ALLOW';
  const raw = r.policies == null ? {} : obj(r.policies, `${path}.policies`);
  const policies = Object.keys(raw)
    .sort()
    .map((name) => {
      const at = `${path}.policies[${JSON.stringify(name)}]`;
      const p = obj(raw[name], at);
      if (p.condition != null || p.checked_condition != null) {
        throw decodeError(`${at}.condition`, 'CEL conditions are not supported by sockmesh');
      }
      return {
        name,
        permissions: list(p.permissions, `${at}.permissions`).map((x, i) =>
          parsePermission(x, `${at}.permissions[${i}]`),
        ),
        principals: list(p.principals, `${at}.principals`).map((x, i) =>
          parsePrincipal(x, `${at}.principals[${i}]`),
        ),
      };
    });
  return { action, policies };
}

/** Only `path` is read from envoy.type.matcher.v3.PathMatcher. */
function parsePathMatcher(v: unknown, path: string): StringMatcher {
  const m = obj(v, path);
  return parseStringMatcher(m.path, `${path}.path`);
}

function setList(v: unknown, field: string, path: string): readonly unknown[] {
  const s = obj(v, path);
  return list(s[field], `${path}.${field}`);
}

function parsePermission(v: unknown, path: string): Permission {
  const p: Wire = obj(v, path);
  if (p.any != null) {
    if (optBool(p.any, `${path}.any`) !== true) throw decodeError(`${path}.any`, 'must be true');
    return { kind: 'any' };
  }
  if (p.and_rules != null) {
    const rules = setList(p.and_rules, 'rules', `${path}.and_rules`);
    return { kind: 'and', rules: rules.map((x, i) => parsePermission(x, `${path}.and_rules.rules[${i}]`)) };
  }
  if (p.or_rules != null) {
    const rules = setList(p.or_rules, 'rules', `${path}.or_rules`);
    return { kind: 'or', rules: rules.map((x, i) => parsePermission(x, `${path}.or_rules.rules[${i}]`)) };
  }
  if (p.not_rule != null) return { kind: 'not', rule: parsePermission(p.not_rule, `${path}.not_rule`) };
  if (p.destination_port != null) {
    return {
      kind: 'destination-port',
      port: optUint(p.destination_port, `${path}.destination_port`, 65535) ?? 0,
    };
  }
  if (p.destination_port_range != null) {
    const r = obj(p.destination_port_range, `${path}.destination_port_range`);
    const start = optUint(r.start, `${path}.destination_port_range.start`, 65536) ?? 0;
    const end = optUint(r.end, `${path}.destination_port_range.end`, 65536) ?? 0;
    return { kind: 'destination-port-range', start, end };
  }
  if (p.header != null) return { kind: 'header', matcher: parseHeaderMatcher(p.header, `${path}.header`) };
  if (p.url_path != null)
    return { kind: 'url-path', matcher: parsePathMatcher(p.url_path, `${path}.url_path`) };
  throw decodeError(path, `unsupported permission ${describeKeys(p)}`);
}

function parsePrincipal(v: unknown, path: string): Principal {
  const p: Wire = obj(v, path);
  if (p.any != null) {
    if (optBool(p.any, `${path}.any`) !== true) throw decodeError(`${path}.any`, 'must be true');
    return { kind: 'any' };
  }
  if (p.and_ids != null) {
    const ids = setList(p.and_ids, 'ids', `${path}.and_ids`);
    return { kind: 'and', ids: ids.map((x, i) => parsePrincipal(x, `${path}.and_ids.ids[${i}]`)) };
  }
  if (p.or_ids != null) {
    const ids = setList(p.or_ids, 'ids', `${path}.or_ids`);
    return { kind: 'or', ids: ids.map((x, i) => parsePrincipal(x, `${path}.or_ids.ids[${i}]`)) };
  }
  if (p.not_id != null) return { kind: 'not', id: parsePrincipal(p.not_id, `${path}.not_id`) };
  if (p.authenticated != null) {
    const a = obj(p.authenticated, `${path}.authenticated`);
    const principalName =
      a.principal_name == null
        ? undefined
        : parseStringMatcher(a.principal_name, `${path}.authenticated.principal_name`);
    return { kind: 'authenticated', principalName };
  }
  if (p.metadata != null) return parseMetadataPrincipal(p.metadata, `${path}.metadata`);
  if (p.header != null) return { kind: 'header', matcher: parseHeaderMatcher(p.header, `${path}.header`) };
  if (p.url_path != null)
    return { kind: 'url-path', matcher: parsePathMatcher(p.url_path, `${path}.url_path`) };
  throw decodeError(path, `unsupported principal ${describeKeys(p)}`);
}

/** envoy.type.matcher.v3.MetadataMatcher on filter `sockmesh`, one path key, a string value. */
function parseMetadataPrincipal(v: unknown, path: string): Principal {
  const m = obj(v, path);
  const filter = str(m.filter, `${path}.filter`);
  if (filter !== SOCKMESH_METADATA_FILTER) {
    throw decodeError(
      `${path}.filter`,
      `only the ${JSON.stringify(SOCKMESH_METADATA_FILTER)} metadata filter is known`,
    );
  }
  const segs = list(m.path, `${path}.path`);
  const first = segs[0];
  if (segs.length !== 1 || !isRecord(first))
    throw decodeError(`${path}.path`, 'expected exactly one { key } segment');
  const key = str(first.key, `${path}.path[0].key`);
  if (!(METADATA_KEYS as readonly string[]).includes(key)) {
    throw decodeError(
      `${path}.path[0].key`,
      `unknown key ${JSON.stringify(key)}; known: ${METADATA_KEYS.join(', ')}`,
    );
  }
  const value = obj(m.value, `${path}.value`);
  if (value.string_match == null)
    throw decodeError(`${path}.value`, 'only string_match values are supported');
  const matcher = parseStringMatcher(value.string_match, `${path}.value.string_match`);
  const inverted = optBool(m.invert, `${path}.invert`) ?? false;
  const principal: Principal = { kind: 'metadata', key: key as MetadataKey, matcher };
  return inverted ? { kind: 'not', id: principal } : principal;
}

function describeKeys(p: Wire): string {
  const keys = Object.keys(p).filter((k) => k !== 'rule' && k !== 'identifier');
  return keys.length === 0 ? '(empty)' : keys.join(', ');
}

/** Whether a permission or principal reads the request (method, path, headers): only HTTP can answer it. */
export function readsHttp(p: Permission | Principal): boolean {
  switch (p.kind) {
    case 'header':
    case 'url-path':
      return true;
    case 'and':
    case 'or':
      return 'rules' in p ? p.rules.some(readsHttp) : p.ids.some(readsHttp);
    case 'not':
      return 'rule' in p ? readsHttp(p.rule) : readsHttp(p.id);
    default:
      return false;
  }
}
