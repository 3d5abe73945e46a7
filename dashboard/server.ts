/**
 * The dashboard's HTTP server: the page and its script and style from
 * dashboard/static (nothing from a CDN), the latest snapshot as JSON, and
 * every new one as Server-Sent Events.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SockmeshError } from '../lib/errors.js';
import type { DashboardSnapshot } from './model.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** The static files live next to the sources (dist/ holds only compiled code). */
export const STATIC_DIR = join(HERE, import.meta.url.endsWith('.ts') ? '' : '../../dashboard', 'static');

const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

export class DashboardServer {
  private readonly server: Server;
  private latest: DashboardSnapshot | null = null;
  private readonly streams = new Set<ServerResponse>();

  constructor(private readonly staticDir = STATIC_DIR) {
    this.server = createServer((req, res) => this.route(req, res));
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    this.server.listen(port, host);
    try {
      await Promise.race([
        once(this.server, 'listening'),
        once(this.server, 'error').then(([e]) => Promise.reject(e)),
      ]);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new SockmeshError(
        'SOCKMESH_E_CONFIG',
        `cannot serve the dashboard on ${host}:${port}: ${code ?? cause}`,
        {
          hint: code === 'EADDRINUSE' ? 'choose another --port (0 picks a free one)' : 'check --host',
          cause,
        },
      );
    }
    return this.server.address() as AddressInfo;
  }

  /** A new snapshot: kept for /api/snapshot and pushed to every open event stream. */
  update(s: DashboardSnapshot): void {
    this.latest = s;
    const line = `data: ${JSON.stringify(s)}\n\n`;
    for (const res of this.streams) res.write(line);
  }

  async close(): Promise<void> {
    for (const res of this.streams) res.end();
    this.streams.clear();
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    await closed;
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const f = FILES[path];
    if (f) {
      let body: Buffer;
      try {
        body = readFileSync(join(this.staticDir, f.file));
      } catch (err) {
        res
          .writeHead(500, { 'content-type': 'text/plain' })
          .end(`dashboard file missing: ${(err as Error).message}\n`);
        return;
      }
      res.writeHead(200, {
        'content-type': f.type,
        'content-length': body.length,
        'cache-control': 'no-cache',
      });
      res.end(body);
      return;
    }
    if (path === '/api/snapshot') {
      const text = JSON.stringify(this.latest);
      res.writeHead(this.latest ? 200 : 503, { 'content-type': 'application/json' }).end(text);
      return;
    }
    if (path === '/api/events') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
      });
      if (this.latest) res.write(`data: ${JSON.stringify(this.latest)}\n\n`);
      this.streams.add(res);
      req.on('close', () => this.streams.delete(res));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /, /api/snapshot, /api/events\n');
  }
}
