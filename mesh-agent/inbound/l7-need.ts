/**
 * Whether the destination node must parse HTTP on a (workload, port), or may
 * relay the tunnel stream to the pod as bytes (ztunnel without a waypoint).
 * Only authorization reads requests on this side: the caller's node routes,
 * records the request (metrics, access log, span) and writes the caller's
 * x-forwarded-client-cert. So L7 is needed exactly when a deciding RBAC policy
 * could look at method, path or headers on that port.
 */
import { type Permission, type RbacConfig, readsHttp } from '../authz/rbac.js';

/** Could this permission match a connection to `port`? Conservative under `not` (true). */
function mayMatchPort(p: Permission, port: number): boolean {
  switch (p.kind) {
    case 'destination-port':
      return p.port === port;
    case 'destination-port-range':
      return port >= p.start && port < p.end;
    case 'and':
      return p.rules.every((r) => mayMatchPort(r, port));
    case 'or':
      return p.rules.some((r) => mayMatchPort(r, port));
    default:
      return true;
  }
}

/** An HTTP condition somewhere in the tree, under any number of `not`s. */
function permissionReadsHttp(p: Permission, port: number): boolean {
  switch (p.kind) {
    case 'header':
    case 'url-path':
      return true;
    case 'and':
      // A conjunction that cannot match this port never decides here, whatever it reads.
      return mayMatchPort(p, port) && p.rules.some((r) => permissionReadsHttp(r, port));
    case 'or':
      return p.rules.some((r) => permissionReadsHttp(r, port));
    case 'not':
      return readsHttp(p.rule);
    default:
      return false;
  }
}

/**
 * True when some ALLOW or DENY policy of `configs` may apply to `port` and
 * has a method, path or header condition in its permissions or principals.
 * LOG policies never decide and are ignored. Erring towards true only costs
 * a parse; erring towards false would read an HTTP rule the TCP way.
 */
export function rbacNeedsHttp(configs: readonly RbacConfig[], port: number): boolean {
  for (const c of configs) {
    if (c.action === 'LOG') continue;
    for (const pol of c.policies) {
      const onPort = pol.permissions.filter((p) => mayMatchPort(p, port));
      if (onPort.length === 0) continue;
      if (onPort.some((p) => permissionReadsHttp(p, port))) return true;
      if (pol.principals.some(readsHttp)) return true;
    }
  }
  return false;
}
