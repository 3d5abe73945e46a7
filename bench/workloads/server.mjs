// Benchmark server run in every server pod: HTTP/1.1 with a fixed 1 KiB body (PORT_HTTP, two ports),
// a bulk sink that answers with the byte count after an end marker (PORT_BULK), and an echo
// server for the connection-scale scenario (PORT_ECHO). Plain node:http/net, no framework.
import { createServer as createHttp } from 'node:http';
import { createServer as createTcp } from 'node:net';

const BODY = Buffer.alloc(1024, 0x78);
const host = process.env.HOST ?? '0.0.0.0';

const answer = (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
    res.end(BODY);
  });
};
// Two HTTP ports: 8080 behind the HTTP Services, 8081 behind the TCP one, so the destination
// node's agent cannot treat the L4 path's port as HTTP because another Service declares it so.
for (const port of (process.env.PORT_HTTP ?? '8080,8081').split(',')) {
  const http = createHttp({ keepAliveTimeout: 120_000 }, answer);
  http.headersTimeout = 0;
  http.requestTimeout = 0;
  http.listen(Number(port), host);
}

createTcp((sock) => {
  let total = 0;
  // Payload bytes are never 'E'; a chunk ending in 'E' is the end marker (no reliance on half-close).
  const report = () => {
    const out = Buffer.alloc(8);
    out.writeBigUInt64LE(BigInt(total));
    sock.end(out);
  };
  sock.on('data', (b) => {
    total += b.length;
    if (b[b.length - 1] === 0x45) report();
  });
  sock.on('end', () => {
    if (!sock.writableEnded) report();
  });
  sock.on('error', () => {});
}).listen(Number(process.env.PORT_BULK ?? 5201), host);

createTcp((sock) => {
  sock.setNoDelay(true);
  sock.pipe(sock);
  sock.on('error', () => {});
}).listen({ port: Number(process.env.PORT_ECHO ?? 7000), host, backlog: 4096 });

process.stdout.write('{"listening":true}\n');
