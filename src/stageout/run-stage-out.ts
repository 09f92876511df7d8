import { join } from 'node:path';
import type { CloneHandle, Driver } from '../drivers/driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { QuotaConfig } from '../config/quotas.js';
import { capStageOut, keptOverQuota } from './stageout-quota.js';
import { jobHeadnodeChanged } from '../headnodes/incarnation.js';
import type { JobRecord } from '../queue/job.js';
import { stageOutLimits, stageOutNote, stageOutRequest } from './policy.js';

/**
 * The runner's stage-out step, for every ending of a job that ran (exit, failure, walltime,
 * gcqdel): before the clone is destroyed and before F. Never throws: what went wrong is
 * returned for the job's comment (nothing is dropped without a word).
 */
export async function stageOutJob(driver: Driver, clone: CloneHandle, job: JobRecord, spoolDir: string, quotas?: QuotaConfig): Promise<string | undefined> {
  let req;
  try {
    req = stageOutRequest(job, stageOutLimits(), join(spoolDir, '..', 'undelivered'));
  } catch (e) {
    return `stage-out not done: ${errorMessage(e)}`;
  }
  if (!req) return undefined;
  if (quotas) capStageOut(req, quotas, job.spec.user);
  const t0 = Date.now();
  try {
    const other = await jobHeadnodeChanged(driver, job.spec);
    if (other) return `stage-out not done: ${other.message}`;
    const r = await driver.stageOut(clone, req);
    log.debug('stage-out done', { job: job.id, placed: r.placed, bytes: r.bytes, conflicts: r.conflictCount, ms: Date.now() - t0 });
    const over = quotas ? await keptOverQuota(r, req, quotas, job.spec.user, spoolDir) : undefined;
    return [stageOutNote(r), over].filter(Boolean).join('; ') || undefined;
  } catch (e) {
    log.warn('stage-out failed', { job: job.id, error: errorMessage(e) });
    return `stage-out failed, the job's files did not come home: ${errorMessage(e)}`;
  }
}
