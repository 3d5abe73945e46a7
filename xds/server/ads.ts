/**
 * envoy.service.discovery.v3.AggregatedDiscoveryService, state of the world.
 *
 * Per stream and type: subscribed names (or wildcard), the nonce of the last
 * response, what was sent (name -> content hash) and the last ACKed version.
 * A NACK is logged with the client's error_detail and nothing is resent until
 * the config changes again (the client keeps its last ACKed version). Pushes
 * are coalesced: a stream always sends the newest snapshot, never a backlog.
 * LDS and CDS responses carry every subscribed resource; RDS and EDS carry only
 * what changed (allowed by the protocol for those types).
 */
import { EventEmitter } from 'node:events';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../lib/log.js';
import {
  CLUSTER_TYPE,
  encodeMessage,
  isResourceType,
  LISTENER_TYPE,
  RESOURCE_TYPES,
  type ResourceTypeUrl,
  shortTypeName,
} from '../protos.js';
import { type DeltaDiscoveryRequest, DeltaStream } from './delta.js';
import type { EncodedResource, Snapshot } from './snapshot.js';
import { XdsStream } from './stream.js';

export interface DiscoveryRequest {
  version_info?: string;
  node?: { id?: string; cluster?: string; metadata?: unknown; locality?: Record<string, string> };
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: { code?: number; message?: string };
}

/** Responses are written pre-serialized (see withNonce); the service's serializer passes Buffers through. */
export type DiscoveryResponse = Buffer;

export interface AdsNodeInfo {
  id: string;
  metadata: Record<string, unknown>;
}

export interface AdsEvents {
  connect: [node: AdsNodeInfo];
  disconnect: [node: AdsNodeInfo];
  ack: [e: { node: string; typeUrl: string; version: string }];
  nack: [e: { node: string; typeUrl: string; version: string; errorDetail: string }];
  push: [e: { node: string; typeUrl: string; version: string; resources: number }];
}

interface TypeState {
  wildcard: boolean;
  names: Set<string>;
  nonce: string | undefined;
  version: string | undefined;
  ackedVersion: string | undefined;
  sent: Map<string, string>;
  /** Push everything subscribed at the next flush (new stream or new subscription). */
  force: boolean;
  /** Wildcard shared types: the snapshot whose whole set this stream was last sent. */
  base: Snapshot | undefined;
}

const ALL_REQUIRED = new Set<string>([LISTENER_TYPE, CLUSTER_TYPE]);

export class AdsServer extends EventEmitter<AdsEvents> {
  private current: Snapshot | undefined;
  private readonly streams = new Set<AdsStream>();
  private readonly deltaStreams = new Set<DeltaStream>();
  readonly log: Logger;

  constructor(logger: Logger = createLogger('xds')) {
    super();
    this.log = logger;
  }

  get snapshot(): Snapshot | undefined {
    return this.current;
  }

  setSnapshot(s: Snapshot): void {
    this.current = s;
    for (const st of this.streams) st.schedule();
    for (const st of this.deltaStreams) st.schedule();
  }

  /** The grpc-js handler for StreamAggregatedResources. */
  readonly handle = (call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void => {
    const stream = new AdsStream(this, call);
    this.streams.add(stream);
    call.on('close', () => this.streams.delete(stream));
  };

  /** The grpc-js handler for DeltaAggregatedResources (incremental xDS). */
  readonly handleDelta = (call: ServerDuplexStream<DeltaDiscoveryRequest, Buffer>): void => {
    const stream = new DeltaStream(this, call);
    this.deltaStreams.add(stream);
    call.on('close', () => this.deltaStreams.delete(stream));
  };

  /** Connected nodes and what they ACKed, for status output and tests. */
  clients(): { node: string; acked: Record<string, string | undefined> }[] {
    return [...this.streams]
      .filter((s) => s.nodeId !== undefined)
      .map((s) => ({ node: s.nodeId!, acked: s.acked() }));
  }

  /** Ends every stream (clients reconnect elsewhere or later). */
  closeStreams(): void {
    for (const s of this.streams) s.end();
    for (const s of this.deltaStreams) s.end();
  }
}

class AdsStream extends XdsStream<DiscoveryRequest, DiscoveryResponse> {
  private readonly types = new Map<ResourceTypeUrl, TypeState>();
  private nonce = 0;
  private blocked = false;

  constructor(server: AdsServer, call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) {
    super(server, call, 'ADS', 'DiscoveryRequest');
    call.on('drain', () => {
      this.blocked = false;
      this.schedule();
    });
  }

  acked(): Record<string, string | undefined> {
    const out: Record<string, string | undefined> = {};
    for (const [t, st] of this.types) out[shortTypeName(t)] = st.ackedVersion;
    return out;
  }

  protected override canPush(): boolean {
    return !this.blocked;
  }

