/**
 * The agent upgrade protocol: a new agent takes the listening sockets of the
 * running one over a unix socket (SCM_RIGHTS), serves on them, and only then
 * tells the old one to stop accepting; the old one drains and exits.
 *
 *   new -> old   {"type":"hello","protocol":1,"pid":..,"version":..,"bpfLayout":".."}
 *   old -> new   {"type":"listeners","protocol":1,"pid":..,"version":..,"bpfLayout":"..",
 *                 "listeners":[{"name":"outbound","ip":..,"port":..},..]}   + one fd per listener
 *                or {"type":"refused","reason":".."}
 *   new -> old   {"type":"serving"}        (config applied, SVIDs held, accepting on the fds)
 *   old -> new   {"type":"released"}       (it stopped accepting and closed the handoff socket)
 *
 * One JSON object per line. If the new agent goes away before "serving", the
 * old one never stopped anything and keeps serving; its fds were only copies.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { SockmeshError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { fdpass, socketFd } from './fdpass.js';
import type { ListenerEntry } from './listener-set.js';

export const HANDOFF_PROTOCOL = 1;

export interface AgentIdentity {
  pid: number;
  /** sockmesh version (package.json). */
  version: string;
  /** Fingerprint of the BPF map layouts this build reads and writes. */
  bpfLayout: string;
}

type Hello = { type: 'hello'; protocol: number } & AgentIdentity;
type Offer = {
  type: 'listeners';
  protocol: number;
  listeners: Omit<ListenerEntry, 'fd'>[];
} & AgentIdentity;
type Refused = { type: 'refused'; reason: string };

export interface HandoffServerOptions {
  path: string;
  self: AgentIdentity;
  /** The sockets to hand over, read at the moment a successor asks. */
  listeners: () => ListenerEntry[];
  /** The successor serves: stop accepting (close the listeners), keep open connections. */
  onTakeover: (successor: AgentIdentity) => Promise<void>;
  log: Logger;
}

/** The running agent's side: offers its listeners to one successor at a time. */
export class HandoffServer {
  private readonly server: net.Server;
  private busy = false;
  private released = false;

  constructor(private readonly o: HandoffServerOptions) {
    this.server = net.createServer((conn) => this.onConnection(conn));
    this.server.on('error', (err) => o.log.warn('handoff socket failed', { err }));
  }

  /** Binds the handoff socket (a stale one left by a crashed agent is replaced). */
  async listen(): Promise<void> {
    mkdirSync(dirname(this.o.path), { recursive: true });
    rmSync(this.o.path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.o.path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
  }

  private onConnection(conn: net.Socket): void {
    conn.on('error', () => {});
    let successor: AgentIdentity | undefined;
    lines(conn, (msg) => {
      if (msg.type === 'hello') {
        successor = this.offer(conn, msg as Hello);
      } else if (msg.type === 'serving' && successor) {
        const who = successor;
        successor = undefined;
        this.release(conn, who).catch((err: Error) => {
          this.o.log.error('handoff: releasing the listeners failed', { err });
          conn.destroy();
        });
      }
    });
    conn.on('close', () => {
      if (successor && !this.released) {
        this.busy = false;
        this.o.log.warn('handoff: the new agent went away before serving; this agent keeps serving', {
          successor: successor.pid,
        });
      }
    });
  }

  private offer(conn: net.Socket, hello: Hello): AgentIdentity | undefined {
    const refuse = (reason: string) => {
      this.o.log.warn('handoff refused', { successor: hello.pid, reason });
      conn.end(`${JSON.stringify({ type: 'refused', reason } satisfies Refused)}\n`);
      return undefined;
    };
    if (hello.protocol !== HANDOFF_PROTOCOL)
      return refuse(`handoff protocol ${hello.protocol} (this agent speaks ${HANDOFF_PROTOCOL})`);
    if (this.busy || this.released) return refuse('another agent is already taking over');
    this.busy = true;
    const entries = this.o.listeners();
    const offer: Offer = {
      type: 'listeners',
      protocol: HANDOFF_PROTOCOL,
      ...this.o.self,
      listeners: entries.map(({ name, ip, port }) => ({ name, ip, port })),
    };
    fdpass().sendFds(
      socketFd(conn),
      `${JSON.stringify(offer)}\n`,
      entries.map((e) => e.fd),
    );
    this.o.log.info('handoff: listeners offered', {
      successor: hello.pid,
      version: hello.version,
      listeners: entries.map((e) => e.name),
    });
    return { pid: hello.pid, version: hello.version, bpfLayout: hello.bpfLayout };
  }

  private async release(conn: net.Socket, successor: AgentIdentity): Promise<void> {
    this.released = true;
    // Closing a bound unix server unlinks its path at once: before the successor binds its own.
    // Not awaited: the close callback waits for every connection, this conversation included.
    void this.close();
    await this.o.onTakeover(successor);
    conn.end(`${JSON.stringify({ type: 'released' })}\n`);
    this.o.log.info('handoff: the new agent serves; stopped accepting', { successor: successor.pid });
  }
}

/** What a new agent got from the one it replaces. */
export class Predecessor {
  private readonly conn: net.Socket;
  private readonly pending: string[] = [];
  private waiter: ((line: string | undefined) => void) | undefined;

