/**
 * Which life of a headnode name (issue 13 item 8). A name is free again once its headnode is
 * destroyed, so alice's `hn` and bob's later `hn` are told apart by an incarnation id made at
 * create. Jobs, their snapshots, their undelivered output and recurring jobs carry the
 * incarnation they were made in; before anything is written into a headnode or a job is
 * submitted on another's behalf, the incarnation must still be the same.
 */
import { randomUUID } from 'node:crypto';
import { StateError } from '../errors.js';

export function newIncarnation(): string {
  return randomUUID();
}

/** A record made before incarnations existed: its create time tells its lives apart. */
export function incarnationOf(rec: { incarnation?: string; createdAt: number }): string {
  return rec.incarnation ?? `created-${rec.createdAt}`;
}

/** A job or recurring job made in one life of a headnode name, meeting another (or none). */
export class IncarnationError extends StateError {
  constructor(
    readonly headnode: string,
    readonly expected: string,
    readonly found: string | undefined,
  ) {
    super(
      found === undefined
        ? `headnode '${headnode}' is not the one this job was submitted from (it is gone or not running)`
        : `headnode '${headnode}' was destroyed and created again since this job was submitted (incarnation ${expected.slice(0, 8)}, now ${found.slice(0, 8)})`,
    );
  }
}

/** Undefined when `expected` is unset (a job from before incarnations) or still current. */
export function incarnationMismatch(headnode: string, expected: string | undefined, found: string | undefined): IncarnationError | undefined {
  if (expected === undefined || expected === found) return undefined;
  return new IncarnationError(headnode, expected, found);
}

/** What asks which incarnation runs under a name now (the job Driver has this method). */
export interface IncarnationSource {
  headnodeIncarnation?(headnode: string): Promise<string | undefined>;
}

/**
 * Before writing a job's files into its headnode: an error when the headnode running under
 * that name now is not the one the job was submitted from. Undefined when it is, when the
 * job predates incarnations, or when the driver cannot tell.
 */
export async function jobHeadnodeChanged(
  source: IncarnationSource,
  spec: { headnode: string; headnodeIncarnation?: string },
): Promise<IncarnationError | undefined> {
  if (spec.headnodeIncarnation === undefined || !source.headnodeIncarnation) return undefined;
  return incarnationMismatch(spec.headnode, spec.headnodeIncarnation, await source.headnodeIncarnation(spec.headnode));
}
