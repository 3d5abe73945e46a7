/**
 * The `baggage` header the outbound proxy puts on the tunnel CONNECT so the
 * inbound side knows the caller's namespace, workload and version without a
 * lookup. Encoding and limits are OTel's W3CBaggagePropagator.
 */
import { defaultTextMapGetter, defaultTextMapSetter, propagation, ROOT_CONTEXT } from '@opentelemetry/api';
import { W3CBaggagePropagator } from '@opentelemetry/core';
import type { HeaderCarrier } from './trace-context.js';

export const BAGGAGE = 'baggage';

/** Keys follow OTel resource semantic conventions (as Istio's ztunnel does). */
export const BAGGAGE_KEYS = {
  namespace: 'k8s.namespace.name',
  workload: 'k8s.workload.name',
  version: 'service.version',
} as const;

export interface PeerMetadata {
  namespace: string;
  workload: string;
  version: string;
}

const propagator = new W3CBaggagePropagator();

/** Returns the `baggage` header value; empty fields are left out. */
export function encodeBaggage(peer: Partial<PeerMetadata>): string {
  const entries: Record<string, { value: string }> = {};
  for (const key of ['namespace', 'workload', 'version'] as const) {
    const v = peer[key];
    if (v) entries[BAGGAGE_KEYS[key]] = { value: v };
  }
  const carrier: Record<string, string> = {};
  propagator.inject(
    propagation.setBaggage(ROOT_CONTEXT, propagation.createBaggage(entries)),
    carrier,
    defaultTextMapSetter,
  );
  return carrier[BAGGAGE] ?? '';
}

/**
 * Reads peer metadata from a `baggage` header value (or header map). Unknown
 * members are ignored; missing fields are empty strings; null when none of
 * the three is present.
 */
export function decodeBaggage(
  value: string | readonly string[] | HeaderCarrier | undefined,
): PeerMetadata | null {
  if (value === undefined) return null;
  const carrier: HeaderCarrier =
    typeof value === 'string' || Array.isArray(value)
      ? { [BAGGAGE]: value as string | string[] }
      : (value as HeaderCarrier);
  const bag = propagation.getBaggage(propagator.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter));
  if (!bag) return null;
  const out: PeerMetadata = {
    namespace: bag.getEntry(BAGGAGE_KEYS.namespace)?.value ?? '',
    workload: bag.getEntry(BAGGAGE_KEYS.workload)?.value ?? '',
    version: bag.getEntry(BAGGAGE_KEYS.version)?.value ?? '',
  };
  return out.namespace || out.workload || out.version ? out : null;
}
