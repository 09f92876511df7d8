/**
 * Typed errors. Every error a user can cause or meet carries a stable code, a one-line
 * message and the fields a program needs (QuotaError: which limit, on whom, how much).
 * Exit statuses and HTTP statuses are the edge's business: src/api/error-map.ts.
 */
export class CopperError extends Error {
  readonly code: string = 'ECOPPER';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A malformed option, file or request: the caller must change what it sent. */
export class UsageError extends CopperError {
  override readonly code = 'EUSAGE';
}

export class UnknownJobError extends CopperError {
  override readonly code = 'ENOJOB';
  constructor(readonly jobId: string) {
    super(`Unknown Job Id ${jobId}`);
  }
}

export class PermissionError extends CopperError {
  override readonly code = 'EPERM';
}

/** Which limit refused a request, on whom, and by how much (all optional: not every refusal is a count). */
export interface QuotaFields {
  /** The limit's name in quotas.yaml: `max_clones`, `max_queued`, `max_job_ncpus`, ... */
  limit?: string;
  /** Its value, as the file (or setting) gives it. */
  max?: number | string;
  /** Whom it applies to: `user alice`, `group physics`, `queue long`, `the system`. */
  entity?: string;
  /** What was asked for: clones or jobs in this request, or the job's ncpus/mem/walltime. */
  amount?: number | string;
  /** What the entity already holds (live clones, jobs queued or running). */
  used?: number;
  /** Where the limit is set: the quota file, or a gcd setting (GC_MAX_CLONES). */
  source?: string;
}

export class QuotaError extends CopperError {
  override readonly code = 'EQUOTA';
  readonly fields: QuotaFields;
  constructor(message: string, fields: QuotaFields = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.fields = fields;
  }
}

export class StateError extends CopperError {
  override readonly code = 'ESTATE';
}

export class NotFoundError extends CopperError {
  override readonly code = 'ENOENT';
}

/** Redis, gcd or another service the command needs is not there. */
export class UnavailableError extends CopperError {
  override readonly code = 'EUNAVAILABLE';
}

/** The virtualization layer failed: QEMU, the guest agent, the image, the disk. */
export class DriverError extends CopperError {
  override readonly code = 'EDRIVER';
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
