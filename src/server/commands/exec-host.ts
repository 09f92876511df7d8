import type { JobRecord } from '../../queue/job.js';
import { cloneHostname } from '../../scheduler/clone-hostname.js';

/**
 * PBS's exec_vnode of a job that runs or ran: the clone it runs in (its hostname, what the job's
 * `hostname` prints) with what the job asked: `(<clone>:ncpus=N:mem=Mkb)`.
 */
export function execVnode(j: JobRecord): string | undefined {
  if (execHost(j) === undefined) return undefined;
  const { ncpus, memMiB } = j.spec.resources;
  return `(${cloneHostname(j)}:ncpus=${ncpus}${memMiB ? `:mem=${memMiB * 1024}kb` : ''})`;
}

/**
 * PBS's exec_host of a job that runs or ran: `<host>/0`, `*N` for N cpus: the grid host that
 * ran it (its registry name), or for a record from before the grid its clone's hostname.
 * Undefined for a job that never started (and for an array's own record).
 */
export function execHost(j: JobRecord): string | undefined {
  if (j.array || j.startedAt === undefined || !(j.state === 'R' || j.state === 'E' || j.state === 'F')) return undefined;
  const n = j.spec.resources.ncpus;
  return `${j.execHost ?? cloneHostname(j)}/0${n > 1 ? `*${n}` : ''}`;
}
