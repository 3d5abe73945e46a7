/**
 * The agent's port 15020: Prometheus metrics, liveness, readiness and a JSON
 * view of the config in force. One node:http server.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isSockmeshError, SockmeshError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';

export const METRICS_PORT = 15020;

/** Prometheus text format 0.0.4 (the exporter itself says only `text/plain`). */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface AdminHandlers {
  /** The Prometheus exposition text. */
  metrics(): Promise<string>;
  readiness(): { ready: boolean; reason: string };
  configDump(): unknown;
  /** Extra read-only JSON views by path (e.g. `/explain/outbound`); undefined when none serves it. */
  view?(path: string): ((query: URLSearchParams) => unknown) | undefined;
  /** Kernel TCP health per workload pair (/stats/tcp). */
  tcpHealth(): unknown;
}

export class AdminServer {
  private readonly server: Server;

  constructor(
    private readonly handlers: AdminHandlers,
    private readonly log: Logger,
  ) {
    this.server = createServer((req, res) => this.route(req, res));
    // Scrapes are short; do not let an idle keep-alive scraper hold close() up.
    this.server.keepAliveTimeout = 5000;
    this.server.on('error', (err) => {
      if (this.server.listening) this.log.warn('metrics server error', { err });
    });
  }

  /** `fd`: an already listening socket (handed over by the agent this one replaces). */
  async listen(port: number, host: string, fd?: number): Promise<AddressInfo> {
    const ac = new AbortController();
    this.server.listen(fd === undefined ? { port, host } : { fd });
    try {
      await Promise.race([
        once(this.server, 'listening', { signal: ac.signal }),
        once(this.server, 'error', { signal: ac.signal }).then(([e]) => Promise.reject(e)),
      ]);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new SockmeshError(
        'SOCKMESH_E_CONFIG',
        `cannot serve metrics on ${host}:${port}: ${code ?? cause}`,
        {
          hint:
            code === 'EADDRINUSE'
              ? `another process holds ${host}:${port}; stop it or choose another metrics port`
              : 'check the metrics address belongs to this node',
          cause,
        },
      );
    } finally {
      ac.abort(); // drop the listener of the race that was lost
    }
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    await closed;
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const q = req.url?.indexOf('?') ?? -1;
    const path = q >= 0 ? req.url!.slice(0, q) : (req.url ?? '/');
    switch (path) {
      case '/metrics':
      case '/stats/prometheus':
        this.handlers.metrics().then(
          (text) => {
            res.writeHead(200, {
              'content-type': PROMETHEUS_CONTENT_TYPE,
              'content-length': Buffer.byteLength(text),
            });
            res.end(text);
          },
          (err: unknown) => {
            this.log.warn('metrics collection failed', { err });
            sendJson(res, 500, { error: String(err) });
          },
        );
        return;
      case '/healthz':
        sendJson(res, 200, { status: 'ok' });
        return;
      case '/ready':
      case '/healthz/ready': {
        const r = this.handlers.readiness();
        sendJson(res, r.ready ? 200 : 503, r);
        return;
      }
      case '/stats/tcp':
      case '/stats/config': {
        let body: unknown;
        try {
          body = path === '/stats/tcp' ? this.handlers.tcpHealth() : this.handlers.configDump();
        } catch (err) {
          this.log.warn(`${path} failed`, { err });
          sendJson(res, 500, { error: String(err) });
          return;
        }
        sendJson(res, 200, body ?? {});
        return;
      }
      default: {
        const view = this.handlers.view?.(path);
        if (view) {
          let body: unknown;
          try {
            body = view(new URLSearchParams(q >= 0 ? req.url!.slice(q + 1) : ''));
          } catch (err) {
            // A bad query names what is wrong (400); anything else is the agent's fault (500).
            const usage = isSockmeshError(err) && err.code === 'SOCKMESH_E_USAGE';
            if (!usage) this.log.warn('admin view failed', { path, err });
            sendJson(res, usage ? 400 : 500, { error: isSockmeshError(err) ? err.describe() : String(err) });
            return;
          }
          sendJson(res, 200, body ?? {});
          return;
        }
        sendJson(res, 404, {
          error: 'not found',
          paths: [
            '/metrics',
            '/healthz',
            '/ready',
            '/stats/config',
            '/stats/tcp',
            '/explain/outbound',
            '/explain/inbound',
            '/kernel/policy',
          ],
        });
      }
    }
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
