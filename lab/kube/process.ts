/**
 * One long-running component of the test cluster (kine, kube-apiserver, ...): started non-detached,
 * its output appended to a log file (and optionally handed on line by line), stopped by its pid.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readSync, statSync, writeSync } from 'node:fs';

const STOP_GRACE_MS = 5000;

export interface ComponentOptions {
  name: string;
  argv: string[];
  logFile: string;
  /** A cgroup v2 directory the process joins before exec (so cgroup.kill reaches it). */
  cgroup?: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

export class Component {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  private readonly child: ChildProcess;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitedPromise: Promise<void>;

  constructor(opts: ComponentOptions) {
    this.name = opts.name;
    this.logFile = opts.logFile;
    const [file, args] = opts.cgroup
      ? [
          '/bin/sh',
          [
            '-c',
            'cg="$1"; shift; echo $$ > "$cg/cgroup.procs" && exec "$@"',
            'sh',
            opts.cgroup,
            ...opts.argv,
          ],
        ]
      : [opts.argv[0]!, opts.argv.slice(1)];
    const fd = openSync(opts.logFile, 'a');
    this.child = spawn(file, args, {
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: false,
    });
    if (this.child.pid === undefined) {
      closeSync(fd);
      throw new Error(`could not start ${opts.name} (${opts.argv[0]})`);
    }
    this.pid = this.child.pid;
    let partial = '';
    const onData = (b: Buffer): void => {
      writeSync(fd, b);
      if (!opts.log) return;
      const lines = (partial + b.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) opts.log(`${opts.name}: ${line}`);
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exitedPromise = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exitInfo = { code, signal };
        if (partial && opts.log) opts.log(`${opts.name}: ${partial}`);
        closeSync(fd);
        resolve();
      });
    });
    // A spawn error (ENOENT) is reported through 'close' too; keep it from becoming an uncaught error.
    this.child.once('error', () => {});
  }

  /** Set once the process exited; `undefined` while it runs. */
  get exit(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.exitInfo;
  }

  get exited(): Promise<void> {
    return this.exitedPromise;
  }

  /** SIGTERM, then SIGKILL after a grace period; resolves once the process is reaped. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    if (this.exitInfo) return;
    signal(this.pid, 'SIGTERM');
    const timer = setTimeout(() => signal(this.pid, 'SIGKILL'), graceMs);
    await this.exitedPromise;
    clearTimeout(timer);
  }

  /** For 'exit' handlers, where nothing asynchronous runs any more. */
  killSync(): void {
    if (!this.exitInfo) signal(this.pid, 'SIGKILL');
  }

  /** The last lines of the log file, for error messages. */
  tail(lines = 30): string {
    return tailFile(this.logFile, lines);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

export function tailFile(path: string, lines: number, maxBytes = 64 * 1024): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return '(no log)';
  }
  try {
    const size = statSync(path).size;
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    return buf.toString('utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } finally {
    closeSync(fd);
  }
}
