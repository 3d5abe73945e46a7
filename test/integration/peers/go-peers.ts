// The standard Go peers (test/peers/go): built from the Go module proxy by scripts/peers/build.sh into
// a cache keyed by their sources (a cache hit when .ci/run built them already), run as child processes
// that print JSON lines.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export type PeerLine = Record<string, unknown> & { event: string };

/** The bin directory of the built peers; builds them when the cache has no complete build. */
export async function goPeersBin(): Promise<string> {
  const { stdout } = await promisify(execFile)('bash', [join(ROOT, 'scripts/peers/build.sh')], {
    maxBuffer: 1 << 20,
  });
  return stdout.trim().split('\n').at(-1)!;
}

/** Runs a peer to its end; every stdout line is JSON. Rejects on a non-zero exit with what it said. */
export async function runPeer(
  t: TestContext,
  bin: string,
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<PeerLine[]> {
  const peer = startPeer(t, bin, name, args, env);
  const [code] = (await once(peer.child, 'exit')) as [number | null];
  await peer.closed;
  if (code !== 0)
    throw new Error(
      `${name} ${args.join(' ')} exited ${code}: ${peer.stderr()}\n${JSON.stringify(peer.lines)}`,
    );
  return peer.lines;
}

export interface RunningPeer {
  child: ChildProcess;
  lines: PeerLine[];
  closed: Promise<void>;
  stderr(): string;
  /** Sends one command line and resolves with the next JSON line the peer prints. */
  ask(command: string): Promise<PeerLine>;
  /** Resolves once the peer has printed n lines; rejects if it exits first. */
  waitLines(n: number): Promise<PeerLine[]>;
}

/** Starts a peer; it is killed by its pid in the test's after() if still running. */
export function startPeer(
  t: TestContext,
  bin: string,
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): RunningPeer {
  const child = spawn(join(bin, name), args, {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const lines: PeerLine[] = [];
  const waiters: Array<{ resolve: (l: PeerLine) => void; reject: (e: Error) => void }> = [];
  const rl = createInterface({ input: child.stdout! });
  const counters: Array<() => void> = [];
  rl.on('line', (text) => {
    const line = JSON.parse(text) as PeerLine;
    lines.push(line);
    waiters.shift()?.resolve(line);
    for (const c of counters) c();
  });
  const closed = once(rl, 'close').then(() => undefined);
  child.once('exit', (code) => {
    // After the last line: a peer that exits without answering fails the command that waits.
    void closed.then(() => {
      for (const w of waiters.splice(0))
        w.reject(new Error(`${name} exited ${code} before answering: ${err}`));
    });
  });
  return {
    child,
    lines,
    closed,
    stderr: () => err,
    ask(command: string) {
      const next = new Promise<PeerLine>((resolve, reject) => waiters.push({ resolve, reject }));
      child.stdin!.write(`${command}\n`);
      return next;
    },
    waitLines(n: number) {
      return new Promise<PeerLine[]>((resolve, reject) => {
        const check = () => {
          if (lines.length >= n) resolve(lines);
        };
        counters.push(check);
        check();
        void closed.then(() => {
          if (lines.length < n)
            reject(
              new Error(
                `${name} ended after ${lines.length} of ${n} lines: ${err}\n${JSON.stringify(lines)}`,
              ),
            );
        });
      });
    },
  };
}
