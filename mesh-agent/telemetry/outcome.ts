/**
 * Whether a recorded request failed, one rule for everything that reads the request metrics
 * (the LRS load canary guards decide on, `sockmesh canary`, the dashboard): no answer (code 0),
 * a 5xx, or a gRPC call whose grpc-status is a server-side failure. A gRPC call is answered
 * HTTP 200 whatever its outcome, so its grpc-status decides, mapped to HTTP as Envoy maps it
 * (Grpc::Utility::grpcToHttpStatus): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
 * UNAVAILABLE and DATA_LOSS are 5xx; NOT_FOUND, INVALID_ARGUMENT and the like are the caller's.
 */

const GRPC_TO_HTTP: readonly number[] = [
  200, // OK
  499, // CANCELLED
  500, // UNKNOWN
  400, // INVALID_ARGUMENT
  504, // DEADLINE_EXCEEDED
  404, // NOT_FOUND
  409, // ALREADY_EXISTS
  403, // PERMISSION_DENIED
  429, // RESOURCE_EXHAUSTED
  400, // FAILED_PRECONDITION
  409, // ABORTED
  400, // OUT_OF_RANGE
  501, // UNIMPLEMENTED
  500, // INTERNAL
  503, // UNAVAILABLE
  500, // DATA_LOSS
  401, // UNAUTHENTICATED
];

/** Envoy's HTTP equivalent of a grpc-status; an unknown code is 500, as there. */
export function grpcToHttpStatus(code: number): number {
  return GRPC_TO_HTTP[code] ?? 500;
}

/** grpc-status as a number from a header value, undefined when absent or not a number. */
export function parseGrpcStatus(value: unknown): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (typeof v !== 'string' && typeof v !== 'number') return undefined;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 && String(v).trim() !== '' ? n : undefined;
}

/**
 * From the labels of `sockmesh_requests_total` / `_duration_milliseconds` (a series without
 * `grpc_response_status`, or with "", is plain HTTP).
 */
export function requestFailed(labels: { response_code?: unknown; grpc_response_status?: unknown }): boolean {
  const code = Number(labels.response_code);
  if (!(code > 0) || code >= 500) return true;
  const grpc = parseGrpcStatus(labels.grpc_response_status);
  return grpc !== undefined && grpcToHttpStatus(grpc) >= 500;
}
