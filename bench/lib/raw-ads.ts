/**
 * Thousands of ADS clients in one process for the control-plane benches: each keeps its
 * DiscoveryResponses serialized (decoding every resource would measure the client, not the
 * server) and reads only the header fields it needs.
 */
import { type ClientDuplexStream, credentials } from '@grpc/grpc-js';
import {
  adsClientConstructor,
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  LISTENER_TYPE,
  ROUTE_TYPE,
} from '../../xds/protos.js';

export interface ResponseHeader {
  version: string;
  type: string;
  nonce: string;
}

/** version_info (1), type_url (4) and nonce (5) of a serialized DiscoveryResponse, resources skipped. */
export function responseHeader(buf: Buffer): ResponseHeader {
  const out = { version: '', type: '', nonce: '' };
  let i = 0;
  const varint = (): number => {
    let v = 0;
    let shift = 0;
    let b: number;
    do {
      b = buf[i++]!;
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return v;
  };
  while (i < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 2) {
      const len = varint();
      if (field === 1) out.version = buf.toString('utf8', i, i + len);
      else if (field === 4) out.type = buf.toString('utf8', i, i + len);
      else if (field === 5) out.nonce = buf.toString('utf8', i, i + len);
      i += len;
    } else if (wire === 0) {
      varint();
    } else break;
  }
  return out;
}

export interface AdsNode {
  id: string;
  cluster?: string;
}

/** A wildcard SotW ADS stream subscribed to the four types; `onResponse` gets each response raw. */
export class RawAdsStream {
  private readonly client;
  readonly stream: ClientDuplexStream<object, Buffer>;

  constructor(
    target: string,
    readonly node: AdsNode,
    onResponse: (raw: Buffer, self: RawAdsStream) => void,
  ) {
    const Ctor = adsClientConstructor();
    this.client = new Ctor(target, credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 });
    const serialize = (Ctor.service.StreamAggregatedResources as { requestSerialize: (v: object) => Buffer })
      .requestSerialize;
    this.stream = this.client.makeBidiStreamRequest(
      '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
      serialize,
      (b: Buffer) => b,
    );
    this.stream.on('data', (b: Buffer) => onResponse(b, this));
    this.stream.on('error', () => {});
    for (const type of [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]) {
      this.stream.write({ node, type_url: type, resource_names: [] });
    }
  }

  /** ACKs a response, as an agent does once it applied it. */
  ack(h: ResponseHeader): void {
    this.stream.write({
      node: this.node,
      type_url: h.type,
      version_info: h.version,
      response_nonce: h.nonce,
      resource_names: [],
    });
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }
}
