/**
 * Incremental ADS (DeltaAggregatedResources): per stream and type, the client's
 * subscriptions (wildcard or named) and the version (content hash) it holds of
 * each resource; a push carries only new or changed resources plus the names
 * of removed ones. NACKs are logged like in state of the world.
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';
import {
  encodeMessage,
  isResourceType,
  RESOURCE_TYPES,
  type ResourceTypeUrl,
  shortTypeName,
} from '../protos.js';
import type { AdsServer } from './ads.js';
import type { EncodedResource, Snapshot } from './snapshot.js';
import { XdsStream } from './stream.js';

export interface DeltaDiscoveryRequest {
  node?: { id?: string; metadata?: unknown };
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: { code?: number; message?: string };
}

interface DeltaTypeState {
  wildcard: boolean;
  names: Set<string>;
  /** What the client holds: name -> version (our content hash). */
  versions: Map<string, string>;
  nonce: string | undefined;
  sentVersion: string | undefined;
}

export class DeltaStream extends XdsStream<DeltaDiscoveryRequest, Buffer> {
  private readonly types = new Map<ResourceTypeUrl, DeltaTypeState>();
  private nonce = 0;

  constructor(server: AdsServer, call: ServerDuplexStream<DeltaDiscoveryRequest, Buffer>) {
    super(server, call, 'delta ADS', 'DeltaDiscoveryRequest');
  }

  protected onRequest(req: DeltaDiscoveryRequest): void {
    const typeUrl = req.type_url ?? '';
    if (!isResourceType(typeUrl)) return;
    const subscribe = req.resource_names_subscribe ?? [];
    let st = this.types.get(typeUrl);
    if (!st) {
      st = {
        // Legacy wildcard: a first request naming nothing.
        wildcard: subscribe.length === 0 || subscribe.includes('*'),
        names: new Set(),
        versions: new Map(Object.entries(req.initial_resource_versions ?? {})),
        nonce: undefined,
        sentVersion: undefined,
      };
      this.types.set(typeUrl, st);
    }
    const nonce = req.response_nonce ?? '';
    if (nonce !== '' && nonce === st.nonce) {
      if (req.error_detail) {
        const errorDetail = req.error_detail.message ?? `code ${req.error_detail.code ?? '?'}`;
        this.server.log.warn('client rejected config (NACK)', {
          node: this.nodeId,
          type: shortTypeName(typeUrl),
          rejectedVersion: st.sentVersion,
          errorDetail,
          delta: true,
        });
        this.server.emit('nack', { node: this.nodeId!, typeUrl, version: st.sentVersion ?? '', errorDetail });
      } else {
        this.server.emit('ack', { node: this.nodeId!, typeUrl, version: st.sentVersion ?? '' });
      }
    }
    for (const n of subscribe) {
      if (n === '*') st.wildcard = true;
      else st.names.add(n);
    }
    for (const n of req.resource_names_unsubscribe ?? []) {
      if (n === '*') st.wildcard = false;
      st.names.delete(n);
      st.versions.delete(n);
    }
    this.schedule();
  }

  protected flush(): void {
    const snap = this.server.snapshot;
    if (!snap || this.closed || this.nodeId === undefined) return;
    for (const typeUrl of RESOURCE_TYPES) {
      const st = this.types.get(typeUrl);
      if (st) this.flushType(snap, typeUrl, st);
    }
  }

  private flushType(snap: Snapshot, typeUrl: ResourceTypeUrl, st: DeltaTypeState): void {
    const node = this.nodeId!;
    const want = new Map<string, EncodedResource>(st.wildcard ? snap.wildcard(typeUrl, node) : []);
    for (const n of st.names) {
      const r = snap.get(typeUrl, n, node);
      if (r) want.set(n, r);
    }
    const changed = [...want.values()].filter((r) => st.versions.get(r.name) !== r.hash);
    const removed = [...st.versions.keys()].filter((n) => !want.has(n));
    if (changed.length === 0 && removed.length === 0) return;
    for (const r of changed) st.versions.set(r.name, r.hash);
    for (const n of removed) st.versions.delete(n);
    st.nonce = String(++this.nonce);
    st.sentVersion = snap.version;
    this.call.write(
      encodeMessage(DELTA_RESPONSE, {
        system_version_info: snap.version,
        type_url: typeUrl,
        nonce: st.nonce,
        resources: changed.map((r) => ({
          name: r.name,
          version: r.hash,
          resource: { type_url: typeUrl, value: r.bytes },
        })),
        removed_resources: removed,
      }),
    );
    this.server.emit('push', { node, typeUrl, version: snap.version, resources: changed.length });
  }
}

const DELTA_RESPONSE = 'envoy.service.discovery.v3.DeltaDiscoveryResponse';
