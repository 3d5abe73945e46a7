/**
 * Every listening socket a node agent owns, by name, as raw fds: created here
 * (bound and listening before any server wraps them) or inherited from the
 * agent this one replaces. A server takes its fd with `server.listen({ fd })`,
 * so the kernel socket, its address and its accept backlog stay the same
 * across an agent upgrade: nothing a pod connects to is ever closed.
 */
import type { Logger } from '../../lib/log.js';
import { fdpass } from './fdpass.js';

/** One listening socket as it crosses the handoff: the fd rides next to it (SCM_RIGHTS). */
export interface ListenerEntry {
  /** `outbound`, `tunnel`, `admin`, or `inbound-plaintext/<pod ip>` (a permissive pod's 15006). */
  name: string;
  ip: string;
  port: number;
  fd: number;
}

export class ListenerSet {
  private readonly inherited = new Map<string, ListenerEntry>();
  private readonly owned = new Map<string, ListenerEntry>();

  constructor(
    inherited: readonly ListenerEntry[] = [],
    private readonly log?: Logger,
  ) {
    for (const e of inherited) this.inherited.set(e.name, e);
  }

  /** Names of the inherited sockets that a server took over. */
  readonly reused: string[] = [];

  /**
   * The listening socket `name` at ip:port: the inherited one when it is still
   * that address and listening, else a fresh one (EADDRINUSE if another
   * process holds the address without handing it over).
   */
  take(name: string, ip: string, port: number, backlog = 4096): number {
    const mine = this.owned.get(name);
    if (mine) return mine.fd;
    const got = this.claim(name, (e) => e.ip === ip && e.port === port);
    const fd = got ?? fdpass().listenTcp(ip, port, backlog);
    this.owned.set(name, { name, ip, port, fd });
    if (got === undefined) this.log?.debug('listening socket created', { name, addr: `${ip}:${port}` });
    return fd;
  }

  /** An inherited socket of that name, whatever its address (a pod netns' own listener), if any. */
  adopt(name: string): number | undefined {
    return this.claim(name, () => true);
  }

  /** The sockets this process listens on now (what a successor is handed). */
  entries(): ListenerEntry[] {
    return [...this.owned.values()];
  }

  /** Inherited sockets no server took (an address changed): this process lets go of its copy. */
  closeUnclaimed(): string[] {
    const names = [...this.inherited.keys()];
    for (const e of this.inherited.values()) fdpass().close(e.fd);
    this.inherited.clear();
    return names;
  }

  private claim(name: string, ok: (e: ListenerEntry) => boolean): number | undefined {
    const e = this.inherited.get(name);
    if (!e) return undefined;
    this.inherited.delete(name);
    const info = safeInfo(e.fd);
    if (info?.listening && ok({ ...e, ip: info.ip, port: info.port })) {
      this.reused.push(name);
      return e.fd;
    }
    this.log?.warn('inherited socket does not match; opening a new one', {
      name,
      inherited: info ? `${info.ip}:${info.port}${info.listening ? '' : ' (not listening)'}` : 'invalid fd',
    });
    fdpass().close(e.fd);
    return undefined;
  }
}

function safeInfo(fd: number) {
  try {
    return fdpass().socketInfo(fd);
  } catch {
    return undefined;
  }
}
