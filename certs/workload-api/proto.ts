/**
 * Loads workload.proto (the SPIFFE standard's service definition, no package) and
 * types the X.509 messages the way @grpc/proto-loader hands them over (keepCase).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { workloadApiAsset } from './assets.js';

export const WORKLOAD_PROTO_PATH = workloadApiAsset('workload.proto');
/** Every Workload API call must carry this metadata key with the value `true`. */
export const WORKLOAD_HEADER = 'workload.spiffe.io';

export interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface X509BundlesResponse {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

let cached: grpc.ServiceDefinition | undefined;

/** The SpiffeWorkloadAPI service definition (methods `/SpiffeWorkloadAPI/<Name>`). */
export function workloadServiceDefinition(): grpc.ServiceDefinition {
  if (!cached) {
    const pkg = protoLoader.loadSync(WORKLOAD_PROTO_PATH, {
      keepCase: true,
      defaults: true,
      arrays: true,
      objects: true,
      longs: String,
      enums: String,
    });
    cached = pkg.SpiffeWorkloadAPI as unknown as grpc.ServiceDefinition;
  }
  return cached;
}

/** A client constructor for the service, built from the same definition. */
export function workloadClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(workloadServiceDefinition(), 'SpiffeWorkloadAPI');
}