  protected onRequest(req: DiscoveryRequest): void {
    const typeUrl = req.type_url ?? '';
    if (!isResourceType(typeUrl)) {
      this.server.log.debug('ignoring request for unsupported type', { node: this.nodeId, typeUrl });
      return;
    }
    let st = this.types.get(typeUrl);
    const nonce = req.response_nonce ?? '';
    if (st && nonce !== '' && nonce !== st.nonce) return; // stale: superseded by a newer response
    const names = req.resource_names ?? [];
    const wildcard = names.length === 0 || names.includes('*');
    if (!st) {
      st = {
        wildcard,
        names: new Set(),
        nonce: undefined,
        version: undefined,
        ackedVersion: undefined,
        sent: new Map(),
        force: true,
        base: undefined,
      };
      this.types.set(typeUrl, st);
    } else if (nonce !== '') {
      const version = req.version_info ?? '';
      if (req.error_detail) {
        const errorDetail = req.error_detail.message ?? `code ${req.error_detail.code ?? '?'}`;
        this.server.log.warn('client rejected config (NACK)', {
          node: this.nodeId,
          type: shortTypeName(typeUrl),
          rejectedVersion: st.version,
          keptVersion: version,
          errorDetail,
        });
        this.server.emit('nack', { node: this.nodeId!, typeUrl, version: st.version ?? '', errorDetail });
      } else {
        st.ackedVersion = version;
        this.server.emit('ack', { node: this.nodeId!, typeUrl, version });
      }
    } else {
      // A request without nonce on a known type: the client restarted this subscription.
      st.force = true;
    }
    const newNames = new Set(wildcard ? [] : names);
    const changed =
      wildcard !== st.wildcard ||
      newNames.size !== st.names.size ||
      [...newNames].some((n) => !st!.names.has(n));
    if (changed) {
      st.wildcard = wildcard;
      st.names = newNames;
      st.force = true;
      if (!wildcard) for (const n of st.sent.keys()) if (!newNames.has(n)) st.sent.delete(n);
    }
    if (st.force) this.schedule();
  }

  protected flush(): void {
    const snap = this.server.snapshot;
    if (!snap || this.closed || this.nodeId === undefined) return;
    for (const typeUrl of RESOURCE_TYPES) {
      const st = this.types.get(typeUrl);
      if (!st) continue;
      if (st.wildcard && typeUrl !== LISTENER_TYPE) this.flushShared(snap, typeUrl, st);
      else this.flushOwn(snap, typeUrl, st);
    }
  }

  /** Wildcard CDS/EDS/RDS: the same for every node, so diffs and encodings are shared via the snapshot. */
  private flushShared(snap: Snapshot, typeUrl: ResourceTypeUrl, st: TypeState): void {
    const all = () => [...snap.wildcard(typeUrl, this.nodeId!).values()];
    let body: Buffer;
    let count: number;
    if (st.force || !st.base) {
      body = snap.responseBody('all', typeUrl, all);
      count = snap.wildcard(typeUrl, this.nodeId!).size;
    } else {
      if (st.base === snap) return;
      const diff = snap.changedSince(st.base, typeUrl);
      if (diff.changed.length === 0 && (diff.removed === 0 || !ALL_REQUIRED.has(typeUrl))) {
        st.base = snap;
        return;
      }
      if (ALL_REQUIRED.has(typeUrl)) {
        body = snap.responseBody('all', typeUrl, all);
        count = snap.wildcard(typeUrl, this.nodeId!).size;
      } else {
        body = snap.responseBody(`since:${st.base.version}`, typeUrl, () => diff.changed);
        count = diff.changed.length;
      }
    }
    st.base = snap;
    st.sent.clear();
    this.send(snap, typeUrl, st, body, count);
  }

  /** Named subscriptions and the per-node LDS: compared resource by resource. */
  private flushOwn(snap: Snapshot, typeUrl: ResourceTypeUrl, st: TypeState): void {
    st.base = undefined;
    const candidates: EncodedResource[] = [];
    if (st.wildcard) candidates.push(...snap.wildcard(typeUrl, this.nodeId!).values());
    else {
      for (const n of st.names) {
        const r = snap.get(typeUrl, n, this.nodeId!);
        if (r) candidates.push(r);
      }
    }
    let toSend: EncodedResource[];
    if (ALL_REQUIRED.has(typeUrl)) {
      const same =
        candidates.length === st.sent.size && candidates.every((r) => st.sent.get(r.name) === r.hash);
      if (same && !st.force) return;
      toSend = candidates;
      st.sent = new Map(candidates.map((r) => [r.name, r.hash]));
    } else {
      toSend = st.force ? candidates : candidates.filter((r) => st.sent.get(r.name) !== r.hash);
      if (toSend.length === 0) {
        st.force = false;
        return;
      }
      for (const r of toSend) st.sent.set(r.name, r.hash);
    }
    // Every stream of one node gets the same wildcard LDS: encode it once per node and version.
    const body =
      st.wildcard && typeUrl === LISTENER_TYPE
        ? snap.responseBody(`node:${this.nodeId}`, typeUrl, () => toSend)
        : encodeMessage(DISCOVERY_RESPONSE, {
            version_info: snap.version,
            type_url: typeUrl,
            resources: toSend.map((r) => ({ type_url: typeUrl, value: r.bytes })),
          });
    this.send(snap, typeUrl, st, body, toSend.length);
  }

  private send(snap: Snapshot, typeUrl: ResourceTypeUrl, st: TypeState, body: Buffer, count: number): void {
    st.force = false;
    st.version = snap.version;
    st.nonce = String(++this.nonce);
    const ok = this.call.write(withNonce(body, st.nonce));
    this.server.emit('push', { node: this.nodeId!, typeUrl, version: snap.version, resources: count });
    if (!ok) this.blocked = true;
  }
}

const DISCOVERY_RESPONSE = 'envoy.service.discovery.v3.DiscoveryResponse';

/** Appends DiscoveryResponse.nonce (field 5, length-delimited): protobuf accepts fields in any order. */
function withNonce(body: Buffer, nonce: string): Buffer {
  const n = Buffer.from(nonce);
  const header: number[] = [0x2a];
  let len = n.length;
  while (len > 0x7f) {
    header.push((len & 0x7f) | 0x80);
    len >>>= 7;
  }
  header.push(len);
  return Buffer.concat([body, Buffer.from(header), n]);
}
