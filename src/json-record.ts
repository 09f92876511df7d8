/**
 * Reading Copper's own JSON files (snapshot metadata, clone and headnode records, the cluster
 * registry): each is checked against a schema when read, so a file with a wrong shape or an
 * unknown version stops with one error naming the file, never a TypeError deep inside.
 */
import type { z } from 'zod';
import { DriverError } from './errors.js';

/** The only on-disk version so far; a file written before versions existed is version 1. */
export const RECORD_VERSION = 1;

export class RecordError extends DriverError {
  constructor(
    readonly file: string,
    /** What the file holds, e.g. 'snapshot metadata'. */
    readonly kind: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${kind} ${file} ${reason}`, options);
  }
}

/** `text` (the contents of `file`) parsed and checked; RecordError when it is not a valid `kind`. */
export function parseRecord<T>(file: string, kind: string, text: string, schema: z.ZodType<T>): T {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new RecordError(file, kind, `is corrupt: not JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new RecordError(file, kind, 'is corrupt: not a JSON object');
  const version: unknown = 'version' in data ? data.version : RECORD_VERSION;
  if (version !== RECORD_VERSION) {
    throw new RecordError(file, kind, `has unknown version ${JSON.stringify(version)} (this Copper reads version ${RECORD_VERSION})`);
  }
  const r = schema.safeParse({ ...data, version });
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'file';
    throw new RecordError(file, kind, `is corrupt: ${where}: ${issue?.message ?? 'invalid'}`, { cause: r.error });
  }
  return r.data;
}
