/**
 * An immutable, encoded view of one model version. Node-independent resources
 * are encoded once and shared; per-node listeners and on-demand API listeners
 * are encoded lazily and cached for the life of the snapshot.
 */
import { createHash } from 'node:crypto';
import { encodeResource } from '../codec.js';
import type { MeshModel } from '../model/types.js';
import {
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  encodeMessage,
  LISTENER_TYPE,
  type ResourceTypeUrl,
  ROUTE_TYPE,
} from '../protos.js';

const DISCOVERY_RESPONSE = 'envoy.service.discovery.v3.DiscoveryResponse';

import type { Json } from '../translate/envoy.js';
import {
  type MeshTranslation,
  translateApiListener,
  translateInbound,
  translateMesh,
} from '../translate/index.js';
import { INBOUND_LISTENER, OUTBOUND_LISTENER } from '../translate/names.js';

export interface EncodedResource {
  name: string;
  typeUrl: ResourceTypeUrl;
  bytes: Buffer;
  /** Content hash, to tell whether a client already has this exact resource. */
  hash: string;
}

export type ResourceMap = ReadonlyMap<string, EncodedResource>;

/**
 * Encoded resources by their JSON text. Protobuf encoding costs far more than
 * JSON.stringify, and between two versions almost every resource is the same:
 * a snapshot reuses its predecessor's encodings for identical resources.
 */
class EncodeCache {
  private readonly entries = new Map<string, EncodedResource>();
  private previous: EncodeCache | undefined;

  constructor(previous: EncodeCache | undefined) {
    this.previous = previous;
  }

  encode(typeUrl: ResourceTypeUrl, name: string, obj: Json): EncodedResource {
    const key = `${typeUrl}\0${JSON.stringify(obj)}`;
    let r = this.entries.get(key) ?? this.previous?.entries.get(key);
    if (!r) {
      const bytes = encodeResource(typeUrl, obj);
      r = { name, typeUrl, bytes, hash: createHash('sha1').update(bytes).digest('base64') };
    }
    this.entries.set(key, r);
    return r;
  }

  encodeAll(
    typeUrl: ResourceTypeUrl,
    list: Json[],
    key: 'name' | 'cluster_name',
  ): Map<string, EncodedResource> {
    const out = new Map<string, EncodedResource>();
    for (const r of list) {
      const name = r[key] as string;
      out.set(name, this.encode(typeUrl, name, r));
    }
    return out;
  }

  /** Drops the predecessor once a snapshot is built, so memory holds one version (plus lazily added entries). */
  seal(): void {
    this.previous = undefined;
  }
}

export class Snapshot {
  readonly version: string;
  private readonly shared: MeshTranslation;
  private readonly clusters: Map<string, EncodedResource>;
  private readonly endpoints: Map<string, EncodedResource>;
  private readonly routes: Map<string, EncodedResource>;
  private readonly outbound: EncodedResource;
  private readonly perNode = new Map<string, EncodedResource>();
  private readonly api = new Map<string, EncodedResource | null>();

  private readonly cache: EncodeCache;
  private readonly diffs = new Map<string, { changed: EncodedResource[]; removed: number }>();
  private readonly bodies = new Map<string, Buffer>();

  /** `previous`: the snapshot this one replaces; its encodings are reused where resources did not change. */
  constructor(
    readonly model: MeshModel,
    version: number,
    previous?: Snapshot,
  ) {
    this.version = String(version);
    this.cache = new EncodeCache(previous?.cache);
    this.shared = translateMesh(model);
    this.clusters = this.cache.encodeAll(CLUSTER_TYPE, this.shared.clusters, 'name');
    this.endpoints = this.cache.encodeAll(ENDPOINT_TYPE, this.shared.endpoints, 'cluster_name');
    this.routes = this.cache.encodeAll(ROUTE_TYPE, this.shared.routes, 'name');
    this.outbound = this.cache.encode(LISTENER_TYPE, OUTBOUND_LISTENER, this.shared.outboundListener);
    // Per-node listeners of connected nodes are usually unchanged too: encode them now, while the old cache is here.
    for (const node of previous?.perNode.keys() ?? []) this.inbound(node);
    this.cache.seal();
  }

  private inbound(node: string): EncodedResource {
    let r = this.perNode.get(node);
    if (!r) {
      r = this.cache.encode(LISTENER_TYPE, INBOUND_LISTENER, translateInbound(this.model, this.shared, node));
      this.perNode.set(node, r);
    }
    return r;
  }

  private apiListener(name: string): EncodedResource | undefined {
    let r = this.api.get(name);
    if (r === undefined) {
      const l = translateApiListener(this.model, name);
      r = l ? this.cache.encode(LISTENER_TYPE, name, l) : null;
      this.api.set(name, r);
    }
    return r ?? undefined;
  }

  /** All resources of a type a wildcard subscriber on `node` gets. */
  wildcard(typeUrl: ResourceTypeUrl, node: string): ResourceMap {
    switch (typeUrl) {
      case LISTENER_TYPE:
        return new Map([
          [OUTBOUND_LISTENER, this.outbound],
          [INBOUND_LISTENER, this.inbound(node)],
        ]);
      case ROUTE_TYPE:
        return this.routes;
      case CLUSTER_TYPE:
        return this.clusters;
      default:
        return this.endpoints;
    }
  }

  /** One named resource as `node` sees it, or undefined if it does not exist. */
  get(typeUrl: ResourceTypeUrl, name: string, node: string): EncodedResource | undefined {
    if (typeUrl === LISTENER_TYPE) {
      if (name === OUTBOUND_LISTENER) return this.outbound;
      if (name === INBOUND_LISTENER) return this.inbound(node);
      return this.apiListener(name);
    }
    return this.wildcard(typeUrl, node).get(name);
  }

  /**
   * Resources of a node-independent type (CDS, EDS, RDS) that are new or
   * different since `base`, and how many of base's are gone. Computed once per
   * (type, base) and shared by every stream that last saw `base`.
   */
  changedSince(base: Snapshot, typeUrl: ResourceTypeUrl): { changed: EncodedResource[]; removed: number } {
    const key = `${typeUrl}|${base.version}`;
    let d = this.diffs.get(key);
    if (!d) {
      const cur = this.wildcard(typeUrl, '');
      const old = base.wildcard(typeUrl, '');
      const changed = [...cur.values()].filter((r) => old.get(r.name)?.hash !== r.hash);
      let removed = 0;
      for (const name of old.keys()) if (!cur.has(name)) removed++;
      d = { changed, removed };
      this.diffs.set(key, d);
    }
    return d;
  }

  /**
   * A DiscoveryResponse for `resources`, serialized without its nonce and
   * memoized under `key`: streams append their own nonce (field 5) to the same
   * bytes instead of each re-encoding thousands of resources.
   */
  responseBody(key: string, typeUrl: ResourceTypeUrl, resources: () => EncodedResource[]): Buffer {
    const k = `${typeUrl}|${key}`;
    let b = this.bodies.get(k);
    if (!b) {
      b = encodeMessage(DISCOVERY_RESPONSE, {
        version_info: this.version,
        type_url: typeUrl,
        resources: resources().map((r) => ({ type_url: typeUrl, value: r.bytes })),
      });
      this.bodies.set(k, b);
    }
    return b;
  }

  counts(): Record<string, number> {
    return { clusters: this.clusters.size, endpoints: this.endpoints.size, routes: this.routes.size };
  }
}
