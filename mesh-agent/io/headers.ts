/**
 * HTTP/1.1 hop-by-hop headers (RFC 9110 section 7.6.1) plus the ones a proxy
 * must never pass on: each hop sets its own. x-forwarded-client-cert is the
 * mesh's own assertion of the caller, so a client-supplied one is dropped.
 */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'x-forwarded-client-cert',
]);
