/**
 * The job record: what was asked (spec), what it runs from (snapshot) and what happened.
 * States follow PBS: Q queued, H held, W waiting for its start time, R running,
 * E exiting (output being delivered, clone being destroyed), F finished; B an array job
 * whose tasks have begun; S suspended (gcqsig -s suspend: its clone paused, walltime stopped).
 */
/** 'X' is display-only: gcqstat -t shows a finished array task as X, as PBS does. */
export type JobState = 'Q' | 'H' | 'W' | 'R' | 'S' | 'E' | 'F' | 'B' | 'X';

/** -j: join stderr into stdout (oe), stdout into stderr (eo), or keep both (n). */
export type JoinMode = 'oe' | 'eo' | 'n';

export interface Resources {
  ncpus: number;
  /** Memory per job in MiB; 0 means "the headnode's RAM" (a clone's RAM is the headnode's). */
  memMiB: number;
}

export interface JobSpec {
  /** The command as argv, never re-parsed by a shell. Empty when `script` is set. */
  argv: string[];
  /** A job script's text, copied at submission as PBS does; run with its #! or /bin/sh. */
  script?: string;
  /** Arguments passed to the script. */
  scriptArgs?: string[];
  name: string;
  /** PBS_O_WORKDIR: the submitter's working directory inside the headnode. */
  cwd: string;
  /** Environment exported to the job (-v, -V) on top of the PBS variables. */
  env: Record<string, string>;
  /** The Copper user (the headnode's owner): quotas, gcqstat and permissions go by this. */
  user: string;
  group: string;
  headnode: string;
  /** Account inside the headnode that runs the job and owns its output (default root). */
  account?: string;
  queue: string;
  /** PBS priority -1024..1023, higher runs first. */
  priority: number;
  walltimeSec?: number;
  /** Paths inside the headnode; default `<cwd>/<name>.o<seq>` / `.e<seq>`. */
  stdoutPath?: string;
  stderrPath?: string;
  join: JoinMode;
  /** -r y|n: may the job be run again after gcd lost it (crash, restart). */
  rerunnable: boolean;
  resources: Resources;
  /**
   * -W stageout: 'none' brings nothing home; a list adds absolute clone paths to the working
   * directory, which is always staged out (see src/stageout/).
   */
  stageout?: 'none' | string[];
  /** The submitting host (PBS_O_HOST). */
  submitHost: string;
  /** -A: PBS Account_Name, a charge string (not the Unix account above). */
  accountName?: string;
  /** -P: PBS project. */
  project?: string;
  /** -m: subset of 'abej', or 'n'; PBS's default 'a' applies when unset. Job mail (notify/) reads it. */
  mailPoints?: string;
  /** -M: addresses to mail; default the owner. */
  mailUsers?: string[];
  /** -S: the interpreter the script runs under (Shell_Path_List). */
  shell?: string;
  /** -W group_list: the group the job runs under, as asked. */
  groupList?: string;
  /** -W umask, as asked (octal text). */
  umask?: string;
  /** -l resources recorded as asked (vmem, pmem, cput, software, declared custom ones...), by name. */
  extraResources?: Record<string, string>;
  /**
   * What the clone really gets (resources_assigned): the RAM asked (at least the snapshot's)
   * up to the snapshot's maxmem, and vCPUs up to its slots. Absent: the same as `resources`.
   */
  assigned?: Resources;
}

export interface JobRecord {
  id: string;
  seq: number;
  spec: JobSpec;
  state: JobState;
  /** Why a job waits or how it ended, shown by gcqstat -s / -f (PBS "comment"). */
  comment?: string;
  snapshotId?: string;
  queuedAt: number;
  startedAt?: number;
  endedAt?: number;
  /** PBS Exit_status: the command's code; 256+N when killed by signal N; negative for scheduler-side ends. */
  exitStatus?: number;
  /** Where the output went (paths inside the headnode). */
  outputPath?: string;
  errorPath?: string;
  /** How many times the job was started (for -r and crash recovery). */
  runCount: number;
  cloneId?: string;
  /**
   * The compute host (its registry name, src/grid/) that runs or ran the job: written in the
   * same compare-and-set as R; the runner's later transitions require it to be unchanged.
   */
  execHost?: string;
  /** Clone CPU time and peak memory, seen from the host (resources_used.cput / mem). */
  cputSec?: number;
  memKiB?: number;
  /** -a: not before this time (state W until then). */
  beginAt?: number;
  /** PBS Hold_Types: 'u' user hold (-h, gcqhold), 's' system hold (waiting on dependencies). */
  holds?: string;
  /** -W depend: what must happen to other jobs first. */
  depend?: JobDependency[];
  /** An array job's parent record (`123[].srv`): its tasks and throttle. */
  array?: { indices: number[]; max?: number };
  /** A task of an array: its parent's id and its index (PBS_ARRAY_INDEX). */
  arrayParent?: string;
  arrayIndex?: number;
  /**
   * Set in the same write that makes the job F, cleared once its snapshot reference,
   * dependents and array are settled; gcd's start settles any job still marked (JobRunner.settle).
   */
  settling?: boolean;
  /**
   * How a job that ran (or tried to) ended, written in the same compare-and-set as its E or F:
   * its command exited, walltime killed it, gcqdel stopped it, it failed to start, or it was
   * lost with a gcd that died. Mail (-m a) and accounting read it rather than the comment.
   */
  endReason?: EndReason;
  /** The last job mail that could not be sent, and why (gcqstat -f mail_error). */
  mailError?: string;
}

export type EndReason = 'exit' | 'walltime' | 'deleted' | 'failed' | 'lost';

export const END_REASONS: readonly EndReason[] = ['exit', 'walltime', 'deleted', 'failed', 'lost'];

export type DependencyType = 'afterok' | 'afternotok' | 'afterany';

export interface JobDependency {
  type: DependencyType;
  /** Full job ids (`12.srv`, `13[].srv`). */
  jobIds: string[];
}

/** Scheduler-side exit statuses, as PBS numbers them. */
export const EXIT = {
  /** Walltime exceeded (PBS JOB_EXEC_KILL_WALLTIME). */
  WALLTIME: -29,
  /** The job could not start: snapshot missing, clone failed (PBS JOB_EXEC_FAIL1). */
  START_FAILED: -1,
  /** Lost when gcd died and not rerunnable (PBS JOB_EXEC_RERUN family). */
  LOST: -3,
} as const;

/** PBS exit status for a process ended by a signal. */
export function signalExitStatus(signal: number): number {
  return 256 + signal;
}
