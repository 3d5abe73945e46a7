/**
 * A SPIFFE Workload API client for any conforming server (the embedded one or a
 * SPIRE agent): one-shot fetches and a watch of the FetchX509SVID stream. The
 * sources that keep its latest response current are in x509-source.ts.
 */
import * as grpc from '@grpc/grpc-js';
import { SockmeshError } from '../../lib/errors.js';
import { splitDerCertificates } from '../pem.js';
import { parseSpiffeId } from '../spiffe-id.js';
import { svidFromDer, type TrustBundle, type X509Svid } from '../svid.js';
import { endpointTarget, resolveEndpoint } from './endpoint.js';
import {
  WORKLOAD_HEADER,
  workloadClientConstructor,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';

export interface X509Context {
  /** The first is the default identity. */
  svids: X509Svid[];
  federatedBundles: TrustBundle[];
}

function bundlesFromMap(map: Record<string, Buffer>): TrustBundle[] {
  return Object.entries(map).map(([td, der]) => ({
    trustDomain: parseSpiffeId(td).trustDomain,
    certs: splitDerCertificates(Buffer.from(der)),
  }));
}

/** Decodes one FetchX509SVID message; mandatory fields must be present (spec 4.5). */
export function decodeX509SvidResponse(msg: X509SvidResponse): X509Context {
  if (!msg.svids || msg.svids.length === 0) {
    throw new SockmeshError('SOCKMESH_E_SVID', 'Workload API response carries no SVID');
  }
  const svids = msg.svids.map((s) => {
    if (!s.spiffe_id || !s.x509_svid?.length || !s.x509_svid_key?.length || !s.bundle?.length) {
      throw new SockmeshError('SOCKMESH_E_SVID', 'Workload API X509SVID entry misses a mandatory field');
    }
    return svidFromDer({
      spiffeId: s.spiffe_id,
      chainDer: Buffer.from(s.x509_svid),
      keyPkcs8Der: Buffer.from(s.x509_svid_key),
      bundleDer: Buffer.from(s.bundle),
      ...(s.hint ? { hint: s.hint } : {}),
    });
  });
  return { svids, federatedBundles: bundlesFromMap(msg.federated_bundles ?? {}) };
}

export interface WatchHandle {
  cancel(): void;
}

/** A stream of complete X.509 contexts: the Workload API's FetchX509SVID, or SPIRE's Delegated Identity API. */
export interface X509ContextWatcher {
  /** Where it reads from, for logs and status. */
  readonly address: string;
  watchX509Context(onUpdate: (ctx: X509Context) => void, onError: (err: Error) => void): WatchHandle;
}

export class WorkloadApiClient implements X509ContextWatcher {
  readonly address: string;
  private readonly client: grpc.Client;

  constructor(opts: { address?: string } = {}) {
    this.address = resolveEndpoint(opts.address);
    const Ctor = workloadClientConstructor();
    this.client = new Ctor(endpointTarget(this.address), grpc.credentials.createInsecure());
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(WORKLOAD_HEADER, 'true');
    return md;
  }

  private openStream<T>(method: string): grpc.ClientReadableStream<T> {
    const fn = (
      this.client as unknown as Record<
        string,
        (req: object, md: grpc.Metadata) => grpc.ClientReadableStream<T>
      >
    )[method]!;
    return fn.call(this.client, {}, this.metadata());
  }

  /** Follows FetchX509SVID: every message is a complete update. */
  watchX509Context(onUpdate: (ctx: X509Context) => void, onError: (err: Error) => void): WatchHandle {
    const stream = this.openStream<X509SvidResponse>('FetchX509SVID');
    let cancelled = false;
    stream.on('data', (msg: X509SvidResponse) => {
      let ctx: X509Context;
      try {
        ctx = decodeX509SvidResponse(msg);
      } catch (err) {
        return onError(err as Error);
      }
      onUpdate(ctx);
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (!cancelled || err.code !== grpc.status.CANCELLED) onError(err);
    });
    stream.on('end', () => {
      if (!cancelled) onError(new SockmeshError('SOCKMESH_E_SVID', 'Workload API stream ended'));
    });
    return {
      cancel: () => {
        cancelled = true;
        stream.cancel();
      },
    };
  }

  /** The first FetchX509SVID message. */
  fetchX509Context(): Promise<X509Context> {
    return new Promise((resolve, reject) => {
      const h = this.watchX509Context(
        (ctx) => {
          h.cancel();
          resolve(ctx);
        },
        (err) => {
          h.cancel();
          reject(err);
        },
      );
    });
  }

  /** The first FetchX509Bundles message, as trust bundles. */
  fetchX509Bundles(): Promise<TrustBundle[]> {
    return new Promise((resolve, reject) => {
      const stream = this.openStream<X509BundlesResponse>('FetchX509Bundles');
      let settled = false;
      stream.on('data', (msg: X509BundlesResponse) => {
        if (settled) return;
        settled = true;
        stream.cancel();
        try {
          resolve(bundlesFromMap(msg.bundles ?? {}));
        } catch (err) {
          reject(err);
        }
      });
      stream.on('error', (err) => {
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
