import { type CandidateOptions, candidates } from './candidates.js';
import type { Endpoint, LoadBalancer, PickContext } from './types.js';

/** In-flight request counts per endpoint key, shared by the proxy and the balancer. */
export class InFlight {
  private readonly counts = new Map<string, number>();

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Counts one request as started; call the returned function once when it ends. */
  start(key: string): () => void {
    this.counts.set(key, this.get(key) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = this.get(key) - 1;
      if (n <= 0) this.counts.delete(key);
      else this.counts.set(key, n);
    };
  }
}

/**
 * Envoy's LEAST_REQUEST with equal weights: sample `choiceCount` candidates
 * (default 2, "power of two choices") and take the one with the fewest
 * requests in flight; the first sampled wins a tie.
 */
export class LeastRequest implements LoadBalancer {
  readonly policy = 'LEAST_REQUEST';

  constructor(
    private readonly endpoints: readonly Endpoint[],
    private readonly opts: CandidateOptions,
    private readonly inFlight: InFlight,
    private readonly rand: () => number = Math.random,
    private readonly choiceCount = 2,
  ) {}

  pick(ctx: PickContext = {}): Endpoint | null {
    const list = candidates(this.endpoints, this.opts, ctx.avoid);
    if (list.length === 0) return null;
    if (list.length === 1) return list[0] ?? null;
    let best: Endpoint | undefined;
    let bestCount = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.choiceCount; i++) {
      const ep = list[Math.floor(this.rand() * list.length)];
      if (!ep) continue;
      const n = this.inFlight.get(ep.key);
      if (n < bestCount) {
        best = ep;
        bestCount = n;
      }
    }
    return best ?? list[0] ?? null;
  }
}
