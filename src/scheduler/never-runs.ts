import type { QuotaConfig } from '../config/quotas.js';
import { formatSize } from '../pbs/units.js';
import type { JobRecord } from '../queue/job.js';
import type { CapacityLimits } from './capacity.js';
import { admit, trackedJob, UsageTracker } from './policy.js';

/**
 * gcqstat -s: a plain verdict for a waiting job that can never start as things stand (the
 * host's capacity or an admin limit is below what it asks, even with nothing else running),
 * and what would change that. Undefined when the job can start some day.
 */
export function neverRunsVerdict(job: Pick<JobRecord, 'spec' | 'state' | 'array'>, capacity: CapacityLimits, quotas: QuotaConfig): string | undefined {
  if (job.array || !['Q', 'W', 'H'].includes(job.state)) return undefined;
  const { ncpus, memMiB } = job.spec.resources;
  if (ncpus > capacity.ncpus) {
    return `can never run: asks ncpus=${ncpus}, the largest host has ${capacity.ncpus}; lower -l ncpus to ${capacity.ncpus} or less (gcqdel it and gcqsub again), or the admin raises GC_CAPACITY_NCPUS`;
  }
  if (memMiB > capacity.memMiB) {
    return `can never run: needs mem=${formatSize(memMiB)}, the largest host gives ${formatSize(capacity.memMiB)}; a smaller headnode (its clones have its RAM), or the admin raises GC_CAPACITY_MEM_MIB`;
  }
  // Admission with nothing else running: what still refuses it refuses it forever.
  const a = admit(quotas, new UsageTracker(), trackedJob(job));
  if (a.ok || !a.permanent) return undefined;
  const fix = a.code.endsWith('MaxRun')
    ? 'the admin raises max_running, or gcqmove it to another queue'
    : a.code.endsWith('MaxCpus')
      ? 'lower -l ncpus (gcqdel it and gcqsub again), the admin raises max_running_ncpus, or gcqmove it to another queue'
      : 'a smaller headnode, the admin raises max_running_mem, or gcqmove it to another queue';
  return `can never run: ${a.reason}; ${fix}`;
}
