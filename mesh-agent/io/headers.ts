/**
 * HTTP/1.1 hop-by-hop headers (RFC 9110 section 7.6.1, and RFC 2616's list:
 * the Proxy-* credentials are for the proxy they were sent to) plus the ones
 * a proxy must never pass on: each hop sets its own. HTTP2-Settings only ever
 * comes with an `Upgrade: h2c`, which is not passed on either (h2c smuggling).
 * x-forwarded-client-cert is the mesh's own assertion of the caller, so a
 * client-supplied one is dropped.
 */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'http2-settings',
  'x-forwarded-client-cert',
]);

type Headers = Record<string, string | string[] | undefined>;

/** The headers to pass on to the next hop: without HOP_BY_HOP and without those the Connection header names. */
export function endToEnd(headers: Readonly<Headers>): Record<string, string | string[]> {
  const listed = new Set<string>();
  for (const v of [headers.connection ?? []].flat())
    for (const name of v.split(',')) listed.add(name.trim().toLowerCase());
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers))
    if (v !== undefined && !HOP_BY_HOP.has(k) && !listed.has(k)) out[k] = v;
  return out;
}

/**
 * endToEnd in place, for a header object this hop owns already (the route's copy): no second
 * copy per request, and nothing deleted that is not there (a delete turns the object into a slow
 * dictionary).
 */
export function dropHopByHop(headers: Headers): void {
  const connection = headers.connection;
  if (connection !== undefined)
    for (const v of typeof connection === 'string' ? [connection] : connection)
      for (const name of v.split(',')) {
        const n = name.trim().toLowerCase();
        if (n !== '' && headers[n] !== undefined) delete headers[n];
      }
  for (const name of HOP_BY_HOP) if (headers[name] !== undefined) delete headers[name];
}
