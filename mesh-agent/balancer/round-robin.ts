import { type CandidateOptions, candidates } from './candidates.js';
import type { Endpoint, LoadBalancer, PickContext } from './types.js';

/** Plain round robin over the current candidates (endpoint weights are not applied). */
export class RoundRobin implements LoadBalancer {
  readonly policy = 'ROUND_ROBIN';
  private next: number;

  constructor(
    private readonly endpoints: readonly Endpoint[],
    private readonly opts: CandidateOptions,
    rand: () => number = Math.random,
  ) {
    // A random start keeps many agents from hitting the same first endpoint together.
    this.next = Math.floor(rand() * Math.max(1, endpoints.length));
  }

  pick(ctx: PickContext = {}): Endpoint | null {
    const list = candidates(this.endpoints, this.opts, ctx.avoid);
    if (list.length === 0) return null;
    const ep = list[this.next % list.length] ?? null;
    this.next = (this.next + 1) % 0x7fff_ffff;
    return ep;
  }
}
