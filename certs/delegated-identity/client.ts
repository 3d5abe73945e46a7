/**
 * A client of SPIRE's Delegated Identity API (`spire.api.agent.delegatedidentity.v1`, served on the
 * SPIRE agent's admin socket): an authorized delegate, such as a node proxy, subscribes to the
 * X.509-SVIDs of *other* workloads by their selectors, and to the trust bundles, without a
 * registration entry per workload for itself. SPIRE attests the caller by its process (the admin
 * socket's peer) and serves it only if one of its entries is in `authorized_delegates`.
 *
 * Each selector subscription is an `X509ContextWatcher`, so `WorkloadApiX509Source` keeps its
 * latest answer the way it keeps a Workload API's: reconnects with backoff, serves the last SVIDs
 * through an outage until each expires, drops them on PERMISSION_DENIED. Unlike the Workload API,
 * an empty answer is valid here: no entry matches those selectors, and that workload has no SVID.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SockmeshError } from '../../lib/errors.js';
import { splitDerCertificates } from '../pem.js';
import { parseSpiffeId, workloadOf } from '../spiffe-id.js';
import { svidFromDer, type TrustBundle, type X509Svid } from '../svid.js';
import type { WatchHandle, X509Context, X509ContextWatcher } from '../workload-api/client.js';
import { delegatedIdentityAsset } from './assets.js';

/** A SPIRE selector, e.g. `{type: 'k8s', value: 'ns:shop'}` (written `k8s:ns:shop`). */
export interface Selector {
  type: string;
  value: string;
}

export function formatSelectors(selectors: readonly Selector[]): string {
  return selectors.map((s) => `${s.type}:${s.value}`).join(',');
}

/**
 * The selectors SPIRE's Kubernetes workload attestor gives a pod running as this identity's
 * service account: `k8s:ns:<namespace>`, `k8s:sa:<serviceaccount>`. An entry registered for the
 * pods (those selectors, under the node's agent) matches them. Null for an ID that does not name a
 * namespace and service account.
 */
export function kubernetesSelectors(spiffeId: string): Selector[] | null {
  const ref = workloadOf(parseSpiffeId(spiffeId));
  if (!ref) return null;
  return [
    { type: 'k8s', value: `ns:${ref.namespace}` },
    { type: 'k8s', value: `sa:${ref.serviceAccount}` },
  ];
}

interface SvidWithKeyMessage {
  x509_svid: { cert_chain: Buffer[]; id: { trust_domain: string; path: string } | null; hint: string } | null;
  x509_svid_key: Buffer;
}
interface SvidsResponse {
  x509_svids: SvidWithKeyMessage[];
  federates_with: string[];
}
interface BundlesResponse {
  ca_certificates: Record<string, Buffer>;
}

const SERVICE = 'spire.api.agent.delegatedidentity.v1.DelegatedIdentity';
let ctor: grpc.ServiceClientConstructor | undefined;

function clientConstructor(): grpc.ServiceClientConstructor {
  if (!ctor) {
    const root = delegatedIdentityAsset('proto');
    const pkg = protoLoader.loadSync('spire/api/agent/delegatedidentity/v1/delegatedidentity.proto', {
      includeDirs: [root],
      keepCase: true,
      defaults: true,
      arrays: true,
      objects: true,
      longs: String,
      enums: String,
    });
    ctor = grpc.makeGenericClientConstructor(
      pkg[SERVICE] as unknown as grpc.ServiceDefinition,
      'DelegatedIdentity',
    );
  }
  return ctor;
}

/** `/path/admin.sock` or `unix:///path/admin.sock` as a gRPC target. */
function adminTarget(address: string): string {
  const path = address.startsWith('unix://') ? address.slice('unix://'.length) : address;
  if (!path.startsWith('/')) {
    throw new SockmeshError('SOCKMESH_E_USAGE', `SPIRE admin socket '${address}' is not an absolute path`, {
      hint: 'pass the admin_socket_path of the SPIRE agent, e.g. /run/spire/admin/admin.sock',
    });
  }
  return `unix://${path}`;
}

/** Decodes one SubscribeToX509SVIDs message against the bundles known now (SVIDs carry none). */
export function decodeDelegatedSvids(
  msg: SvidsResponse,
  bundles: ReadonlyMap<string, TrustBundle>,
): X509Svid[] {
  return (msg.x509_svids ?? []).map((s) => {
    const id = s.x509_svid?.id;
    if (!s.x509_svid?.cert_chain?.length || !id || !s.x509_svid_key?.length) {
      throw new SockmeshError(
        'SOCKMESH_E_SVID',
        'Delegated Identity API X509SVIDWithKey misses a mandatory field',
      );
    }
    const spiffeId = `spiffe://${id.trust_domain}${id.path}`;
    const svid = svidFromDer({
      spiffeId,
      chainDer: Buffer.concat(s.x509_svid.cert_chain.map((c) => Buffer.from(c))),
      keyPkcs8Der: Buffer.from(s.x509_svid_key),
      bundleDer: Buffer.alloc(0),
      ...(s.x509_svid.hint ? { hint: s.x509_svid.hint } : {}),
    });
    const bundle = bundles.get(svid.spiffeId.trustDomain);
    return bundle ? { ...svid, bundle } : svid;
  });
}

