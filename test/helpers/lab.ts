import { once } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestBed } from '../../lab/testbed.js';
import type { LabTarget } from '../../lab/types.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

/** Starts the echo fixture in a pod or node and resolves once it listens. */
export async function startEchoServer(bed: TestBed, target: LabTarget, port: number) {
  const child = bed.spawn(target, [process.execPath, join(FIXTURES, 'tcp-echo-server.mjs'), String(port)]);
  const [line] = (await Promise.race([
    once(child.stdout!, 'data'),
    once(child, 'exit').then(() => {
      throw new Error('echo server exited before listening');
    }),
  ])) as [Buffer];
  if (!line.toString().startsWith('listening')) throw new Error(`echo server said: ${line}`);
  return child;
}

export function echoClient(bed: TestBed, from: LabTarget, host: string, port: number, msg: string) {
  return bed.exec(from, [process.execPath, join(FIXTURES, 'tcp-echo-client.mjs'), host, String(port), msg], {
    timeoutMs: 8000,
  });
}

/** Everything a bed with this run id could have left on the host. */
export function leftovers(bed: TestBed, stateDir = '/run/sockmesh'): string[] {
  const found: string[] = [];
  const netns = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
  found.push(...netns.filter((n) => n.startsWith(bed.prefix)).map((n) => `netns ${n}`));
  if (existsSync(bed.cgroupRoot)) found.push(`cgroup ${bed.cgroupRoot}`);
  if (existsSync(bed.bpffsRoot)) found.push(`bpffs ${bed.bpffsRoot}`);
  const etc = existsSync('/etc/netns') ? readdirSync('/etc/netns') : [];
  found.push(...etc.filter((n) => n.startsWith(bed.prefix)).map((n) => `/etc/netns/${n}`));
  if (existsSync(join(stateDir, `lab-${bed.runId}.json`))) found.push('state file');
  if (existsSync(bed.runDir)) found.push(`run dir ${bed.runDir}`);
  return found;
}
