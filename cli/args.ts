import { parseArgs } from 'node:util';
import { SockmeshError } from '../lib/errors.js';

type Options = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

/** node:util parseArgs, with usage mistakes turned into SOCKMESH_E_USAGE. */
export function parseCommandArgs<T extends Options>(argv: string[], options: T, allowPositionals = true) {
  try {
    return parseArgs({
      args: argv,
      options: { help: { type: 'boolean', short: 'h' }, ...options },
      allowPositionals,
      strict: true,
    });
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_USAGE', (err as Error).message, { hint: 'see --help' });
  }
}
