/**
 * The agent's xDS client: one ADS stream (TCP, TLS or unix:), wildcard LDS and
 * CDS, RDS and EDS subscriptions following what those reference (like Envoy).
 * Valid updates are ACKed, updates the caller's validator rejects are NACKed
 * with error_detail and the previous config is kept. Reconnects with
 * exponential backoff and jitter; the last good config stays while disconnected.
 */
import { EventEmitter } from 'node:events';
import { type ChannelCredentials, type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../lib/log.js';
import { jsonToStruct, normalizeDecoded } from '../codec.js';
import {
  adsClientConstructor,
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  LISTENER_TYPE,
  type ProtoObject,
  RESOURCE_TYPES,
  type ResourceTypeUrl,
  ROUTE_TYPE,
  shortTypeName,
} from '../protos.js';

export interface AdsClientOptions {
  /** `host:port` or `unix:/path`. */
  target: string;
  node: {
    id: string;
    cluster?: string;
    locality?: { region?: string; zone?: string; sub_zone?: string };
    metadata?: Record<string, unknown>;
  };
  /** Default: insecure (loopback / unix socket). */
  credentials?: ChannelCredentials;
  /**
   * Returns an error message to NACK an update (the whole response), or undefined to accept it.
   * Gets the complete new set for LDS and CDS, the resources of the response for RDS and EDS.
   */
  validate?: (typeUrl: ResourceTypeUrl, resources: ReadonlyMap<string, ProtoObject>) => string | undefined;
  backoff?: { initialMs?: number; maxMs?: number };
  logger?: Logger;
}

export interface XdsConfig {
  listeners: ReadonlyMap<string, ProtoObject>;
  routes: ReadonlyMap<string, ProtoObject>;
  clusters: ReadonlyMap<string, ProtoObject>;
  endpoints: ReadonlyMap<string, ProtoObject>;
  /** Last accepted version per type (LDS/RDS/CDS/EDS). */
  versions: Readonly<Record<'LDS' | 'RDS' | 'CDS' | 'EDS', string | undefined>>;
}

export interface AdsClientEvents {
  update: [config: XdsConfig, changed: ResourceTypeUrl];
  connected: [];
  disconnected: [reason: string];
  nack: [e: { typeUrl: ResourceTypeUrl; version: string; error: string }];
}

interface Response {
  version_info?: string;
  resources?: ProtoObject[];
  type_url?: string;
  nonce?: string;
}

type Stream = ClientDuplexStream<object, Response>;

interface TypeState {
  resources: Map<string, ProtoObject>;
  version: string | undefined;
  nonce: string | undefined;
  names: string[];
}

const RESOURCE_NAME_KEY: Record<ResourceTypeUrl, string> = {
  [LISTENER_TYPE]: 'name',
  [ROUTE_TYPE]: 'name',
  [CLUSTER_TYPE]: 'name',
  [ENDPOINT_TYPE]: 'cluster_name',
};

export class AdsClient extends EventEmitter<AdsClientEvents> {
  private readonly log: Logger;
  private readonly client: InstanceType<ReturnType<typeof adsClientConstructor>>;
  private stream: Stream | undefined;
  private readonly state = new Map<ResourceTypeUrl, TypeState>();
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private connected = false;

  constructor(private readonly opts: AdsClientOptions) {
    super();
    this.log = opts.logger ?? createLogger('xds-client');
    const Ctor = adsClientConstructor();
    this.client = new Ctor(opts.target, opts.credentials ?? credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
      'grpc.keepalive_time_ms': 30_000,
    });
    for (const t of RESOURCE_TYPES)
      this.state.set(t, { resources: new Map(), version: undefined, nonce: undefined, names: [] });
  }

  /** The current (last accepted) configuration. */
  config(): XdsConfig {
    const s = (t: ResourceTypeUrl) => this.state.get(t)!;
    return {
      listeners: s(LISTENER_TYPE).resources,
      routes: s(ROUTE_TYPE).resources,
      clusters: s(CLUSTER_TYPE).resources,
      endpoints: s(ENDPOINT_TYPE).resources,
      versions: {
        LDS: s(LISTENER_TYPE).version,
        RDS: s(ROUTE_TYPE).version,
        CDS: s(CLUSTER_TYPE).version,
        EDS: s(ENDPOINT_TYPE).version,
      },
    };
  }

  get isConnected(): boolean {
    return this.connected;
  }

  start(): void {
    this.closed = false;
    this.open();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.stream?.cancel();
    this.stream = undefined;
    this.client.close();
  }

  private open(): void {
    if (this.closed) return;
    const s = (this.client as unknown as { StreamAggregatedResources(): Stream }).StreamAggregatedResources();
    this.stream = s;
    let gotResponse = false;
    s.on('data', (res: Response) => {
      if (!gotResponse) {
        gotResponse = true;
        this.attempt = 0;
        if (!this.connected) {
          this.connected = true;
          this.emit('connected');
        }
      }
      this.onResponse(res);
    });
    const onGone = (reason: string) => {
      if (this.stream !== s) return;
      this.stream = undefined;
      if (this.connected) {
        this.connected = false;
        this.emit('disconnected', reason);
      }
      for (const st of this.state.values()) st.nonce = undefined;
      this.retry(reason);
    };
    s.on('error', (err: Error) => onGone(err.message));
    s.on('end', () => onGone('stream ended by server'));
    // Wildcard LDS/CDS first; RDS/EDS follow what they reference (kept from before a reconnect).
    for (const t of [CLUSTER_TYPE, LISTENER_TYPE] as const) this.send(t, undefined);
    for (const t of [ENDPOINT_TYPE, ROUTE_TYPE] as const) {
      if (this.state.get(t)!.names.length > 0) this.send(t, undefined);
    }
  }

  private retry(reason: string): void {
    if (this.closed) return;
    const initial = this.opts.backoff?.initialMs ?? 200;
    const max = this.opts.backoff?.maxMs ?? 10_000;
    const base = Math.min(max, initial * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2)); // "equal jitter"
    this.attempt++;
    this.log.warn('ADS stream down; reconnecting', {
      target: this.opts.target,
      reason,
      inMs: delay,
      attempt: this.attempt,
    });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  private send(typeUrl: ResourceTypeUrl, error: string | undefined): void {
    const st = this.state.get(typeUrl)!;
    const req: Record<string, unknown> = {
      version_info: st.version ?? '',
      resource_names: typeUrl === LISTENER_TYPE || typeUrl === CLUSTER_TYPE ? [] : st.names,
      type_url: typeUrl,
      response_nonce: st.nonce ?? '',
      node: {
        id: this.opts.node.id,
        cluster: this.opts.node.cluster ?? 'sockmesh',
        locality: this.opts.node.locality ?? { zone: this.opts.node.id },
        metadata: jsonToStruct(this.opts.node.metadata ?? {}),
        user_agent_name: 'sockmesh-agent',
      },
    };
    if (error !== undefined) req.error_detail = { code: 3, message: error };
    this.stream?.write(req);
  }

  private onResponse(res: Response): void {
    const typeUrl = res.type_url as ResourceTypeUrl;
    const st = this.state.get(typeUrl);
    if (!st) return;
    st.nonce = res.nonce;
    const version = res.version_info ?? '';
    const incoming = new Map<string, ProtoObject>();
    for (const raw of res.resources ?? []) {
      const r = normalizeDecoded(raw);
      const name = r[RESOURCE_NAME_KEY[typeUrl]];
      if (typeof name === 'string') incoming.set(name, r);
    }
    // LDS and CDS responses are complete; RDS and EDS carry changed resources only.
    const next =
      typeUrl === LISTENER_TYPE || typeUrl === CLUSTER_TYPE
        ? incoming
        : new Map([...st.resources].filter(([n]) => st.names.includes(n)).concat([...incoming]));
    const error = this.validate(typeUrl, next, incoming);
    if (error !== undefined) {
      this.log.warn('rejecting xDS update (NACK)', { type: shortTypeName(typeUrl), version, error });
      this.send(typeUrl, error);
      this.emit('nack', { typeUrl, version, error });
      return;
    }
    st.resources = next;
    st.version = version;
    this.send(typeUrl, undefined);
    if (typeUrl === LISTENER_TYPE) this.resubscribe(ROUTE_TYPE, routeNames(next));
    if (typeUrl === CLUSTER_TYPE) this.resubscribe(ENDPOINT_TYPE, edsNames(next));
    this.emit('update', this.config(), typeUrl);
  }

  private validate(
    typeUrl: ResourceTypeUrl,
    next: ReadonlyMap<string, ProtoObject>,
    incoming: ReadonlyMap<string, ProtoObject>,
  ): string | undefined {
    if (!this.opts.validate) return undefined;
    try {
      return this.opts.validate(
        typeUrl,
        typeUrl === LISTENER_TYPE || typeUrl === CLUSTER_TYPE ? next : incoming,
      );
    } catch (err) {
      return `validator threw: ${(err as Error).message}`;
    }
  }

  private resubscribe(typeUrl: ResourceTypeUrl, names: string[]): void {
    const st = this.state.get(typeUrl)!;
    const sorted = [...new Set(names)].sort();
    if (sorted.length === st.names.length && sorted.every((n, i) => n === st.names[i])) return;
    st.names = sorted;
    for (const n of [...st.resources.keys()]) if (!sorted.includes(n)) st.resources.delete(n);
    this.send(typeUrl, undefined);
  }
}

/** RouteConfiguration names referenced by HttpConnectionManagers (filter chains and API listeners). */
export function routeNames(listeners: ReadonlyMap<string, ProtoObject>): string[] {
  const out: string[] = [];
  const visit = (hcm: unknown) => {
    const name = (hcm as { rds?: { route_config_name?: string } } | undefined)?.rds?.route_config_name;
    if (name) out.push(name);
  };
  for (const l of listeners.values()) {
    visit((l.api_listener as { api_listener?: unknown } | undefined)?.api_listener);
    const chains = [...((l.filter_chains as unknown[] | undefined) ?? []), l.default_filter_chain];
    for (const c of chains) {
      for (const f of (c as { filters?: { typed_config?: unknown }[] } | undefined)?.filters ?? [])
        visit(f.typed_config);
    }
  }
  return out;
}

/** EDS service names of EDS clusters. */
export function edsNames(clusters: ReadonlyMap<string, ProtoObject>): string[] {
  const out: string[] = [];
  for (const c of clusters.values()) {
    if (c.type !== 'EDS') continue;
    const svc = (c.eds_cluster_config as { service_name?: string } | undefined)?.service_name;
    out.push(svc || (c.name as string));
  }
  return out;
}
