/** The request's hash key for ring-hash load balancing, from the route's hash_policy. */
import { headerValue, parseQuery } from './select.js';
import type { HashPolicy, HttpRequest } from './types.js';

/**
 * Envoy hashes each policy that yields a value, in order, stopping after a
 * terminal one that matched. The parts are joined into one key string here;
 * undefined means no policy produced a value (the balancer picks at random).
 */
export function hashKeyFor(
  policies: readonly HashPolicy[],
  req: HttpRequest,
  sourceIp: string | undefined,
): string | undefined {
  const parts: string[] = [];
  let query: ReadonlyMap<string, readonly string[]> | undefined = req.query;
  for (const p of policies) {
    let value: string | undefined;
    if (p.kind === 'header') value = headerValue(req, p.name);
    else if (p.kind === 'query') {
      query ??= parseQuery(req.path);
      value = query.get(p.name)?.[0];
    } else value = sourceIp;
    if (value === undefined) continue;
    parts.push(value);
    if (p.terminal) break;
  }
  return parts.length === 0 ? undefined : parts.join('\u0000');
}
