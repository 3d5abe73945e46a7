import { spawnSync } from 'node:child_process';
import { SockmeshError } from '../lib/errors.js';

/**
 * Runs a host command synchronously. Topology changes are short and must be
 * ordered (and teardown must also work from an 'exit' handler), so sync is the point.
 */
export function run(
  file: string,
  args: string[],
  opts: { input?: string; allowFail?: boolean } = {},
): string {
  const res = spawnSync(file, args, { encoding: 'utf8', input: opts.input, maxBuffer: 64 * 1024 * 1024 });
  if (res.error) {
    if (opts.allowFail) return '';
    throw new SockmeshError('SOCKMESH_E_COMMAND', `could not run ${file}: ${res.error.message}`, {
      cause: res.error,
    });
  }
  if (res.status !== 0 && !opts.allowFail) {
    throw new SockmeshError(
      'SOCKMESH_E_COMMAND',
      `\`${[file, ...args].join(' ')}\` failed (exit ${res.status}): ${res.stderr.trim()}`,
    );
  }
  return res.stdout;
}

/** `ip` with the given arguments; `ns` runs it inside that network namespace. */
export function ip(args: string[], ns?: string, opts: { allowFail?: boolean } = {}): string {
  return run('ip', ns ? ['-n', ns, ...args] : args, opts);
}

/** Writes a sysctl inside a namespace without depending on procps. */
export function sysctl(ns: string, key: string, value: string): void {
  run('ip', ['netns', 'exec', ns, 'sh', '-c', `echo ${value} > /proc/sys/${key.replaceAll('.', '/')}`]);
}
