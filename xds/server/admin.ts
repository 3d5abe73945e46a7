/**
 * The control plane's admin endpoint, HTTP/1.1 on a unix socket or loopback:
 *   POST /v1/apply[?dryRun=true]   body: YAML documents -> ApplyResult (+ version)
 *   GET  /v1/status                 -> { version, clients }
 *   GET  /v1/config?node=<name>     -> the decoded resources that node receives
 *   GET  /v1/canary                 -> { guards }: each CanaryGuard's state and last decision
 *   GET  /metrics                   -> the control plane's canary, status-write and leader metrics (Prometheus text)
 * It has no authentication of its own: keep it on a socket only root can reach.
 */
import { rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { SockmeshError } from '../../lib/errors.js';
import { decodeResource } from '../codec.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../protos.js';
import { formatConfigError } from '../sources/source.js';
import type { ControlPlane } from './control-plane.js';

const MAX_BODY = 8 * 1024 * 1024;

export class AdminServer {
  private readonly server: Server;
  private bound: string | undefined;

  constructor(private readonly cp: ControlPlane) {
    this.server = createServer((req, res) => {
      this.route(req, res).catch((err: unknown) => send(res, 500, { error: (err as Error).message }));
    });
  }

  /** `unix:/path` or `127.0.0.1:port` (loopback only). Resolves to the bound address. */
  async listen(address: string): Promise<string> {
    if (address.startsWith('unix:')) {
      const p = address.slice(5);
      await rm(p, { force: true });
      await new Promise<void>((resolve, reject) => this.server.once('error', reject).listen(p, resolve));
      this.bound = address;
    } else {
      const i = address.lastIndexOf(':');
      const host = address.slice(0, i);
      if (!(host.startsWith('127.') || host === 'localhost' || host === '[::1]' || host === '::1')) {
        throw new SockmeshError(
          'SOCKMESH_E_CONFIG',
          `the admin endpoint must be loopback or unix:, got ${address}`,
          {
            hint: 'use --admin unix:/run/sockmesh/control-plane.sock',
          },
        );
      }
      await new Promise<void>((resolve, reject) =>
        this.server
          .once('error', reject)
          .listen(Number(address.slice(i + 1)), host.replace(/^\[|\]$/g, ''), resolve),
      );
      const a = this.server.address();
      this.bound = typeof a === 'object' && a ? `${host}:${a.port}` : address;
    }
    return this.bound;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.bound?.startsWith('unix:')) await rm(this.bound.slice(5), { force: true });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    if (req.method === 'POST' && url.pathname === '/v1/apply') {
      const body = await readBody(req);
      if (body === undefined) {
        const reason = `the request body is over ${MAX_BODY} bytes: split the manifests into several applies`;
        send(res, 413, {
          applied: false,
          version: this.cp.snapshot?.version,
          errors: [{ file: '<apply>', line: 0, path: '', reason }],
          messages: [`<apply>: ${reason}`],
        });
        return;
      }
      const dryRun = url.searchParams.get('dryRun') === 'true';
      const r = await this.cp.apply(body, { dryRun });
      if (!r.ok) {
        // 400: the body is not readable manifests; 422: they are, but invalid.
        send(res, r.malformed ? 400 : 422, {
          applied: false,
          version: this.cp.snapshot?.version,
          errors: r.errors,
          messages: r.errors.map(formatConfigError),
        });
        return;
      }
      send(res, 200, { applied: !dryRun, dryRun, version: r.version, changes: r.changes });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/v1/status') {
      send(res, 200, { version: this.cp.snapshot?.version, clients: this.cp.ads.clients() });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/v1/canary') {
      send(res, 200, { version: this.cp.snapshot?.version, guards: this.cp.canary.status() });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/metrics') {
      const text = this.cp.metrics();
      res.writeHead(200, {
        'content-type': 'text/plain; version=0.0.4',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/v1/config') {
      const snap = this.cp.snapshot;
      const node = url.searchParams.get('node') ?? '';
      if (!snap) {
        send(res, 503, { error: 'no configuration loaded yet' });
        return;
      }
      const dump = (
        t: typeof LISTENER_TYPE | typeof ROUTE_TYPE | typeof CLUSTER_TYPE | typeof ENDPOINT_TYPE,
      ) => [...snap.wildcard(t, node).values()].map((r) => decodeResource(t, r.bytes));
      send(res, 200, {
        version: snap.version,
        node,
        listeners: dump(LISTENER_TYPE),
        routes: dump(ROUTE_TYPE),
        clusters: dump(CLUSTER_TYPE),
        endpoints: dump(ENDPOINT_TYPE),
      });
      return;
    }
    send(res, 404, { error: `no such endpoint: ${req.method} ${url.pathname}` });
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The body as text, or undefined when it is over MAX_BODY (the rest is read and dropped, so the answer arrives). */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size <= MAX_BODY) chunks.push(c as Buffer);
  }
  return size > MAX_BODY ? undefined : Buffer.concat(chunks).toString('utf8');
}
