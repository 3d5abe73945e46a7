/**
 * The proxy's read side: the original destination of an accepted connection,
 * one synchronous map lookup on the pinned map (no agent round trip).
 */
import { SockmeshError } from '../lib/errors.js';
import { type BpfAddon, loadAddon } from './addon.js';
import {
  decodeOrigDst,
  decodeOrigDst6,
  type Endpoint,
  encodeTuple4,
  encodeTuple6,
  isIpv6,
  ORIG_DST_SIZE,
  ORIG_DST6_SIZE,
  unmapIpv4,
} from './codec.js';
import { pinLayout, visible } from './pins.js';

export class OriginalDestinationMap {
  private fd4: number;
  private fd6: number;

  private constructor(
    private readonly addon: BpfAddon,
    fd4: number,
    fd6: number,
    private readonly ownsFds: boolean,
  ) {
    this.fd4 = fd4;
    this.fd6 = fd6;
  }

  /** Opens the node's pinned 4-tuple maps, IPv4 and IPv6 (the agent must have loaded the dataplane). */
  static open(bpffsDir: string): OriginalDestinationMap {
    const addon = loadAddon();
    const pins = pinLayout(visible(bpffsDir).path);
    const fds: number[] = [];
    try {
      for (const m of ['sm_orig_by_tuple', 'sm_orig6_by_tuple'] as const) fds.push(addon.objGet(pins.map(m)));
    } catch (err) {
      for (const fd of fds) addon.close(fd);
      throw new SockmeshError(
        'SOCKMESH_E_BPF',
        `cannot open the original-destination maps under ${pins.mapsDir}`,
        {
          hint: 'load the dataplane first (SockopsDataplane.open or `sockmesh up`)',
          cause: err,
        },
      );
    }
    return new OriginalDestinationMap(addon, fds[0]!, fds[1]!, true);
  }

  /** @internal shares fds the dataplane already holds (it closes them). */
  static fromFds(addon: BpfAddon, fd4: number, fd6: number): OriginalDestinationMap {
    return new OriginalDestinationMap(addon, fd4, fd6, false);
  }

  /**
   * Where the client of an accepted connection meant to go: peer = the
   * accepted socket's remote address (the pod), local = the proxy listener.
   * Takes addresses as Node reports them (IPv4, IPv6, or v4-mapped IPv6).
   * A socket reset before it was accepted reports no addresses: anything that
   * is not a valid address and port is simply not found.
   */
  lookup(
    peerIp: string | undefined,
    peerPort: number | undefined,
    localIp: string | undefined,
    localPort: number | undefined,
  ): Endpoint | undefined {
    if (this.fd4 < 0) throw new SockmeshError('SOCKMESH_E_BPF', 'original destination map is closed');
    if (!peerIp || !localIp || !validPort(peerPort) || !validPort(localPort)) return undefined;
    const peer = { ip: unmapIpv4(peerIp), port: peerPort };
    const local = { ip: unmapIpv4(localIp), port: localPort };
    if (isIpv6(peer.ip) !== isIpv6(local.ip)) return undefined;
    let key: Buffer;
    try {
      key = isIpv6(peer.ip) ? encodeTuple6(peer, local) : encodeTuple4(peer, local);
    } catch {
      return undefined;
    }
    if (isIpv6(peer.ip)) {
      const v = this.addon.mapLookup(this.fd6, key, ORIG_DST6_SIZE);
      return v ? decodeOrigDst6(v) : undefined;
    }
    const v = this.addon.mapLookup(this.fd4, key, ORIG_DST_SIZE);
    return v ? decodeOrigDst(v) : undefined;
  }

  close(): void {
    if (this.ownsFds && this.fd4 >= 0) {
      this.addon.close(this.fd4);
      this.addon.close(this.fd6);
    }
    this.fd4 = -1;
    this.fd6 = -1;
  }
}

function validPort(p: number | undefined): p is number {
  return p !== undefined && Number.isInteger(p) && p > 0 && p < 65536;
}
