import { join, posix } from 'node:path';
import { UsageError } from '../errors.js';
import { parseSize } from '../pbs/units.js';
import type { JobRecord } from '../queue/job.js';
import type { StageOutRequest, StageOutResult } from './types.js';

/** Default per-job cap on what stage-out writes into a headnode (GC_STAGEOUT_MAX). */
export const DEFAULT_STAGEOUT_CAP = 4 * 1024 ** 3;
/** Default most bytes beyond the cap kept on the host (GC_STAGEOUT_KEEP_MAX). */
export const DEFAULT_STAGEOUT_KEEP = 16 * 1024 ** 3;

export interface StageOutLimits {
  capBytes: number;
  keepMaxBytes: number;
}

/** The caps from the environment (sizes such as `512mb`, `4gb`, or plain bytes). */
export function stageOutLimits(env: NodeJS.ProcessEnv = process.env): StageOutLimits {
  return {
    capBytes: sizeFrom(env.GC_STAGEOUT_MAX, 'GC_STAGEOUT_MAX', DEFAULT_STAGEOUT_CAP),
    keepMaxBytes: sizeFrom(env.GC_STAGEOUT_KEEP_MAX, 'GC_STAGEOUT_KEEP_MAX', DEFAULT_STAGEOUT_KEEP),
  };
}

function sizeFrom(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined || v.trim() === '') return dflt;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  try {
    return parseSize(v.trim(), name) * 1024 * 1024; // parseSize gives MiB
  } catch (e) {
    throw new UsageError(`${name}=${v}: not a size (e.g. 512mb, 4gb)`, { cause: e });
  }
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
    parts.push(r.excess.keptAt ? `${what} kept on the host at ${r.excess.keptAt}` : `${what} could not be kept (beyond the host's limit) and were left in the clone`);
  }
  for (const e of r.errors.slice(0, 2)) parts.push(e);
  return parts.length ? `stage-out: ${parts.join('; ')}` : undefined;
}
