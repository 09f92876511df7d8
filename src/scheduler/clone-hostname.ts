import type { JobRecord } from '../queue/job.js';

/**
 * The hostname a job's clone takes, `<headnode>-<seq>[-<index>]` (PBS's exec_host): array
 * tasks share a sequence number, so the index keeps their clones apart.
 */
export function cloneHostname(job: Pick<JobRecord, 'seq' | 'arrayIndex' | 'spec'>): string {
  const task = job.arrayIndex !== undefined ? `-${job.arrayIndex}` : '';
  return `${job.spec.headnode}-${job.seq}${task}`;
}
