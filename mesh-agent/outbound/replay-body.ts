import type { Readable, Writable } from 'node:stream';

/**
 * A streamed request body that a retry can send again. Each attempt gets what
 * has arrived so far, then the rest as it arrives, so a streaming caller (a
 * gRPC stream) is never held back waiting for the end. Up to `limit` bytes
 * are kept; past that the body is no longer replayable and retries stop, as
 * in Envoy when a request outgrows its retry buffer.
 */
export class ReplayableBody {
  private kept: Buffer[] = [];
  private size = 0;
  private overflow = false;
  private ended = false;
  private sink: Writable | undefined;
  private readonly onDrain = () => this.source.resume();

  constructor(
    private readonly source: Readable,
    private readonly limit: number,
  ) {
    source.on('data', (chunk: Buffer) => this.onData(chunk));
    source.once('end', () => {
      this.ended = true;
      this.sink?.end();
    });
  }

  /** Whether a new attempt would still get the whole body. */
  get replayable(): boolean {
    return !this.overflow;
  }

  /** Sends the body to a new attempt's upstream, detaching the previous one. */
  pipeTo(sink: Writable): void {
    this.sink?.off('drain', this.onDrain);
    this.sink = sink;
    for (const c of this.kept) sink.write(c);
    // Past the limit a body goes to the first attempt only: nothing to keep once it has it.
    if (this.overflow) this.kept = [];
    if (this.ended) sink.end();
    else this.source.resume();
  }

  private onData(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.size > this.limit) this.overflow = true;
    if (!this.sink) {
      // Nothing to send to yet: keep everything, and stop reading once past the limit.
      this.kept.push(chunk);
      if (this.overflow) this.source.pause();
      return;
    }
    if (!this.overflow) this.kept.push(chunk);
    else this.kept = [];
    if (!this.sink.write(chunk)) {
      this.source.pause();
      this.sink.once('drain', this.onDrain);
    }
  }
}
