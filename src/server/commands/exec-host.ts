import type { JobRecord } from '../../queue/job.js';
import { cloneHostname } from '../../scheduler/clone-hostname.js';

/**
 * PBS's exec_host of a job that runs or ran: `<clone hostname>/0`, `*N` for N cpus (one
 * clone is one node). Undefined for a job that never started (and for an array's own record).
 */
export function execHost(j: JobRecord): string | undefined {
  if (j.array || j.startedAt === undefined || !(j.state === 'R' || j.state === 'E' || j.state === 'F')) return undefined;
  const n = j.spec.resources.ncpus;
  return `${cloneHostname(j)}/0${n > 1 ? `*${n}` : ''}`;
}
