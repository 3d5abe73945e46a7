/**
 * Where declared configuration comes from. The directory of YAML manifests is
 * the embedded default; the Kubernetes source (informers on an API server)
 * implements the same interface, and nothing downstream (model, translation,
 * ADS) changes. A source says how its objects are accepted and where endpoints
 * come from; the control plane decides by that policy.
 */

/** A path into a manifest, e.g. ['spec', 'rules', 0, 'backendRefs', 1, 'weight']. */
export type FieldPath = ReadonlyArray<string | number>;

/**
 * Where a manifest (or one of its fields) was declared, for error messages.
 * Objects without a text position (from an API server) name themselves in
 * `file` (`HTTPRoute shop/reviews`) with line 0.
 */
export interface SourceLocation {
  file: string;
  line: number;
}

/** One declared object (one YAML document, or one object from an informer). */
export interface SourceObject {
  /** The parsed document as plain data (unknown: the model validates it). */
  readonly value: unknown;
  /** Where the object starts. */
  readonly origin: SourceLocation;
  /**
   * The location of a field, or of its closest existing parent when the field
   * is missing. Sources without positions return `origin`.
   */
  locate(path: FieldPath): SourceLocation;
}

/** A problem found while reading or validating configuration. */
export interface ConfigError {
  file: string;
  line: number;
  /** Dotted field path, e.g. `spec.rules[0].backendRefs[1].weight`; '' for a whole document. */
  path: string;
  reason: string;
}

/** Everything a source currently declares. */
export interface SourceState {
  objects: SourceObject[];
  /** Read/parse errors; a state with errors is never applied. */
  errors: ConfigError[];
}

/**
 * How a source's objects are taken in:
 * - `set`: the whole state is valid or nothing of it is applied (a directory
 *   is edited as one unit; its contract).
 * - `object`: each object stands alone; one that fails decoding or its
 *   cross-checks is left out (its last accepted version stays in force) and
 *   the rest is applied (objects owned by many teams on an API server).
 */
export type AcceptancePolicy = 'set' | 'object';

/** What became of one object in a reload under the `object` policy. */
export interface ObjectVerdict {
  /** `Kind/namespace/name` (see objectIdentity). */
  id: string;
  /** The object as the source gave it in this reload. */
  object: SourceObject;
  /** `accepted`: this version is in force; `kept-previous`: rejected, an older version is; `rejected`: nothing of it is. */
  state: 'accepted' | 'kept-previous' | 'rejected';
  errors: ConfigError[];
}

/** A CanaryGuard's state as the control plane runs it (see docs/canary.md). */
export interface GuardReport {
  namespace: string;
  name: string;
  phase: 'Progressing' | 'Promoted' | 'RolledBack';
  /** The canary weight served, percent. */
  weight: number;
  /** Index in the guard's steps of the weight in force, -1 while at the written weight. */
  step: number;
  /** What the state belongs to (the guard as resolved, with the route's written weight). */
  fingerprint: string;
  /** The last weight change: CamelCase reason, message, when, from and to which weight. */
  transition?: { reason: string; message: string; at: string; from: number; to: number };
}

/** A guard's state as a control plane recorded it: a restarted (or following) one resumes from it. */
export type RecordedGuard = Omit<GuardReport, 'namespace' | 'name'>;

/** Replicas of the control plane: only the leading one writes status and runs the guards' decisions. */
export interface Leadership {
  leading(): boolean;
  /** Called with the new value each time this replica starts or stops leading. */
  onChange(cb: (leading: boolean) => void): void;
  /** Where the leader serves (LRS reports are forwarded there); undefined: unknown. */
  leaderAddress(): string | undefined;
  onLeaderAddress(cb: (address: string | undefined) => void): void;
}

export interface ConfigSource {
  /** A short description for logs, e.g. `dir:/etc/sockmesh/manifests`. */
  readonly description: string;
  /** Default `set`. */
  readonly acceptance?: AcceptancePolicy;
  /**
   * Where a Service's endpoints come from: its `selector` over the declared
   * Pods (default), or the EndpointSlices the source provides.
   */
  readonly endpointsFrom?: 'selector' | 'EndpointSlice';
  /** Told, after each applied reload under the `object` policy, what became of every object. */
  report?(verdicts: readonly ObjectVerdict[]): void;
  /** Told each CanaryGuard's run-time state when it changes (Kubernetes: written to the object's status). */
  reportGuards?(guards: readonly GuardReport[]): void;
  /**
   * The guards' states as last recorded (Kubernetes: their status), by `namespace/name`; only
   * well-formed records. Read when a guard starts in this process, so a restart resumes them.
   */
  recordedGuards?(): ReadonlyMap<string, RecordedGuard>;
  /** Calls `onChange` when a recorded guard state changed (another replica decided). */
  watchRecordedGuards?(onChange: () => void): void;
  /** Absent: this control plane is the only one, it always leads. */
  readonly leadership?: Leadership;
  /** Prometheus text of the source's own counters (status writes, leadership), for the admin /metrics. */
  metrics?(): string;
  /** Reads the current state. */
  load(): Promise<SourceState>;
  /** Calls `onChange` (possibly many times for one edit: callers debounce) when the state may have changed. */
  watch(onChange: () => void): void;
  close(): Promise<void>;
}

export function formatFieldPath(path: FieldPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}

/** `file:line: path: reason`, the one format every manifest error is shown in (`Kind ns/name: path: reason` without a line). */
export function formatConfigError(e: ConfigError): string {
  return `${e.file}${e.line > 0 ? `:${e.line}` : ''}: ${e.path === '' ? '' : `${e.path}: `}${e.reason}`;
}
