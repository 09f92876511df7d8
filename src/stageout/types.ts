/**
 * Stage-out: what a job wrote under its working directory (and -W stageout paths) is written
 * into the headnode at the same paths when the job ends, before it is F. These are the types
 * the scheduler and the drivers share; the mechanics are the driver's (drivers/qemu/stage-out.ts).
 */

export interface StageOutRequest {
  /** Job id, e.g. `12.copper` or `13[2].copper`: names conflict copies (`NAME.copper-<jobid>`). */
  jobId: string;
  headnode: string;
  /** Absolute paths inside the clone: the working directory first, then -W stageout paths. */
  paths: string[];
  /** Account in the headnode the files are written as (the job's account). */
  account: string;
  /** Bytes of regular-file content written into the headnode at most; the rest is kept on the host. */
  capBytes: number;
  /** Host folder for what exceeds the cap (created when needed). */
  keepDir: string;
  /** Most bytes kept on the host beyond the cap; past that the excess is left in the clone and said so. */
  keepMaxBytes: number;
}

export interface StageOutResult {
  /** Files, links and folders written into the headnode. */
  placed: number;
  /** Bytes of the archive that went into the headnode. */
  bytes: number;
  /** Headnode paths that changed there since the snapshot: the job's version is `PATH.copper-<jobid>`. */
  conflicts: string[];
  conflictCount: number;
  /** Entries beyond the size cap and where they are on the host (a tar archive), if any. */
  excess?: { entries: number; bytes: number; keptAt?: string; /** The grid node keptAt is on (unset: this host). */ keptOn?: string };
  /** Problems that did not stop the rest (each one line). */
  errors: string[];
  /** Milliseconds per step (pack in the clone, stream to the headnode, unpack there, excess to the host). */
  timingsMs?: { pack?: number; stream?: number; place?: number; excess?: number };
}

export const NO_STAGE_OUT: StageOutResult = { placed: 0, bytes: 0, conflicts: [], conflictCount: 0, errors: [] };
