/**
 * What every ADS stream shares, state of the world or delta: the node named by
 * its first request, the stream's lifecycle as the server sees it (connect /
 * disconnect events), and coalesced pushes (at most one flush per event-loop
 * turn, always of the newest snapshot; a push that throws ends the stream, and
 * the client reconnects).
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { structToJson } from '../codec.js';
import type { AdsNodeInfo, AdsServer } from './ads.js';

export abstract class XdsStream<Req extends { node?: { id?: string; metadata?: unknown } }, Res> {
  nodeId: string | undefined;
  protected nodeInfo: AdsNodeInfo | undefined;
  protected closed = false;
  private scheduled = false;

  constructor(
    protected readonly server: AdsServer,
    protected readonly call: ServerDuplexStream<Req, Res>,
    /** How logs name this kind of stream, e.g. `ADS` or `delta ADS`. */
    private readonly label: string,
    /** The request message's name, for the error a client without node.id gets. */
    private readonly requestName: string,
  ) {
    call.on('data', (req: Req) => {
      if (this.identify(req)) this.onRequest(req);
    });
    call.on('error', () => this.onClose());
    call.on('end', () => {
      this.onClose();
      call.end();
    });
    call.on('close', () => this.onClose());
  }

  /** A request from an identified node. */
  protected abstract onRequest(req: Req): void;

  /** Sends what the client lacks of the current snapshot. */
  protected abstract flush(): void;

  /** False while a push would only queue up (gRPC flow control); the stream schedules again on drain. */
  protected canPush(): boolean {
    return true;
  }

  end(): void {
    if (this.closed) return;
    this.call.end();
    this.onClose();
  }

  schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.canPush()) return;
      try {
        this.flush();
      } catch (err) {
        // A translation bug must not take the control plane down: drop this stream, the client reconnects.
        this.server.log.error(`${this.label} push failed; closing the stream`, {
          node: this.nodeId,
          error: err,
        });
        this.call.emit('error', { code: status.INTERNAL, details: 'push failed' });
      }
    });
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.nodeInfo) {
      this.server.log.info(`${this.label} stream closed`, { node: this.nodeId });
      this.server.emit('disconnect', this.nodeInfo);
    }
  }

  /**
   * The first request must name its node: that node's resource set is what the
   * stream serves. Without node.id the stream is refused with INVALID_ARGUMENT.
   */
  private identify(req: Req): boolean {
    if (this.nodeId !== undefined) return true;
    const id = req.node?.id;
    if (!id) {
      this.call.emit('error', {
        code: status.INVALID_ARGUMENT,
        details: `the first ${this.requestName} must carry node.id`,
      });
      this.call.end();
      return false;
    }
    this.nodeId = id;
    this.nodeInfo = { id, metadata: structToJson(req.node?.metadata as Parameters<typeof structToJson>[0]) };
    this.server.log.info(`${this.label} stream opened`, { node: id, peer: this.call.getPeer() });
    this.server.emit('connect', this.nodeInfo);
    return true;
  }
}
