/**
 * Who is on the other end of a unix socket, as the kernel recorded it at connect()
 * time (SO_PEERCRED), through the small addon in ./peercred. The caller's claims
 * never enter into it.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { SockmeshError } from '../../lib/errors.js';
import { workloadApiAsset } from './assets.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface PeercredAddon {
  getPeerCred(fd: number): PeerCredentials;
}

const ADDON_PATH = workloadApiAsset('peercred/build/Release/peercred.node');
let addon: PeercredAddon | undefined;

function load(): PeercredAddon {
  if (!addon) {
    try {
      addon = createRequire(import.meta.url)(ADDON_PATH) as PeercredAddon;
    } catch (err) {
      throw new SockmeshError('SOCKMESH_E_NOT_BUILT', `peer-credentials addon is not built (${ADDON_PATH})`, {
        hint: 'run `node-gyp rebuild --directory certs/workload-api/peercred` (or `npm run build`)',
        cause: err,
      });
    }
  }
  return addon;
}

/** The file descriptor behind a connected net.Socket (libuv keeps it on the handle). */
function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new SockmeshError('SOCKMESH_E_SVID', 'cannot read the peer of a socket without a file descriptor', {
      hint: 'the Workload API only serves connections accepted on its own unix socket',
    });
  }
  return fd;
}

/** Throws SOCKMESH_E_NOT_BUILT now rather than at the first caller. */
export function ensurePeercredAvailable(): void {
  load();
}

export function peerCredentialsOf(socket: Socket): PeerCredentials {
  return load().getPeerCred(socketFd(socket));
}
