/**
 * Shared plumbing for the BPF integration tests: run fixture scripts inside
 * the test bed and read their JSON-line events.
 */
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SockopsDataplane } from '../../../bpf-sockops/index.js';
import type { TestBed } from '../../../lab/testbed.js';
import type { LabNode, LabPod, LabTarget } from '../../../lab/types.js';
import { nullLogger } from '../../../lib/log.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FIXTURES = join(REPO, 'test', 'integration', 'bpf', 'fixtures');

export type Event = Record<string, unknown>;

/** A fixture process whose stdout JSON lines are collected as they arrive. */
export class Fixture {
  readonly events: Event[] = [];
  private waiters: { pred: (e: Event) => boolean; resolve: (e: Event) => void }[] = [];
  stderr = '';
  exited = false;

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let ev: Event;
      try {
        ev = JSON.parse(line) as Event;
      } catch {
        return;
      }
      this.events.push(ev);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(ev)) return true;
        w.resolve(ev);
        return false;
      });
    });
    child.stderr?.on('data', (b: Buffer) => {
      if (this.stderr.length < 20_000) this.stderr += b.toString();
    });
    child.on('exit', () => {
      this.exited = true;
    });
  }

  /** Resolves with the first event (already seen or future) matching pred. */
  waitFor(pred: (e: Event) => boolean, timeoutMs = 15_000, what = 'event'): Promise<Event> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out waiting for ${what}; stderr: ${this.stderr.slice(-2000)}`));
      }, timeoutMs);
      const done = (e: Event) => {
        clearTimeout(timer);
        resolve(e);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await gone;
  }
}

/** Runs a fixture in the target's netns and cgroup. */
export function runFixture(bed: TestBed, target: LabTarget, script: string, args: string[]): Fixture {
  const argv = [process.execPath, '--import', 'tsx', join(FIXTURES, script), ...args];
  return new Fixture(bed.spawn(target, argv, { cwd: REPO }));
}

/** Runs a fixture to completion and returns its JSON events. */
export async function runToEnd(
  bed: TestBed,
  target: LabTarget,
  script: string,
  args: string[],
  timeoutMs = 30_000,
): Promise<Event[]> {
  const res = await bed.exec(target, [process.execPath, '--import', 'tsx', join(FIXTURES, script), ...args], {
    cwd: REPO,
    timeoutMs,
  });
  if (res.code !== 0)
    throw new Error(`${script} ${args.join(' ')} exited ${res.code}: ${res.stderr.slice(-2000)}`);
  return res.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Event);
}

export async function eventually<T>(fn: () => T, ok: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = fn();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    v = fn();
  }
  return v;
}

/** What one dialer attempt saw (fixtures/dialer.ts). */
export interface Attempt {
  ok: boolean;
  code?: string;
  greeting?: string;
  local?: string;
}

/**
 * Long-lived dialers (fixtures/dialer.ts), one per source netns, so a test can
 * try many connections without paying a process start for each.
 */
export class Dialers {
  private readonly byTarget = new Map<LabTarget, Fixture>();
  private seq = 0;

  constructor(private readonly spawn: (target: LabTarget) => Fixture) {}

  async start(targets: LabTarget[]): Promise<void> {
    for (const t of targets) this.byTarget.set(t, this.spawn(t));
    for (const f of this.byTarget.values())
      await f.waitFor((e) => e.event === 'ready', 20_000, 'dialer ready');
  }

  /** One connection attempt from `from` to `to` (ip:port), optionally bound to `source`. */
  async dial(from: LabTarget, to: string, timeoutMs: number, source?: string): Promise<Attempt> {
    const d = this.byTarget.get(from);
    if (!d) throw new Error('no dialer there');
    const id = String(++this.seq);
    d.send(`${id} ${to} ${timeoutMs}${source ? ` ${source}` : ''}`);
    return (await d.waitFor((e) => e.id === id, timeoutMs + 5_000, `attempt ${id}`)) as unknown as Attempt;
  }
}

/** Adds pods by name -> node, all in one namespace. */
export async function addPods(
  bed: TestBed,
  namespace: string,
  placement: Record<string, string>,
): Promise<Record<string, LabPod>> {
  const pods: Record<string, LabPod> = {};
  for (const [name, node] of Object.entries(placement))
    pods[name] = await bed.addPod({ name, namespace, node });
  return pods;
}

/** Loads the dataplane on a node's cgroup with the proxy at its gateway address (what an agent does first). */
export function openDataplane(node: LabNode, proxyPort = 15001): SockopsDataplane {
  const dp = SockopsDataplane.open({
    cgroupPath: node.cgroupPath,
    bpffsDir: node.bpffsDir,
    logger: nullLogger,
  });
  dp.setProxy({ ip: node.gatewayIp, port: proxyPort });
  return dp;
}

/** The fixture processes one test file starts; `stopAll` in its `after` ends them, also on failure. */
export class Fixtures {
  private readonly started: Fixture[] = [];

  spawn(...args: Parameters<typeof runFixture>): Fixture {
    const f = runFixture(...args);
    this.started.push(f);
    return f;
  }

  async stopAll(): Promise<void> {
    for (const f of this.started) await f.stop().catch(() => {});
  }
}
