/**
 * A request deadline to hand undici as its `signal`, for the route and per-try
 * timeouts of a proxied request.
 *
 * Why not AbortSignal.timeout: its timer always runs to the end, and the signal
 * stays reachable (an EventTarget plus a FinalizationRegistry entry) until then.
 * With Envoy's 15 s default route timeout that is 15 000 live timers and signals
 * at 1 000 req/s, for requests that finished in a millisecond. This one clears
 * its timer as soon as undici lets go of it (it removes its listeners when the
 * response body closes or the request fails), so a finished request leaves
 * nothing behind.
 *
 * One deadline serves one undici request: once its last listener is gone, it
 * never fires.
 */
export class DeadlineSignal {
  aborted = false;
  reason: Error | undefined;
  private listeners: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly ms: number) {
    this.timer = setTimeout(() => this.fire(), ms);
    // Like AbortSignal.timeout: a pending deadline alone does not keep the process up.
    this.timer.unref();
  }

  /** undici's EventEmitter path (`once`/`removeListener`); `on` is the same for a one-shot event. */
  once(event: string, listener: () => void): this {
    if (event === 'abort' && this.timer !== undefined) this.listeners.push(listener);
    return this;
  }

  on(event: string, listener: () => void): this {
    return this.once(event, listener);
  }

  removeListener(event: string, listener: () => void): this {
    if (event !== 'abort') return this;
    const i = this.listeners.indexOf(listener);
    if (i >= 0) this.listeners.splice(i, 1);
    if (this.listeners.length === 0) this.release();
    return this;
  }

  off(event: string, listener: () => void): this {
    return this.removeListener(event, listener);
  }

  /** Stops the timer; the deadline will not fire. */
  release(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.listeners = [];
  }

  /** Whether the timer is still running (for tests and diagnostics). */
  get pending(): boolean {
    return this.timer !== undefined;
  }

  private fire(): void {
    this.timer = undefined;
    this.aborted = true;
    // The same error AbortSignal.timeout gives: callers classify on name === 'TimeoutError'.
    this.reason = new DOMException(`deadline of ${this.ms} ms exceeded`, 'TimeoutError');
    const ls = this.listeners;
    this.listeners = [];
    for (const l of ls) l();
  }
}
