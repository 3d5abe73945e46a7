/**
 * How a server lets its clients go when the agent hands over to a new one:
 * HTTP/1.1 responses carry `Connection: close` (the client reconnects, and the
 * kernel's listening socket, now served by the new agent, takes it), HTTP/2
 * sessions get GOAWAY, connections that do it themselves (the lean relay) are
 * told. Nothing is cut: requests in flight finish.
 */

import type { Server as HttpServer } from 'node:http';
import { constants, type Http2Session } from 'node:http2';
import type { Duplex } from 'node:stream';

/** GOAWAY is sent twice, as nghttp2 advises: "no new streams soon", then, one RTT later, the real last stream. */
const GOAWAY_GRACE_MS = 1000;

export class ConnectionDrain {
  private on = false;
  private readonly sessions = new Set<Http2Session>();
  private readonly connections = new Map<Duplex, () => void>();

  get draining(): boolean {
    return this.on;
  }

  /** Makes an HTTP/1.1 server answer `Connection: close` once draining. */
  http1(server: HttpServer): void {
    server.prependListener('request', (_req, res) => {
      if (this.on) res.shouldKeepAlive = false;
    });
  }

  /** An HTTP/2 session to send GOAWAY on when draining starts (at once if it already has). */
  h2(session: Http2Session): void {
    if (this.on) {
      goaway(session);
      return;
    }
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
  }

  /** A connection that lets its client go itself (`drain`), told when draining starts (at once if it has). */
  connection(conn: Duplex, drain: () => void): void {
    if (this.on) {
      drain();
      return;
    }
    this.connections.set(conn, drain);
    conn.once('close', () => this.connections.delete(conn));
  }

  start(): void {
    if (this.on) return;
    this.on = true;
    for (const s of this.sessions) goaway(s);
    this.sessions.clear();
    for (const drain of this.connections.values()) drain();
    this.connections.clear();
  }
}

function goaway(s: Http2Session): void {
  if (s.closed || s.destroyed) return;
  try {
    s.goaway(constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
  } catch {
    // the session is going away already
  }
  setTimeout(() => {
    if (!s.closed && !s.destroyed) s.close();
  }, GOAWAY_GRACE_MS).unref();
}