  constructor(
    connFd: number,
    readonly identity: AgentIdentity,
    readonly listeners: ListenerEntry[],
  ) {
    this.conn = new net.Socket({ fd: connFd, readable: true, writable: true });
    this.conn.on('error', () => {});
    lines(this.conn, (msg) => {
      const line = JSON.stringify(msg);
      if (this.waiter) this.waiter(line);
      else this.pending.push(line);
    });
    this.conn.on('close', () => this.waiter?.(undefined));
  }

  /** Tells the old agent this one serves; resolves once it stopped accepting. */
  async takeOver(timeoutMs = 10_000): Promise<void> {
    this.conn.write(`${JSON.stringify({ type: 'serving' })}\n`);
    const line = await new Promise<string | undefined>((resolve) => {
      const t = setTimeout(() => resolve(undefined), timeoutMs);
      this.waiter = (l) => {
        clearTimeout(t);
        resolve(l);
      };
      const early = this.pending.shift();
      if (early !== undefined) this.waiter(early);
    });
    this.conn.destroy();
    if (line === undefined || (JSON.parse(line) as { type: string }).type !== 'released') {
      // Both keep accepting on the same sockets: nothing is refused, the old one just does not drain.
      throw new SockmeshError(
        'SOCKMESH_E_HANDOFF',
        `the old agent (pid ${this.identity.pid}) did not confirm it stopped accepting`,
        { hint: `it still serves alongside this one; stop it with SIGTERM (kill ${this.identity.pid})` },
      );
    }
  }

  /** Gives up: the old agent keeps serving, this process's copies of its sockets go. */
  abandon(): void {
    this.conn.destroy();
    for (const l of this.listeners) {
      try {
        fdpass().close(l.fd);
      } catch {
        // already closed
      }
    }
  }
}

/**
 * Asks the agent running on this node for its listeners. `undefined` when
 * there is none (no socket, or a stale one left by a crashed agent).
 */
export function requestHandoff(path: string, self: AgentIdentity, timeoutMs = 5000): Predecessor | undefined {
  if (!existsSync(path)) return undefined;
  const hello: Hello = { type: 'hello', protocol: HANDOFF_PROTOCOL, ...self };
  let got: ReturnType<ReturnType<typeof fdpass>['request']>;
  try {
    got = fdpass().request(path, `${JSON.stringify(hello)}\n`, timeoutMs);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ECONNREFUSED' || code === 'ENOENT') return undefined;
    throw new SockmeshError(
      'SOCKMESH_E_HANDOFF',
      `cannot reach the running agent at ${path}: ${(err as Error).message}`,
      {
        hint: 'the old agent may be stuck: check its log, or stop it and start this one again',
        cause: err,
      },
    );
  }
  const msg = JSON.parse(got.message.split('\n')[0]!) as Offer | Refused;
  const closeAll = () => {
    fdpass().close(got.fd);
    for (const fd of got.fds) fdpass().close(fd);
  };
  if (msg.type === 'refused') {
    closeAll();
    throw new SockmeshError('SOCKMESH_E_HANDOFF', `the running agent refused the handoff: ${msg.reason}`, {
      hint: 'wait for the upgrade in progress to finish, or run the same sockmesh version on both sides',
    });
  }
  if (msg.listeners.length !== got.fds.length) {
    closeAll();
    throw new SockmeshError(
      'SOCKMESH_E_HANDOFF',
      `the running agent offered ${msg.listeners.length} listeners but passed ${got.fds.length} fds`,
    );
  }
  return new Predecessor(
    got.fd,
    { pid: msg.pid, version: msg.version, bpfLayout: msg.bpfLayout },
    msg.listeners.map((l, i) => ({ ...l, fd: got.fds[i]! })),
  );
}

/** Calls `on` with every JSON line the socket receives. */
function lines(conn: net.Socket, on: (msg: { type: string }) => void): void {
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('data', (chunk: string) => {
    buf += chunk;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      try {
        on(JSON.parse(line) as { type: string });
      } catch {
        conn.destroy();
        return;
      }
    }
  });
}
