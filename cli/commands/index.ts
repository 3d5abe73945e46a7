import type { Command } from '../command.js';
import { agentCommand } from './agent.js';
import { bpfCommand } from './bpf.js';
import { caCommand } from './ca.js';
import { canaryCommand } from './canary.js';
import { controlPlaneCommand } from './controlplane.js';
import { identityCommand } from './identity.js';
import { downCommand, execCommand } from './lab.js';
import { applyCommand, labelCommand, statusCommand } from './mesh.js';
import { upCommand } from './up.js';

/** Every verb of `sockmesh`, in the order `sockmesh --help` lists them. */
export const commands: Command[] = [
  upCommand,
  downCommand,
  execCommand,
  statusCommand,
  labelCommand,
  applyCommand,
  canaryCommand,
  bpfCommand,
  controlPlaneCommand,
  agentCommand,
  caCommand,
  identityCommand,
];
