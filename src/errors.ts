/**
 * Typed errors. Every error a user can cause or meet carries a stable code, a one-line
 * message and the exit status the command-line tools use for it.
 */
export class CopperError extends Error {
  readonly code: string = 'ECOPPER';
  readonly exitCode: number = 1;
  /** HTTP status when the error crosses the gcd API. */
  readonly httpStatus: number = 500;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A malformed option, file or request: the caller must change what it sent. */
export class UsageError extends CopperError {
  override readonly code = 'EUSAGE';
  override readonly exitCode = 2;
  override readonly httpStatus = 400;
}

export class UnknownJobError extends CopperError {
  override readonly code = 'ENOJOB';
  override readonly exitCode = 153; // PBS's "Unknown Job Id" status
  override readonly httpStatus = 404;
  constructor(readonly jobId: string) {
    super(`Unknown Job Id ${jobId}`);
  }
}

export class PermissionError extends CopperError {
  override readonly code = 'EPERM';
  override readonly exitCode = 159;
  override readonly httpStatus = 403;
}

export class QuotaError extends CopperError {
  override readonly code = 'EQUOTA';
  override readonly exitCode = 38;
  override readonly httpStatus = 409;
}

export class StateError extends CopperError {
  override readonly code = 'ESTATE';
  override readonly httpStatus = 409;
}

export class NotFoundError extends CopperError {
  override readonly code = 'ENOENT';
  override readonly httpStatus = 404;
}

/** Redis, gcd or another service the command needs is not there. */
export class UnavailableError extends CopperError {
  override readonly code = 'EUNAVAILABLE';
  override readonly exitCode = 3;
  override readonly httpStatus = 503;
}

/** The virtualization layer failed: QEMU, the guest agent, the image, the disk. */
export class DriverError extends CopperError {
  override readonly code = 'EDRIVER';
  override readonly httpStatus = 500;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
