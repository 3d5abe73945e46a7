import { isSockmeshError } from '../lib/errors.js';
import { EXIT } from './command.js';
import { commands } from './commands/index.js';

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return `sockmesh: a sidecarless service mesh (eBPF capture, one shared proxy per node, SPIFFE mTLS)\n\nUsage: sockmesh <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun 'sockmesh <command> --help' for a command's options.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === '--help' || verb === '-h' || verb === 'help') {
    process.stdout.write(topHelp());
    return verb === undefined ? EXIT.USAGE : EXIT.OK;
  }
  const entry = commands.find((c) => c.name === verb);
  if (!entry) {
    process.stderr.write(`SOCKMESH_E_USAGE: unknown command '${verb}'\n\n${topHelp()}`);
    return EXIT.USAGE;
  }
  const cmd = await entry.load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.usage.trimEnd()}\n`);
    return EXIT.OK;
  }
  try {
    return await cmd.run({ argv: rest, stdout: process.stdout, stderr: process.stderr });
  } catch (err) {
    if (isSockmeshError(err)) {
      process.stderr.write(`${err.describe()}\n`);
      if (err.code === 'SOCKMESH_E_USAGE') return EXIT.USAGE;
      if (
        [
          'SOCKMESH_E_NOT_ROOT',
          'SOCKMESH_E_NO_CAPABILITY',
          'SOCKMESH_E_NO_CGROUP2',
          'SOCKMESH_E_NO_BPFFS',
          'SOCKMESH_E_NO_IPROUTE2',
          'SOCKMESH_E_NO_BTF',
          'SOCKMESH_E_KERNEL_FEATURE',
          'SOCKMESH_E_NOT_BUILT',
        ].includes(err.code)
      )
        return EXIT.PRECONDITION;
      return EXIT.FAILURE;
    }
    process.stderr.write(`sockmesh ${verb}: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
    return EXIT.FAILURE;
  }
}

process.exitCode = await main(process.argv.slice(2));
