/**
 * The SPIFFE Workload API server on a unix socket. Each accepted connection is
 * identified once by SO_PEERCRED and handed to grpc-js through its own connection
 * injector, whose interceptor attaches that identity to every call on the
 * connection. What the caller gets is decided by CallerEntitlements (its pod's
 * identity, or every identity a registration table grants it); FetchX509SVID
 * streams all of them in one response and pushes a new one on every rotation.
 */
import { chmod, mkdir, unlink } from 'node:fs/promises';
import * as net from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../lib/log.js';
import type { SvidSource } from '../source.js';
import { trustDomainId } from '../spiffe-id.js';
import { bundleDer, svidKeyPkcs8Der, type TrustBundle, type X509Svid } from '../svid.js';
import { type CallerEntitlements, type Entitlement, WorkloadEntitlements } from './entitlements.js';
import { ensurePeercredAvailable, type PeerCredentials, peerCredentialsOf } from './peercred.js';
import {
  WORKLOAD_HEADER,
  workloadServiceDefinition,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';
import type { SvidProvider } from './provider.js';
import type { WorkloadResolver } from './resolver.js';

/** Who gets what: a pod resolver plus a provider (one identity per pod), or any CallerEntitlements. */
export type WorkloadApiGrants =
  | { resolver: WorkloadResolver; provider: SvidProvider }
  | { entitlements: CallerEntitlements };

export type WorkloadApiServerOptions = WorkloadApiGrants & {
  socketPath: string;
  /** Foreign trust domains' bundles, sent as federated_bundles and by FetchX509Bundles. */
  federatedBundles?: () => readonly TrustBundle[];
  logger?: Logger;
  /** Socket file mode; workloads of any uid must reach it (default 0o666). */
  socketMode?: number;
  /** Who answered: defaults to SO_PEERCRED through the addon. */
  peerCredentials?: (socket: net.Socket) => PeerCredentials;
};

interface GrpcError {
  code: grpc.status;
  details: string;
}

/** The connection a call arrived on, keyed by the call's Metadata object, which no client can forge. */
const callPeers = new WeakMap<grpc.Metadata, PeerCredentials>();

function peerTaggingInterceptor(peer: PeerCredentials): grpc.ServerInterceptor {
  return (_method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, mdNext) => {
            callPeers.set(metadata, peer);
            mdNext(metadata);
          },
        }),
    });
}

function x509SvidResponse(svids: readonly X509Svid[], federated: readonly TrustBundle[]): X509SvidResponse {
  return {
    svids: svids.map((svid) => ({
      spiffe_id: svid.spiffeId.uri,
      x509_svid: Buffer.concat(svid.chain),
      x509_svid_key: svidKeyPkcs8Der(svid),
      bundle: bundleDer(svid.bundle),
      hint: svid.hint ?? '',
    })),
    crl: [],
    federated_bundles: bundleMap(federated),
  };
}

function bundleMap(bundles: readonly TrustBundle[]): Record<string, Buffer> {
  return Object.fromEntries(bundles.map((b) => [trustDomainId(b.trustDomain), bundleDer(b)]));
}

/** The caller's own trust domains (from its SVIDs) and the federated ones. */
function x509BundlesResponse(
  svids: readonly X509Svid[],
  federated: readonly TrustBundle[],
): X509BundlesResponse {
  return { crl: [], bundles: { ...bundleMap(federated), ...bundleMap(svids.map((s) => s.bundle)) } };
}

function bundlesKey(svids: readonly X509Svid[], federated: readonly TrustBundle[]): string {
  return JSON.stringify(
    Object.entries(x509BundlesResponse(svids, federated).bundles).map(([td, der]) => [
      td,
      der.toString('base64'),
    ]),
  );
}

/** An open FetchX509SVID / FetchX509Bundles stream, re-evaluated by refresh(). */
interface OpenStream {
  reevaluate(): Promise<void>;
}

export class WorkloadApiServer {
  private readonly grpcServer: grpc.Server;
  private netServer: net.Server | undefined;
  private readonly connections = new Set<net.Socket>();
  private readonly streams = new Set<OpenStream>();
  private readonly entitlements: CallerEntitlements;
  private readonly log: Logger;

