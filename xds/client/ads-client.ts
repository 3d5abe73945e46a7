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
  decodeMessage,
  ENDPOINT_TYPE,
  encodeMessage,
  LISTENER_TYPE,
  type ProtoObject,
  RESOURCE_TYPES,
  type ResourceTypeUrl,
  ROUTE_TYPE,
  shortTypeName,
} from '../protos.js';
import {
  decodeRawResponse,
  type RawDiscoveryResponse,
  type RawResource,
  wireProblem,
} from './raw-response.js';

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

type Stream = ClientDuplexStream<object, RawDiscoveryResponse>;

const ADS_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources';
const DISCOVERY_REQUEST = 'envoy.service.discovery.v3.DiscoveryRequest';
/** An error_detail is cut to this length (a reason may quote a 10 MB name). */
const MAX_ERROR_DETAIL = 4096;
/** Names quoted in a NACK reason are cut to this length. */
const MAX_NAME = 100;
/**
 * Longest resource name taken. Names are built from Kubernetes names (a few
 * hundred characters at most); a longer one is a broken or hostile server.
 */
const MAX_RESOURCE_NAME = 4096;

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
    // Resources stay raw Any until onResponse: one bad resource is then a NACK, not a broken stream.
    const s: Stream = this.client.makeBidiStreamRequest(
      ADS_METHOD,
      (req: object) => encodeMessage(DISCOVERY_REQUEST, req),
      decodeRawResponse,
    );
    this.stream = s;
    let gotResponse = false;
    s.on('data', (res: RawDiscoveryResponse) => {
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
    if (error !== undefined) {
      const message = error.length > MAX_ERROR_DETAIL ? `${error.slice(0, MAX_ERROR_DETAIL)}...` : error;
      req.error_detail = { code: 3, message };
    }
    this.stream?.write(req);
  }

  private onResponse(res: RawDiscoveryResponse): void {
    const typeUrl = res.type_url as ResourceTypeUrl;
    const st = this.state.get(typeUrl);
    if (!st) return; // a type this client never subscribed to: ignored, as Envoy does
    st.nonce = res.nonce;
    const version = res.version_info;
    const { incoming, errors } = decodeResources(typeUrl, res.resources);
    // LDS and CDS responses are complete; RDS and EDS carry changed resources only.
    const next =
      typeUrl === LISTENER_TYPE || typeUrl === CLUSTER_TYPE
        ? incoming
        : new Map([...st.resources].filter(([n]) => st.names.includes(n)).concat([...incoming]));
    const error = errors.length > 0 ? errors.join('; ') : this.validate(typeUrl, next, incoming);
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

/**
 * Decodes a response's resources, each on its own: a resource of another
 * type, one that cannot be decoded, one without a name and a name given twice
 * are errors (Envoy NACKs all four), reported with their index.
 */
function decodeResources(
  typeUrl: ResourceTypeUrl,
  resources: readonly RawResource[],
): { incoming: Map<string, ProtoObject>; errors: string[] } {
  const incoming = new Map<string, ProtoObject>();
  const errors: string[] = [];
  const firstIndex = new Map<string, number>();
  const short = shortTypeName(typeUrl);
  resources.forEach((raw, i) => {
    if (errors.length >= 5) return;
    if (raw.malformed) {
      errors.push(`resources[${i}]: not a valid Any (${raw.malformed})`);
      return;
    }
    if (raw.type_url !== typeUrl) {
      errors.push(`resources[${i}]: a ${cut(raw.type_url)} in a ${short} response`);
      return;
    }
    const problem = wireProblem(raw.value);
    if (problem) {
      errors.push(`resources[${i}]: cannot decode ${short} (${problem})`);
      return;
    }
    let r: ProtoObject;
    try {
      r = normalizeDecoded(decodeMessage(typeUrl, raw.value));
    } catch (err) {
      errors.push(`resources[${i}]: cannot decode ${short} (${(err as Error).message})`);
      return;
    }
    const name = r[RESOURCE_NAME_KEY[typeUrl]];
    if (typeof name !== 'string' || name === '') {
      errors.push(`resources[${i}]: ${short} without ${RESOURCE_NAME_KEY[typeUrl]}`);
      return;
    }
    if (name.length > MAX_RESOURCE_NAME) {
      errors.push(
        `resources[${i}]: ${short} name of ${name.length} characters (at most ${MAX_RESOURCE_NAME})`,
      );
      return;
    }
    const first = firstIndex.get(name);
    if (first !== undefined) {
      errors.push(`resources[${i}]: duplicate ${short} ${cut(name)} (also resources[${first}])`);
      return;
    }
    firstIndex.set(name, i);
    incoming.set(name, r);
  });
  return { incoming, errors };
}

function cut(s: string): string {
  return s.length > MAX_NAME ? `'${s.slice(0, MAX_NAME)}...' (${s.length} characters)` : `'${s}'`;
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
