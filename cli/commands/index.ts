import type { Command } from '../command.js';
import { downCommand, execCommand, upCommand } from './lab.js';

/** Every verb of `sockmesh`, in the order `sockmesh --help` lists them. */
export const commands: Command[] = [upCommand, downCommand, execCommand];
