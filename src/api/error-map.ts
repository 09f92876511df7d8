/**
 * The one place errors become exit statuses and HTTP statuses (and, in the clients, become
 * typed errors again). Errors themselves carry a code and fields only (src/errors.ts).
 */
import {
  CopperError, NotFoundError, PermissionError, QuotaError, StateError, UnavailableError, UnknownJobError, UsageError,
  type QuotaFields,
} from '../errors.js';

interface Edge {
  /** Exit status of a command-line tool. */
  exit: number;
  /** HTTP status on gcd's API. */
  http: number;
}

/** By error code. Codes not listed (and errors that are not CopperErrors) are 1 / 500. */
const EDGE: Readonly<Record<string, Edge>> = {
  EUSAGE: { exit: 2, http: 400 },
  ENOJOB: { exit: 153, http: 404 }, // PBS's "Unknown Job Id" status
  EPERM: { exit: 159, http: 403 },
  EQUOTA: { exit: 38, http: 409 },
  ESTATE: { exit: 1, http: 409 },
  ENOENT: { exit: 1, http: 404 },
  EUNAVAILABLE: { exit: 3, http: 503 },
  ETOOBIG: { exit: 1, http: 413 },
};

const INTERNAL: Edge = { exit: 1, http: 500 };

function edgeOf(err: unknown): Edge {
  return (err instanceof CopperError && EDGE[err.code]) || INTERNAL;
}

export function exitCodeOf(err: unknown): number {
  return edgeOf(err).exit;
}

export function httpStatusOf(err: unknown): number {
  return edgeOf(err).http;
}

/** The JSON body of an error answer: one line, the code, and the error's fields if it has any. */
export interface ErrorBody {
  error: string;
  code: string;
  fields?: QuotaFields;
}

export function errorBody(err: unknown): ErrorBody {
  const line = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
  const body: ErrorBody = { error: line, code: err instanceof CopperError ? err.code : 'EINTERNAL' };
  if (err instanceof QuotaError) body.fields = err.fields;
  return body;
}

/** A client's typed error from an error answer (code and fields as gcd sent them). */
export function errorFromBody(body: { error?: unknown; code?: unknown; fields?: unknown }, fallback: string): CopperError {
  const msg = typeof body.error === 'string' ? body.error : fallback;
  switch (body.code) {
    case 'EUSAGE':
      return new UsageError(msg);
    case 'EQUOTA': {
      const f = typeof body.fields === 'object' && body.fields !== null ? (body.fields as QuotaFields) : {};
      return new QuotaError(msg, f);
    }
    case 'EPERM':
      return new PermissionError(msg);
    case 'EUNAVAILABLE':
      return new UnavailableError(msg);
    case 'ESTATE':
      return new StateError(msg);
    case 'ENOENT':
      return new NotFoundError(msg);
    case 'ENOJOB':
      return new UnknownJobError(msg.replace(/^Unknown Job Id /, ''));
    default:
      return new CopperError(msg);
  }
}