  constructor(private readonly opts: WorkloadApiServerOptions) {
    this.log = (opts.logger ?? createLogger('certs')).child({ sub: 'workload-api' });
    this.entitlements =
      'entitlements' in opts ? opts.entitlements : new WorkloadEntitlements(opts.resolver, opts.provider);
    this.grpcServer = new grpc.Server({ 'grpc.enable_channelz': 0 });
    this.grpcServer.addService(workloadServiceDefinition(), {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, X509SvidResponse>) =>
        void this.stream(call, x509SvidResponse, (svids) => svids.map((s) => s.serial).join(',')),
      FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, X509BundlesResponse>) =>
        void this.stream(call, x509BundlesResponse, bundlesKey),
      FetchJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
        cb(this.unimplemented(call.metadata, 'FetchJWTSVID')),
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) =>
        call.emit('error', this.unimplemented(call.metadata, 'FetchJWTBundles')),
      ValidateJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
        cb(this.unimplemented(call.metadata, 'ValidateJWTSVID')),
    });
  }

  /** Listens on the socket path (replacing a stale socket file). */
  async start(): Promise<void> {
    if (!this.opts.peerCredentials) ensurePeercredAvailable();
    await mkdir(dirname(this.opts.socketPath), { recursive: true, mode: 0o755 });
    await unlink(this.opts.socketPath).catch(() => {});
    const server = net.createServer((socket) => this.accept(socket));
    this.netServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error('workload API socket error', { err }));
    await chmod(this.opts.socketPath, this.opts.socketMode ?? 0o666);
    this.log.info('workload API listening', { socket: this.opts.socketPath });
  }

  /** Re-evaluates every open stream's entitlement (after the grants changed, e.g. a reloaded table). */
  async refresh(): Promise<void> {
    await Promise.all([...this.streams].map((s) => s.reevaluate()));
  }

  async stop(): Promise<void> {
    this.streams.clear();
    const server = this.netServer;
    this.netServer = undefined;
    for (const s of this.connections) s.destroy();
    this.grpcServer.forceShutdown();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await unlink(this.opts.socketPath).catch(() => {});
  }

  private accept(socket: net.Socket): void {
    let peer: PeerCredentials;
    try {
      peer = (this.opts.peerCredentials ?? peerCredentialsOf)(socket);
    } catch (err) {
      this.log.warn('cannot identify Workload API caller; closing', { err });
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    const creds = grpc.experimental.createServerCredentialsWithInterceptors(
      grpc.ServerCredentials.createInsecure(),
      [peerTaggingInterceptor(peer)],
    );
    const injector = this.grpcServer.createConnectionInjector(creds);
    socket.once('close', () => {
      this.connections.delete(socket);
      injector.destroy();
    });
    injector.injectConnection(socket);
  }

  private headerError(metadata: grpc.Metadata): GrpcError | null {
    const values = metadata.get(WORKLOAD_HEADER);
    if (values.length === 1 && String(values[0]) === 'true') return null;
    return {
      code: grpc.status.INVALID_ARGUMENT,
      details: `security header missing from request: '${WORKLOAD_HEADER}: true' is required`,
    };
  }

  private unimplemented(metadata: grpc.Metadata, method: string): GrpcError {
    return (
      this.headerError(metadata) ?? {
        code: grpc.status.UNIMPLEMENTED,
        details: `${method}: the JWT-SVID profile is not implemented by sockmesh`,
      }
    );
  }

  private federated(): readonly TrustBundle[] {
    return this.opts.federatedBundles?.() ?? [];
  }

  private async stream<T>(
    call: grpc.ServerWritableStream<unknown, T>,
    render: (svids: readonly X509Svid[], federated: readonly TrustBundle[]) => T,
    /** What a message depends on: an update that does not change it is not sent again. */
    contentKey: (svids: readonly X509Svid[], federated: readonly TrustBundle[]) => string,
  ): Promise<void> {
    const method = call.getPath();
    const headerErr = this.headerError(call.metadata);
    if (headerErr) {
      call.emit('error', headerErr);
      return;
    }
    const peer = callPeers.get(call.metadata);
    if (!peer) {
      call.emit('error', {
        code: grpc.status.INTERNAL,
        details: 'call arrived without connection credentials',
      });
      return;
    }
    let sources: SvidSource[] = [];
    let unsubscribe: Array<() => void> = [];
    let lastKey: string | undefined;
    let ended = false;
    const open: OpenStream = { reevaluate: () => evaluate(false) };
    const end = () => {
      if (ended) return;
      ended = true;
      this.streams.delete(open);
      for (const u of unsubscribe) u();
      unsubscribe = [];
    };
    const fail = (err: GrpcError) => {
      const live = !ended && !call.cancelled;
      end();
      if (live) call.emit('error', err);
    };
    const send = () => {
      if (ended || call.cancelled) return;
      const svids = sources.map((s) => s.current()).filter((s): s is X509Svid => s !== null);
      if (svids.length === 0) {
        return fail({
          code: grpc.status.UNAVAILABLE,
          details: 'every SVID of this caller expired and renewal has not succeeded yet',
        });
      }
      const federated = this.federated();
      const key = contentKey(svids, federated);
      if (key === lastKey) return;
      lastKey = key;
      call.write(render(svids, federated));
    };
    const evaluate = async (first: boolean): Promise<void> => {
      let granted: Entitlement | null;
      try {
        granted = await this.entitlements.entitle(peer);
      } catch (err) {
        this.log.error('Workload API could not serve caller', { method, pid: peer.pid, err });
        return fail({
          code: grpc.status.UNAVAILABLE,
          details: `cannot obtain an SVID right now: ${(err as Error).message}`,
        });
      }
      if (ended || call.cancelled) return end();
      if (!granted) {
        this.log.warn('Workload API caller is entitled to no identity', {
          method,
          pid: peer.pid,
          uid: peer.uid,
        });
        return fail({
          code: grpc.status.PERMISSION_DENIED,
          details: `no identity issued to this process (pid ${peer.pid} matches no workload or registration entry)`,
        });
      }
      for (const u of unsubscribe) u();
      sources = granted.sources;
      unsubscribe = sources.map((s) => s.subscribe(send));
      if (first) {
        this.streams.add(open);
        this.log.info('Workload API stream opened', { method, pid: peer.pid, ...granted.who });
      }
      send();
    };
    call.once('cancelled', end);
    call.once('close', end);
    call.once('error', end);
    call.once('finish', end);
    await evaluate(true);
  }
}
