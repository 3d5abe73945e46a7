/**
 * The Envoy v3 API, loaded from the .proto files that @grpc/grpc-js-xds ships
 * under deps/ (never copied into this repo). One package definition serves the
 * ADS server, the ADS client and the golden tests, so all three agree on one
 * decoded shape: snake_case fields, enums and 64-bit ints as strings, oneof
 * discriminators present, defaults omitted, and every google.protobuf.Any
 * unpacked into a plain object tagged with its `@type`.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { GrpcObject, ServiceClientConstructor, ServiceDefinition } from '@grpc/grpc-js';
import { loadPackageDefinition } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SockmeshError } from '../lib/errors.js';

export const TYPE_URL_PREFIX = 'type.googleapis.com/';

export const LISTENER_TYPE = `${TYPE_URL_PREFIX}envoy.config.listener.v3.Listener`;
export const ROUTE_TYPE = `${TYPE_URL_PREFIX}envoy.config.route.v3.RouteConfiguration`;
export const CLUSTER_TYPE = `${TYPE_URL_PREFIX}envoy.config.cluster.v3.Cluster`;
export const ENDPOINT_TYPE = `${TYPE_URL_PREFIX}envoy.config.endpoint.v3.ClusterLoadAssignment`;

export const HCM_TYPE = `${TYPE_URL_PREFIX}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`;
export const TCP_PROXY_TYPE = `${TYPE_URL_PREFIX}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`;
export const NETWORK_RBAC_TYPE = `${TYPE_URL_PREFIX}envoy.extensions.filters.network.rbac.v3.RBAC`;
export const ROUTER_TYPE = `${TYPE_URL_PREFIX}envoy.extensions.filters.http.router.v3.Router`;

/** The four resource types sockmesh serves, in the order a client should apply them. */
export const RESOURCE_TYPES = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE] as const;
export type ResourceTypeUrl = (typeof RESOURCE_TYPES)[number];

export function isResourceType(url: string): url is ResourceTypeUrl {
  return (RESOURCE_TYPES as readonly string[]).includes(url);
}

/** Short names for logs and metrics. */
export function shortTypeName(url: string): string {
  switch (url) {
    case LISTENER_TYPE:
      return 'LDS';
    case ROUTE_TYPE:
      return 'RDS';
    case CLUSTER_TYPE:
      return 'CDS';
    case ENDPOINT_TYPE:
      return 'EDS';
    default:
      return url.slice(url.lastIndexOf('.') + 1);
  }
}

/** The decode options every sockmesh component uses (see the module comment). */
export const DECODE_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
  json: true,
} as const;

const PROTO_FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/load_stats/v3/lrs.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
];

/** A decoded protobuf message: plain data, fields in snake_case. */
export type ProtoObject = { [field: string]: unknown };

interface Codec {
  serialize(value: object): Buffer;
  deserialize(bytes: Buffer): ProtoObject;
}

let loaded: protoLoader.PackageDefinition | undefined;

function depsDir(): string {
  const require = createRequire(import.meta.url);
  try {
    return path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  } catch (err) {
    throw new SockmeshError('SOCKMESH_E_XDS', 'cannot find the Envoy API protos of @grpc/grpc-js-xds', {
      hint: 'run npm install',
      cause: err,
    });
  }
}

/** Parses the protos once per process (~150 ms). */
export function envoyPackage(): protoLoader.PackageDefinition {
  if (loaded) return loaded;
  const base = depsDir();
  loaded = protoLoader.loadSync(PROTO_FILES, {
    ...DECODE_OPTIONS,
    includeDirs: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(base, d)),
  });
  return loaded;
}

function codecFor(fullName: string): Codec {
  const def = envoyPackage()[fullName] as Partial<Codec> | undefined;
  if (!def || typeof def.serialize !== 'function' || typeof def.deserialize !== 'function') {
    throw new SockmeshError('SOCKMESH_E_XDS', `unknown protobuf message ${fullName}`);
  }
  return def as Codec;
}

function messageName(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}

/** Encodes one resource (nested Anys given as `{ '@type': url, ...fields }`). */
export function encodeMessage(typeUrl: string, value: object): Buffer {
  return codecFor(messageName(typeUrl)).serialize(value);
}

/** Decodes one resource into the shared decoded shape. */
export function decodeMessage(typeUrl: string, bytes: Buffer | Uint8Array): ProtoObject {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return codecFor(messageName(typeUrl)).deserialize(buf);
}

/** The ADS service definition for grpc.Server#addService. */
export function adsServiceDefinition(): ServiceDefinition {
  return adsClientConstructor().service;
}

/** The ADS client class (a grpc-js generic client). */
export function adsClientConstructor(): ServiceClientConstructor {
  const root = loadPackageDefinition(envoyPackage());
  const ns = ['envoy', 'service', 'discovery', 'v3'].reduce<GrpcObject>(
    (obj, key) => obj[key] as GrpcObject,
    root,
  );
  return ns.AggregatedDiscoveryService as ServiceClientConstructor;
}

/** Envoy's LoadReportingService (LRS): agents report per-cluster request outcomes to the control plane. */
export function lrsClientConstructor(): ServiceClientConstructor {
  const root = loadPackageDefinition(envoyPackage());
  const ns = ['envoy', 'service', 'load_stats', 'v3'].reduce<GrpcObject>(
    (obj, key) => obj[key] as GrpcObject,
    root,
  );
  return ns.LoadReportingService as ServiceClientConstructor;
}
