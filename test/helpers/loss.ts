/**
 * The test-only loss injector (test/bpf/loss.bpf.c): this kernel has no netem,
 * so a tc classifier on clsact drops a share of the TCP packets to or from one
 * port. Loaded through the project's libbpf addon and pinned under the test
 * bed's bpffs root (removed with the bed); attached with tc via nsenter (`ip
 * netns exec` would remount /sys and hide the pin).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BPF_ANY, loadAddon, OBJ_DIR } from '../../bpf-sockops/addon.js';

const CONFIG_SIZE = 24;
const ZERO = Buffer.alloc(4);

export class LossInjector {
  private constructor(
    private readonly mapFd: number,
    readonly pin: string,
  ) {}

  /** Loads the injector and attaches it to `dev` in `netns` (`ingress` or `egress`). */
  static attach(opts: {
    pinDir: string;
    netns: string;
    dev: string;
    direction: 'ingress' | 'egress';
  }): LossInjector {
    const addon = loadAddon();
    mkdirSync(opts.pinDir, { recursive: true });
    const loaded = addon.loadObject(join(OBJ_DIR, 'test', 'loss.bpf.o'), opts.pinDir);
    let mapFd = -1;
    for (const m of loaded.maps) {
      if (m.name === 'sm_test_loss') mapFd = m.fd;
      else addon.close(m.fd);
    }
    const prog = loaded.progs.find((p) => p.name === 'sm_test_drop');
    const pin = join(opts.pinDir, 'prog');
    try {
      if (!prog || mapFd < 0) throw new Error('loss injector not built: run npm run build:bpf');
      addon.objPin(prog.fd, pin);
    } finally {
      for (const p of loaded.progs) addon.close(p.fd);
    }
    const tc = (...argv: string[]) => {
      const r = spawnSync('nsenter', [`--net=/run/netns/${opts.netns}`, 'tc', ...argv], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`tc ${argv.join(' ')}: ${r.stderr}`);
    };
    const injector = new LossInjector(mapFd, pin);
    try {
      tc('qdisc', 'add', 'dev', opts.dev, 'clsact');
      tc('filter', 'add', 'dev', opts.dev, opts.direction, 'bpf', 'direct-action', 'object-pinned', pin);
    } catch (err) {
      injector.close();
      throw err;
    }
    return injector;
  }

  /** Drops perMille/1000 of the packets to or from `port` (0 = none); counters start again. */
  set(port: number, perMille: number): void {
    const b = Buffer.alloc(CONFIG_SIZE);
    b.writeUInt16LE(port, 0);
    b.writeUInt16LE(perMille, 2);
    loadAddon().mapUpdate(this.mapFd, ZERO, b, BPF_ANY);
  }

  /** Packets of the port seen and dropped since the last set(). */
  counters(): { seen: bigint; dropped: bigint } {
    const v = loadAddon().mapLookup(this.mapFd, ZERO, CONFIG_SIZE);
    return { dropped: v?.readBigUInt64LE(8) ?? 0n, seen: v?.readBigUInt64LE(16) ?? 0n };
  }

  /** Closes the map; the program goes with its netns and pin directory. */
  close(): void {
    loadAddon().close(this.mapFd);
  }
}
