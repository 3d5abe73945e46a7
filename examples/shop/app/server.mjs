#!/usr/bin/env node
// The example workload: answers JSON naming itself and the caller's SPIFFE ID as the mesh delivered it
// (x-forwarded-client-cert). The frontend also calls its upstreams and includes their answers.
// Test knobs: ?status=<code> answers that status, ?delay=<ms> waits first (at most 10 s);
// PUT /control/fail?on=true makes every answer a 503 (HTTP/1.1, h2c and gRPC) until PUT /control/fail?on=false.
import http from 'node:http';
import http2 from 'node:http2';

const me = {
  service: process.env.SERVICE ?? 'unknown',
  version: process.env.VERSION ?? 'v1',
  pod: process.env.POD_NAME ?? 'unknown',
  namespace: process.env.POD_NAMESPACE ?? 'default',
  node: process.env.NODE_NAME ?? 'unknown',
};
const port = Number(process.env.PORT ?? 8080);
const upstreams = (process.env.UPSTREAMS ?? '').split(',').filter(Boolean);
let failing = false;

function callerOf(req) {
  const xfcc = req.headers['x-forwarded-client-cert'];
  const m = typeof xfcc === 'string' ? /URI=([^;,]+)/.exec(xfcc) : null;
  return m ? m[1] : null;
}

async function callUpstream(url, headers) {
  const started = performance.now();
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text.trim();
    }
    return { url, status: res.status, ms: Math.round((performance.now() - started) * 10) / 10, body };
  } catch (err) {
    return { url, status: 0, error: err.cause?.code ?? err.message };
  }
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://local');
  if (url.pathname === '/healthz') {
    res.end('ok\n');
    return;
  }
  if (url.pathname === '/control/fail' && req.method === 'PUT') {
    failing = url.searchParams.get('on') === 'true';
    res.end(`failing=${failing}\n`);
    return;
  }
  const delay = Math.min(Number(url.searchParams.get('delay') ?? 0), 10_000);
  if (delay > 0) await new Promise((r) => setTimeout(r, delay));
  const status = failing ? 503 : Number(url.searchParams.get('status') ?? 200);
  const pass = {};
  for (const h of ['x-canary', 'traceparent', 'baggage']) if (req.headers[h]) pass[h] = req.headers[h];
  const calls = upstreams.length ? await Promise.all(upstreams.map((u) => callUpstream(u, pass))) : undefined;
  const body = { ...me, path: url.pathname, caller: callerOf(req), ...(calls ? { upstreams: calls } : {}) };
  res.writeHead(status >= 100 && status < 600 ? status : 500, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body)}\n`);
});
server.keepAliveTimeout = 30_000;
server.listen(port, '0.0.0.0', () =>
  process.stderr.write(`${me.service} ${me.version} listening on ${port}\n`),
);
// The same answer over h2c (HTTP/2 without TLS, as gRPC speaks it) when H2C_PORT is set. A gRPC call
// (content-type application/grpc, any method) gets it as one length-prefixed message and grpc-status 0,
// so a real gRPC client (a channel of @grpc/grpc-js, grpc-go) can call it with a raw-bytes codec.
if (process.env.H2C_PORT) {
  http2
    .createServer((req, res) => {
      const answer = Buffer.from(
        JSON.stringify({ ...me, protocol: 'h2c', path: req.url, caller: callerOf(req) }),
      );
      // Failing (PUT /control/fail on the HTTP port) holds for h2c and gRPC too: HTTP 503, which a
      // gRPC client reads as UNAVAILABLE.
      if (failing) {
        req.resume();
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(`${answer}\n`);
        return;
      }
      if (String(req.headers['content-type'] ?? '').startsWith('application/grpc')) {
        req.resume();
        req.on('end', () => {
          const prefix = Buffer.alloc(5);
          prefix.writeUInt32BE(answer.length, 1);
          res.setHeader('content-type', 'application/grpc');
          res.addTrailers({ 'grpc-status': '0' });
          res.end(Buffer.concat([prefix, answer]));
        });
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(`${answer}\n`);
    })
    .listen(Number(process.env.H2C_PORT), '0.0.0.0');
}
process.on('SIGTERM', () => server.close(() => process.exit(0)));
