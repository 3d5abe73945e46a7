/**
 * AuthorizationPolicy -> envoy.config.rbac.v3.RBAC, Istio's layering: the
 * DENY filter runs first; then, if any ALLOW policy selects the workload, the
 * request must match one of them. Principals are SPIFFE IDs (the client's
 * certificate URI SAN); namespaces become SPIFFE ID prefixes.
 */
import type {
  AuthorizationPolicy,
  AuthzOperation,
  AuthzSource,
  MeshModel,
  Workload,
} from '../model/types.js';
import { objectKey } from '../model/types.js';
import { NETWORK_RBAC_TYPE } from '../protos.js';
import { selects } from './endpoints.js';
import type { Json } from './envoy.js';

export function policiesFor(model: MeshModel, w: Workload): AuthorizationPolicy[] {
  return model.authorizationPolicies.filter((p) => {
    if (p.namespace !== w.namespace) return false;
    if (p.targetRef) {
      const svc = model.services.get(objectKey(p.targetRef.namespace, p.targetRef.name));
      return svc !== undefined && selects(svc.selector, w.labels);
    }
    if (p.selector) return Object.entries(p.selector).every(([k, v]) => w.labels[k] === v);
    return true;
  });
}

/** The network RBAC filters for one workload, DENY before ALLOW; none when no policy applies. */
export function rbacFilters(model: MeshModel, w: Workload, statPrefix: string): Json[] {
  const policies = policiesFor(model, w);
  const out: Json[] = [];
  for (const action of ['DENY', 'ALLOW'] as const) {
    const selected = policies.filter((p) => p.action === action);
    if (selected.length === 0) continue;
    const rules: Json = {};
    for (const p of selected) {
      p.rules.forEach((rule, i) => {
        rules[`${p.namespace}/${p.name}/rule-${i}`] = {
          permissions: rule.to.length === 0 ? [{ any: true }] : rule.to.map(permission),
          principals:
            rule.from.length === 0 ? [{ any: true }] : rule.from.map((s) => principal(model.trustDomain, s)),
        };
      });
    }
    out.push(rbacFilter(action, rules, `${statPrefix}${action.toLowerCase()}_`));
  }
  return out;
}

/** An RBAC filter; ALLOW with no policies denies everything. */
export function rbacFilter(action: 'ALLOW' | 'DENY', policies: Json, statPrefix: string): Json {
  return {
    name: 'envoy.filters.network.rbac',
    typed_config: { '@type': NETWORK_RBAC_TYPE, stat_prefix: statPrefix, rules: { action, policies } },
  };
}

/** `*` -> anything; `x*` -> prefix; `*x` -> suffix; else exact. */
function wildcard(s: string): Json {
  if (s === '*') return { safe_regex: { regex: '.+' } };
  if (s.endsWith('*')) return { prefix: s.slice(0, -1) };
  if (s.startsWith('*')) return { suffix: s.slice(1) };
  return { exact: s };
}

function anyOf<T extends 'rules' | 'ids'>(items: Json[], key: T): Json {
  return items.length === 1 ? items[0]! : { [key === 'rules' ? 'or_rules' : 'or_ids']: { [key]: items } };
}

function allOf<T extends 'rules' | 'ids'>(items: Json[], key: T): Json {
  return items.length === 1 ? items[0]! : { [key === 'rules' ? 'and_rules' : 'and_ids']: { [key]: items } };
}

function permission(op: AuthzOperation): Json {
  const parts: Json[] = [];
  if (op.ports.length > 0)
    parts.push(
      anyOf(
        op.ports.map((p) => ({ destination_port: p })),
        'rules',
      ),
    );
  if (op.methods.length > 0) {
    parts.push(
      anyOf(
        op.methods.map((m) => ({ header: { name: ':method', string_match: { exact: m } } })),
        'rules',
      ),
    );
  }
  if (op.paths.length > 0)
    parts.push(
      anyOf(
        op.paths.map((p) => ({ url_path: { path: wildcard(p) } })),
        'rules',
      ),
    );
  return allOf(parts, 'rules');
}

function principal(trustDomain: string, src: AuthzSource): Json {
  const parts: Json[] = [];
  if (src.principals.length > 0) {
    parts.push(
      anyOf(
        src.principals.map((p) => ({ authenticated: { principal_name: wildcard(p) } })),
        'ids',
      ),
    );
  }
  if (src.namespaces.length > 0) {
    parts.push(
      anyOf(
        src.namespaces.map((ns) => ({
          authenticated: { principal_name: { prefix: `spiffe://${trustDomain}/ns/${ns}/sa/` } },
        })),
        'ids',
      ),
    );
  }
  return allOf(parts, 'ids');
}
