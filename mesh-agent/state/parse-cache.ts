/**
 * Parsed resources by the identity of the decoded object they came from. The
 * xDS client keeps the objects of types that did not change, and validation
 * runs before apply, so each resource is parsed once however many snapshots
 * it takes part in. Parsed values are never mutated, so sharing is safe; the
 * WeakMaps let both sides be collected together.
 */
type Parser<T> = (v: unknown, path: string) => T;

const caches = new WeakMap<Parser<unknown>, WeakMap<object, unknown>>();

export function parseCached<T>(parse: Parser<T>, raw: unknown, path: string): T {
  if (typeof raw !== 'object' || raw === null) return parse(raw, path);
  let cache = caches.get(parse as Parser<unknown>);
  if (!cache) {
    cache = new WeakMap();
    caches.set(parse as Parser<unknown>, cache);
  }
  if (cache.has(raw)) return cache.get(raw) as T;
  const parsed = parse(raw, path);
  cache.set(raw, parsed);
  return parsed;
}
