/** `sockmesh identity serve` (the SPIRE-agent stand-in) as a child process of the test. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface IdentityServe {
  child: ChildProcess;
  /** The first line it printed: "serving the SPIFFE Workload API on ...". */
  banner: string;
}

/** Starts it on `socket` and resolves once it serves; rejects with its stderr when it exits first. */
export async function startIdentityServe(opts: {
  socket: string;
  registrations: string;
  caDir: string;
}): Promise<IdentityServe> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'cli', 'main.ts'),
      ...['identity', 'serve', '--socket', opts.socket],
      ...['--registrations', opts.registrations, '--ca', opts.caDir],
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SOCKMESH_LOG_LEVEL: 'warn' } },
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const [line] = (await Promise.race([
    once(child.stdout!, 'data'),
    once(child, 'exit').then(() => {
      throw new Error(`identity serve exited: ${err}`);
    }),
  ])) as [Buffer];
  return { child, banner: line.toString() };
}
