import type { Driver } from '../../drivers/driver.js';
import { StateError, UsageError } from '../../errors.js';
import type { JobRecord } from '../../queue/job.js';
import type { Actor } from '../../scheduler/actor.js';
import type { ToolServices } from './tool.js';

/** What gcqpeek and gcqexec need of the driver: the running job's clone. */
export type CloneAccess = Pick<Driver, 'peek' | 'enter' | 'openTerminal' | 'jobTerminal'>;

/**
 * The job named by idText, if this caller may see it (another user's job is "Unknown Job Id",
 * as everywhere: ids do not leak across users). An array's own record has no clone: a task
 * must be named.
 */
export async function lookJob(s: ToolServices, actor: Actor, idText: string): Promise<JobRecord> {
  const job = await s.scheduler.get(actor, idText);
  if (job.array) throw new UsageError(`job ${job.id} is an array: name one of its tasks, e.g. ${job.id.replace('[]', `[${job.array.indices[0] ?? 1}]`)}`);
  return job;
}

/** The clone of a job that runs now, or PBS's refusal for its state. */
export function runningClone(job: JobRecord): string {
  if ((job.state === 'R' || job.state === 'E') && job.cloneId) return job.cloneId;
  throw new StateError(`Request invalid for state of job ${job.id} (${job.state}): it is not running`);
}
