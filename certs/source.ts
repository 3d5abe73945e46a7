/**
 * What anything that presents an SVID depends on: the SVID to use now and a way to
 * hear about the next one. SvidRotator (embedded CA) and WorkloadApiSvidSource
 * (SPIRE or any Workload API) both implement it.
 */
import type { X509Svid } from './svid.js';

/** Receives each new SVID, or null when the last one expired without a replacement. */
export type SvidListener = (svid: X509Svid | null) => void;

export interface SvidSource {
  /** The SVID to present now, or null if none is valid. */
  current(): X509Svid | null;
  /** Listens for rotations; returns the unsubscribe function. */
  subscribe(listener: SvidListener): () => void;
}