function decodeBundles(msg: BundlesResponse): Map<string, TrustBundle> {
  const out = new Map<string, TrustBundle>();
  for (const [td, der] of Object.entries(msg.ca_certificates ?? {})) {
    const trustDomain = parseSpiffeId(td).trustDomain;
    out.set(trustDomain, { trustDomain, certs: splitDerCertificates(Buffer.from(der)) });
  }
  return out;
}

interface Watch {
  onUpdate: (ctx: X509Context) => void;
  onError: (err: Error) => void;
  /** The last SVID message, decoded again when the bundles change. */
  last: SvidsResponse | undefined;
}

/**
 * One connection to a SPIRE agent's admin socket. `watcherFor(selectors)` gives each workload its
 * own SubscribeToX509SVIDs stream; one SubscribeToX509Bundles stream, open while any of them is,
 * supplies the bundles every context carries (an SVID update waits for the first bundles).
 */
export class DelegatedIdentityClient {
  readonly address: string;
  private readonly client: grpc.Client;
  private bundles: Map<string, TrustBundle> | undefined;
  private bundleStream: grpc.ClientReadableStream<BundlesResponse> | undefined;
  private readonly watches = new Set<Watch>();

  constructor(opts: { socketPath: string }) {
    this.address = adminTarget(opts.socketPath);
    const Ctor = clientConstructor();
    this.client = new Ctor(this.address, grpc.credentials.createInsecure());
  }

  /** The latest bundles by trust domain (the local one and every federated one), if any came yet. */
  trustBundles(): TrustBundle[] {
    return [...(this.bundles?.values() ?? [])];
  }

  watcherFor(selectors: readonly Selector[]): X509ContextWatcher {
    return {
      address: `${this.address} (${formatSelectors(selectors)})`,
      watchX509Context: (onUpdate, onError) => this.watch(selectors, onUpdate, onError),
    };
  }

  private watch(
    selectors: readonly Selector[],
    onUpdate: (ctx: X509Context) => void,
    onError: (err: Error) => void,
  ): WatchHandle {
    const w: Watch = { onUpdate, onError, last: undefined };
    this.watches.add(w);
    this.openBundles();
    const call = (
      this.client as unknown as Record<string, (req: object) => grpc.ClientReadableStream<SvidsResponse>>
    ).SubscribeToX509SVIDs!.call(this.client, { selectors: selectors.map((s) => ({ ...s })), pid: 0 });
    let cancelled = false;
    const fail = (err: Error) => {
      if (cancelled) return;
      cancelled = true;
      this.watches.delete(w);
      call.cancel();
      onError(err);
    };
    call.on('data', (msg: SvidsResponse) => {
      w.last = msg;
      this.deliver(w);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (!cancelled || err.code !== grpc.status.CANCELLED) fail(err);
    });
    call.on('end', () => fail(new SockmeshError('SOCKMESH_E_SVID', 'Delegated Identity API stream ended')));
    return {
      cancel: () => {
        cancelled = true;
        this.watches.delete(w);
        call.cancel();
        if (this.watches.size === 0) this.closeBundles();
      },
    };
  }

  private deliver(w: Watch): void {
    if (!w.last || !this.bundles) return;
    let svids: X509Svid[];
    try {
      svids = decodeDelegatedSvids(w.last, this.bundles);
    } catch (err) {
      w.onError(err as Error);
      return;
    }
    const own = new Set(svids.map((s) => s.spiffeId.trustDomain));
    w.onUpdate({
      svids,
      federatedBundles: [...this.bundles.values()].filter((b) => !own.has(b.trustDomain)),
    });
  }

  private openBundles(): void {
    if (this.bundleStream) return;
    const stream = (
      this.client as unknown as Record<string, (req: object) => grpc.ClientReadableStream<BundlesResponse>>
    ).SubscribeToX509Bundles!.call(this.client, {});
    this.bundleStream = stream;
    stream.on('data', (msg: BundlesResponse) => {
      try {
        this.bundles = decodeBundles(msg);
      } catch (err) {
        return this.failAll(err as Error);
      }
      for (const w of this.watches) this.deliver(w);
    });
    const broken = (err: Error) => {
      if (this.bundleStream !== stream) return;
      this.bundleStream = undefined;
      this.failAll(err);
    };
    stream.on('error', (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) broken(err);
    });
    stream.on('end', () =>
      broken(new SockmeshError('SOCKMESH_E_SVID', 'Delegated Identity bundle stream ended')),
    );
  }

  private closeBundles(): void {
    const s = this.bundleStream;
    this.bundleStream = undefined;
    s?.cancel();
  }

  /** A broken bundle stream breaks every subscription: each reconnects (and reopens it). */
  private failAll(err: Error): void {
    this.closeBundles();
    for (const w of [...this.watches]) {
      this.watches.delete(w);
      w.onError(err);
    }
  }

  close(): void {
    this.closeBundles();
    this.client.close();
  }
}
