import type { Command } from '../command.js';
import { agentCommand } from './agent.js';
import { bpfCommand } from './bpf.js';
import { caCommand } from './ca.js';
import { controlPlaneCommand } from './controlplane.js';
import { identityCommand } from './identity.js';
import { downCommand, execCommand, upCommand } from './lab.js';

/** Every verb of `sockmesh`, in the order `sockmesh --help` lists them. */
export const commands: Command[] = [
  upCommand,
  downCommand,
  execCommand,
  bpfCommand,
  controlPlaneCommand,
  agentCommand,
  caCommand,
  identityCommand,
];
