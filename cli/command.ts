/**
 * A CLI verb. Each lives in its own file under cli/commands/ and is listed in
 * cli/commands/index.ts; main.ts only dispatches, parses nothing itself.
 */
export interface CommandContext {
  /** Arguments after the verb (and after the sub-verb for grouped commands). */
  argv: string[];
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** One verb; its name and one-line summary live in cli/commands/index.ts, which loads it on demand. */
export interface Command {
  /** Full --help text. */
  usage: string;
  /** Resolves to the process exit code. */
  run(ctx: CommandContext): Promise<number>;
}

/** Exit codes shared by every verb. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, PRECONDITION: 3 } as const;
