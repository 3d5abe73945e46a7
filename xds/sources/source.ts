/**
 * Where declared configuration comes from. The directory of YAML manifests is
 * the embedded default; a Kubernetes informer source implements the same
 * interface later, and nothing downstream (model, translation, ADS) changes.
 */

/** A path into a manifest, e.g. ['spec', 'rules', 0, 'backendRefs', 1, 'weight']. */
export type FieldPath = ReadonlyArray<string | number>;

/** Where a manifest (or one of its fields) was declared, for error messages. */
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

export interface ConfigSource {
  /** A short description for logs, e.g. `dir:/etc/sockmesh/manifests`. */
  readonly description: string;
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

/** `file:line: path: reason`, the one format every manifest error is shown in. */
export function formatConfigError(e: ConfigError): string {
  return `${e.file}:${e.line}: ${e.path === '' ? '' : `${e.path}: `}${e.reason}`;
}
