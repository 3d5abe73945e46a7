/**
 * The SPIFFE Workload API server on a unix socket. Each accepted connection is
 * identified once by SO_PEERCRED (pid -> cgroup -> pod through a WorkloadResolver)
 * and handed to grpc-js through its own connection injector, whose interceptor
 * attaches that identity to every call on the connection. FetchX509SVID streams the
 * current SVID and pushes each rotation.
 */
import { chmod, mkdir, unlink } from 'node:fs/promises';
import * as net from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { SockmeshError } from '../../lib/errors.js';
import { createLogger, type Logger } from '../../lib/log.js';
import type { SvidSource } from '../source.js';
import { trustDomainId } from '../spiffe-id.js';
import { bundleDer, svidKeyPkcs8Der, type X509Svid } from '../svid.js';
import { ensurePeercredAvailable, type PeerCredentials, peerCredentialsOf } from './peercred.js';
import {
  WORKLOAD_HEADER,
  workloadServiceDefinition,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';
import type { SvidProvider } from './provider.js';
import type { WorkloadInfo, WorkloadResolver } from './resolver.js';

export interface WorkloadApiServerOptions {
  socketPath: string;
  resolver: WorkloadResolver;
  provider: SvidProvider;
  logger?: Logger;
  /** Socket file mode; workloads of any uid must reach it (default 0o666). */
  socketMode?: number;
  /** Who answered: defaults to SO_PEERCRED through the addon. */
  peerCredentials?: (socket: net.Socket) => PeerCredentials;
}

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

function x509SvidResponse(svid: X509Svid): X509SvidResponse {
  return {
    svids: [
      {
        spiffe_id: svid.spiffeId.uri,
        x509_svid: Buffer.concat(svid.chain),
        x509_svid_key: svidKeyPkcs8Der(svid),
        bundle: bundleDer(svid.bundle),
        hint: svid.hint ?? '',
      },
    ],
    crl: [],
    federated_bundles: {},
  };
}

function x509BundlesResponse(svid: X509Svid): X509BundlesResponse {
  return { crl: [], bundles: { [trustDomainId(svid.bundle.trustDomain)]: bundleDer(svid.bundle) } };
}

export class WorkloadApiServer {
  private readonly grpcServer: grpc.Server;
  private netServer: net.Server | undefined;
  private readonly connections = new Set<net.Socket>();
  private readonly log: Logger;

  constructor(private readonly opts: WorkloadApiServerOptions) {
    this.log = (opts.logger ?? createLogger('certs')).child({ sub: 'workload-api' });
    this.grpcServer = new grpc.Server({ 'grpc.enable_channelz': 0 });
    this.grpcServer.addService(workloadServiceDefinition(), {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, X509SvidResponse>) =>
        void this.stream(call, x509SvidResponse, (svid) => svid.serial),
      FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, X509BundlesResponse>) =>
        void this.stream(call, x509BundlesResponse, (svid) => bundleDer(svid.bundle).toString('base64')),
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

  async stop(): Promise<void> {
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

  /** Who is calling, by the kernel's account; null means "not a workload we serve". */
  private async caller(
    metadata: grpc.Metadata,
  ): Promise<{ peer: PeerCredentials; workload: WorkloadInfo | null }> {
    const peer = callPeers.get(metadata);
    if (!peer) throw new SockmeshError('SOCKMESH_E_SVID', 'call arrived without connection credentials');
    return { peer, workload: await this.opts.resolver.resolve(peer.pid) };
  }

  private async stream<T>(
    call: grpc.ServerWritableStream<unknown, T>,
    render: (svid: X509Svid) => T,
    /** What a message depends on: an update that does not change it is not sent again. */
    contentKey: (svid: X509Svid) => string,
  ): Promise<void> {
    const method = call.getPath();
    const fail = (err: GrpcError) => {
      if (!call.cancelled) call.emit('error', err);
    };
    const headerErr = this.headerError(call.metadata);
    if (headerErr) return fail(headerErr);
    let source: SvidSource;
    let workload: WorkloadInfo;
    let peer: PeerCredentials;
    try {
      const who = await this.caller(call.metadata);
      peer = who.peer;
      if (!who.workload) {
        this.log.warn('Workload API caller is not a known workload', {
          method,
          pid: peer.pid,
          uid: peer.uid,
        });
        return fail({
          code: grpc.status.PERMISSION_DENIED,
          details: `no identity issued to this process (pid ${peer.pid} is not in a meshed workload)`,
        });
      }
      workload = who.workload;
      source = await this.opts.provider.sourceFor(workload);
    } catch (err) {
      this.log.error('Workload API could not serve caller', { method, err });
      return fail({
        code: grpc.status.UNAVAILABLE,
        details: `cannot obtain an SVID right now: ${(err as Error).message}`,
      });
    }
    if (call.cancelled) return;
    let lastKey: string | undefined;
    const send = (svid: X509Svid | null) => {
      if (call.cancelled) return;
      if (!svid) {
        return fail({
          code: grpc.status.UNAVAILABLE,
          details: 'the SVID expired and renewal has not succeeded yet',
        });
      }
      const key = contentKey(svid);
      if (key === lastKey) return;
      lastKey = key;
      call.write(render(svid));
    };
    const unsubscribe = source.subscribe(send);
    const done = () => unsubscribe();
    call.once('cancelled', done);
    call.once('close', done);
    call.once('error', done);
    call.once('finish', done);
    this.log.info('Workload API stream opened', {
      method,
      pid: peer.pid,
      namespace: workload.namespace,
      serviceAccount: workload.serviceAccount,
      pod: workload.podName,
    });
    send(source.current());
  }
}
