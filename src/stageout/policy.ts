import { join, posix } from 'node:path';
import { setting } from '../config/settings.js';
import type { JobRecord } from '../queue/job.js';
import type { StageOutRequest, StageOutResult } from './types.js';

export interface StageOutLimits {
  capBytes: number;
  keepMaxBytes: number;
}

/** The caps, from GC_STAGEOUT_MAX and GC_STAGEOUT_KEEP_MAX (src/config/settings.ts); a bad one throws its SettingError. */
export function stageOutLimits(env: NodeJS.ProcessEnv = process.env): StageOutLimits {
  return { capBytes: setting('stageoutMaxBytes', env), keepMaxBytes: setting('stageoutKeepMaxBytes', env) };
}

/** What to bring home for a job, or undefined for -W stageout=none. */
export function stageOutRequest(job: JobRecord, limits: StageOutLimits, undeliveredDir: string): StageOutRequest | undefined {
  const extra = job.spec.stageout;
  if (extra === 'none') return undefined;
  const clean = (p: string): string => posix.normalize(p).replace(/(.)\/+$/, '$1');
  const paths = [clean(job.spec.cwd)];
  for (const p of extra ?? []) if (!paths.includes(clean(p))) paths.push(clean(p));
  return {
    jobId: job.id,
    headnode: job.spec.headnode,
    paths,
    account: job.spec.account ?? 'root',
    capBytes: limits.capBytes,
    keepDir: join(undeliveredDir, job.id),
    keepMaxBytes: limits.keepMaxBytes,
  };
}

/** One line for the job's comment, or undefined when there is nothing a user must hear about. */
export function stageOutNote(r: StageOutResult): string | undefined {
  const parts: string[] = [];
  if (r.conflictCount > 0) {
    const shown = r.conflicts.slice(0, 3).join(', ');
    const more = r.conflictCount > 3 ? ` and ${r.conflictCount - 3} more` : '';
    parts.push(`changed in the headnode since the snapshot, the job's version is beside it as NAME.copper-<jobid>: ${shown}${more}`);
  }
  if (r.excess) {
    const what = `${r.excess.entries} entries (${r.excess.bytes} bytes) over the stage-out cap`;
    parts.push(
      r.excess.keptAt
        ? `${what} kept on ${r.excess.keptOn ? `node ${r.excess.keptOn}` : 'the host'} at ${r.excess.keptAt}`
        : `${what} could not be kept (beyond the host's limit) and were left in the clone`,
    );
  }
  for (const e of r.errors.slice(0, 2)) parts.push(e);
  return parts.length ? `stage-out: ${parts.join('; ')}` : undefined;
}
