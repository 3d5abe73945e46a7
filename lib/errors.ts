/**
 * Every error a user can see carries a stable code and says what to do about it.
 * Codes are part of the CLI contract: scripts match on them, so never rename one.
 */
export type ErrorCode =
  | 'SOCKMESH_E_NOT_ROOT'
  | 'SOCKMESH_E_NO_CAPABILITY'
  | 'SOCKMESH_E_NO_CGROUP2'
  | 'SOCKMESH_E_NO_BPFFS'
  | 'SOCKMESH_E_NO_IPROUTE2'
  | 'SOCKMESH_E_NO_BTF'
  | 'SOCKMESH_E_KERNEL_FEATURE'
  | 'SOCKMESH_E_NOT_BUILT'
  | 'SOCKMESH_E_BPF'
  | 'SOCKMESH_E_COMMAND'
  | 'SOCKMESH_E_LAB'
  | 'SOCKMESH_E_NOT_FOUND'
  | 'SOCKMESH_E_MANIFEST'
  | 'SOCKMESH_E_SPIFFE_ID'
  | 'SOCKMESH_E_SVID'
  | 'SOCKMESH_E_CA'
  | 'SOCKMESH_E_XDS'
  | 'SOCKMESH_E_USAGE'
  | 'SOCKMESH_E_CONFIG'
  | 'SOCKMESH_E_HANDOFF'
  | 'SOCKMESH_E_POLICY_TOO_LARGE';

export class SockmeshError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SockmeshError';
    this.code = code;
    this.hint = options.hint;
  }

  /** One line for humans: `CODE: message (hint)`. */
  describe(): string {
    return `${this.code}: ${this.message}${this.hint ? ` (${this.hint})` : ''}`;
  }
}

export function isSockmeshError(err: unknown, code?: ErrorCode): err is SockmeshError {
  return err instanceof SockmeshError && (code === undefined || err.code === code);
}
