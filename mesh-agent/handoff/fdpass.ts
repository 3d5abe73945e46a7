/**
 * Typed wrapper of the ./fdpass addon: listening TCP sockets as raw fds, and
 * SCM_RIGHTS over a unix socket, which Node has no userland API for. The
 * handoff (./handoff.ts) is the only user.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { SockmeshError } from '../../lib/errors.js';

export interface SocketInfo {
  ip: string;
  port: number;
  /** SO_ACCEPTCONN: the socket is listening. */
  listening: boolean;
}

export interface FdRequestResult {
  /** The connection (non-blocking unix socket), for `new net.Socket({ fd })`. */
  fd: number;
  /** Everything read up to and including the first newline. */
  message: string;
  /** File descriptors that came with it, in the order the sender gave them. */
  fds: number[];
}

interface FdpassAddon {
  listenTcp(ip: string, port: number, backlog: number): number;
  socketInfo(fd: number): SocketInfo;
  sendFds(fd: number, message: string, fds: number[]): void;
  request(path: string, message: string, timeoutMs: number): FdRequestResult;
  close(fd: number): void;
  dup(fd: number): number;
}

/** Beside this file when run from the sources, the source tree's build when run from dist/. */
function addonPath(): string {
  const rel = 'fdpass/build/Release/fdpass.node';
  const beside = fileURLToPath(new URL(rel, import.meta.url));
  if (existsSync(beside)) return beside;
  const fromDist = fileURLToPath(new URL(`../../../mesh-agent/handoff/${rel}`, import.meta.url));
  return existsSync(fromDist) ? fromDist : beside;
}

let addon: FdpassAddon | undefined;

export function fdpass(): FdpassAddon {
  if (!addon) {
    const path = addonPath();
    try {
      addon = createRequire(import.meta.url)(path) as FdpassAddon;
    } catch (err) {
      throw new SockmeshError('SOCKMESH_E_NOT_BUILT', `fd-passing addon is not built (${path})`, {
        hint: 'run `npm run build:addon` (or `npm run build`)',
        cause: err,
      });
    }
  }
  return addon;
}

/** The file descriptor behind a connected net.Socket (libuv keeps it on the handle). */
export function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}
