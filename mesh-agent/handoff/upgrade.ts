/**
 * An agent's side of a hitless upgrade, as the agent wires it (agent.ts keeps
 * only the calls): at start, ask the running agent of this node for its
 * listening sockets; once this agent can serve, listen on them and tell the old
 * one to stop accepting; from then on, offer them to the next agent, and when
 * that one serves, stop accepting, drain up to a bound and exit.
 */
import { readFileSync } from 'node:fs';
import { mapLayoutFingerprint } from '../../bpf-sockops/index.js';
import { SockmeshError } from '../../lib/errors.js';
import type { Logger } from '../../lib/log.js';
import { type AgentIdentity, HandoffServer, type Predecessor, requestHandoff } from './handoff.js';
import { type ListenerEntry, ListenerSet } from './listener-set.js';

export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

export interface HandoffOptions {
  /** Unix socket the running agent offers its listeners on (one per node). */
  socketPath: string;
  /** How long an agent that handed over keeps serving its open connections (default 30 s). */
  drainTimeoutMs?: number;
}

/** What the old agent does once a successor serves. */
export interface Releasable {
  /** Stop following the control plane and writing the kernel's maps: the successor owns them now. */
  stopControl(): void;
  /** Stop accepting on every listener (closing this process's copies) and ask clients to reconnect. */
  stopAccepting(): Promise<void>;
  /** Resolves once every accepted connection has closed. */
  drained(): Promise<void>;
}

export interface HandedOver {
  successorPid: number;
  /** From the successor's "serving" to the last connection closed (or the bound). */
  drainMs: number;
  /** Connections were still open at the bound (they close when this process exits). */
  boundHit: boolean;
}

let packageVersion: string | undefined;
function sockmeshVersion(): string {
  if (packageVersion === undefined) {
    for (const rel of ['../../package.json', '../../../package.json']) {
      try {
        packageVersion = (
          JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { version: string }
        ).version;
        break;
      } catch {
        // try the other layout (dist/)
      }
    }
    packageVersion ??= 'unknown';
  }
  return packageVersion;
}

export class AgentHandoff {
  readonly listeners: ListenerSet;
  private server: HandoffServer | undefined;
  private resolveHandedOver!: (h: HandedOver) => void;
  /** Resolves when this agent handed over and drained: the process should exit then. */
  readonly handedOver = new Promise<HandedOver>((r) => {
    this.resolveHandedOver = r;
  });
  private state: 'starting' | 'serving' | 'draining' = 'starting';
  private takeoverMs: number | undefined;
  /** From process start to serving (listening, and the predecessor stopped accepting). */
  private servingAfterMs: number | undefined;

  private constructor(
    private readonly opts: HandoffOptions | undefined,
    readonly self: AgentIdentity,
    readonly predecessor: Predecessor | undefined,
    private readonly log: Logger,
  ) {
    this.listeners = new ListenerSet(predecessor?.listeners ?? [], log);
  }

  /**
   * Asks the running agent for its listeners (none: a first start, or after a crash). Refuses,
   * before anything is touched, an upgrade whose BPF map layout differs from the pinned one.
   */
  static begin(opts: HandoffOptions | undefined, log: Logger): AgentHandoff {
    const self: AgentIdentity = {
      pid: process.pid,
      version: sockmeshVersion(),
      bpfLayout: mapLayoutFingerprint(),
    };
    const pred = opts ? requestHandoff(opts.socketPath, self) : undefined;
    if (pred && pred.identity.bpfLayout !== self.bpfLayout) {
      pred.abandon();
      throw new SockmeshError(
        'SOCKMESH_E_BPF',
        `the running agent (pid ${pred.identity.pid}, sockmesh ${pred.identity.version}) uses BPF map layout ${pred.identity.bpfLayout}, this build ${self.bpfLayout}: its pinned maps cannot be adopted, so this upgrade cannot be hitless. The running agent keeps serving; nothing was changed`,
        {
          hint: `to replace it anyway: stop it (kill ${pred.identity.pid}), run \`sockmesh bpf detach\` for this node, then start this agent (connections open then continue over plain TCP; new ones are captured once it serves)`,
        },
      );
    }
    if (pred) {
      log.info('handoff: taking over from the running agent', {
        predecessor: pred.identity.pid,
        version: pred.identity.version,
        listeners: pred.listeners.map((l) => l.name),
      });
    }
    return new AgentHandoff(opts, self, pred, log);
  }

  /** Whether listening waits until this agent can serve (a predecessor serves until then). */
  get deferListening(): boolean {
    return this.predecessor !== undefined;
  }

  get status(): Record<string, unknown> {
    return {
      state: this.state,
      pid: this.self.pid,
      version: this.self.version,
      ...(this.predecessor ? { predecessor: this.predecessor.identity.pid } : {}),
      ...(this.takeoverMs === undefined ? {} : { takeoverMs: this.takeoverMs }),
      ...(this.servingAfterMs === undefined ? {} : { servingAfterMs: this.servingAfterMs }),
      inherited: this.listeners.reused,
    };
  }

  /** The old agent stops accepting; returns once it confirmed (this agent listens on the same sockets already). */
  async takeOver(): Promise<void> {
    if (!this.predecessor) return;
    const t0 = performance.now();
    await this.predecessor.takeOver();
    this.takeoverMs = Math.round(performance.now() - t0);
    const unclaimed = this.listeners.closeUnclaimed();
    this.log.info('handoff: took over; the old agent drains', {
      predecessor: this.predecessor.identity.pid,
      takeoverMs: this.takeoverMs,
      ...(unclaimed.length ? { unclaimed } : {}),
    });
  }

  /** This agent serves: offer its listeners (and `extra` ones, e.g. permissive pods') to a successor. */
  async offer(extra: () => ListenerEntry[], agent: Releasable): Promise<void> {
    this.state = 'serving';
    this.servingAfterMs = Math.round(performance.now());
    if (!this.opts) return;
    this.server = new HandoffServer({
      path: this.opts.socketPath,
      self: this.self,
      listeners: () => [...this.listeners.entries(), ...extra()],
      onTakeover: (successor) => this.release(successor, agent),
      log: this.log,
    });
    await this.server.listen();
  }

  private async release(successor: AgentIdentity, agent: Releasable): Promise<void> {
    this.state = 'draining';
    const t0 = performance.now();
    agent.stopControl();
    await agent.stopAccepting();
    const bound = this.opts?.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    this.log.info('draining open connections', { boundMs: bound, successor: successor.pid });
    // After "released" is sent: the caller of onTakeover sends it once this returns.
    void (async () => {
      let timer: NodeJS.Timeout | undefined;
      const boundHit = await Promise.race([
        agent.drained().then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), bound);
        }),
      ]);
      clearTimeout(timer);
      const drainMs = Math.round(performance.now() - t0);
      this.log.info(boundHit ? 'drain bound reached; closing what is left' : 'drained', { drainMs });
      this.resolveHandedOver({ successorPid: successor.pid, drainMs, boundHit });
    })();
  }

  async close(): Promise<void> {
    await this.server?.close();
  }
}
