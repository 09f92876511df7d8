import { StateError } from '../errors.js';
import type { JobState } from './job.js';

/**
 * The job state machine: every state change of a job record is one of these events, and
 * JobStore.transition applies it in Redis with compare-and-set (the record's state must be
 * one of the event's from-states at the moment of the write). PBS states: Q queued, H held,
 * W waiting for its start time, R running, S suspended (its clone paused), E exiting (output
 * being delivered), F finished; B an array job whose tasks have begun. Records are created in Q, H or W (Submitter).
 *
 * Each event maps from-state -> to-state. A from-state that is not listed is refused: the
 * write does not happen and the caller gets a JobStateError (job, from, event).
 */
export const JOB_TRANSITIONS = {
  /** gcqhold, or a -W depend system hold. An array's record keeps B while tasks run. */
  hold: { Q: 'H', W: 'H', H: 'H', B: 'B' },
  /** The last hold went and the job may start. */
  release: { H: 'Q' },
  /** The last hold went but the job's start time (-a) is still ahead. */
  'release-wait': { H: 'W' },
  /** One hold went, another remains. */
  'release-partial': { H: 'H' },
  /**
   * A held job's dependencies are met: it moves to a snapshot taken now (its parents' files are
   * home), state unchanged. JobStore.resnapshot moves the snapshot references with it.
   */
  resnapshot: { H: 'H' },
  /** gcqalter of a job that has not started, its state unchanged. */
  alter: { Q: 'Q', W: 'W', H: 'H', B: 'B' },
  /** gcqalter -a: the new start time is ahead. */
  'alter-wait': { Q: 'W', W: 'W' },
  /** gcqalter -a: the start time was cleared or has passed. */
  'alter-ready': { Q: 'Q', W: 'Q' },
  /** The dispatcher could not start it now (a limit, no room): it waits, with the reason. */
  defer: { Q: 'Q', W: 'Q' },
  /** The first task of an array started: the array's record becomes B. */
  'array-begin': { Q: 'B', W: 'B' },
  /** A runner takes the job. Only one runner can win: a job R elsewhere is refused. */
  run: { Q: 'R', W: 'R' },
  /** The command ended; its output is being delivered (a suspended job ends when deleted). */
  exit: { R: 'E', S: 'E' },
  /** gcd stopped (or died) while the job ran and it is rerunnable (-r y). */
  requeue: { R: 'Q', S: 'Q' },
  /** gcqsig -s suspend: the clone is paused and its walltime clock stopped. */
  suspend: { R: 'S' },
  /** gcqsig -s resume: the clone runs on, its walltime clock with it. */
  resume: { S: 'R' },
  /** gcqrerun: the running command was stopped; the job runs again from the same snapshot. */
  rerun: { R: 'Q', S: 'Q' },
  /** gcqmove / gcqalter -q of a job that has not started: a new queue, the state unchanged. */
  move: { Q: 'Q', W: 'W', H: 'H' },
  /** The job ran, or tried to, and is over. */
  finish: { R: 'F', S: 'F', E: 'F' },
  /** gcqdel, or a dependency that can never be met, before the job started. */
  delete: { Q: 'F', H: 'F', W: 'F' },
  /** The last task of an array ended (or the array was deleted): the array's record ends. */
  'array-end': { Q: 'F', B: 'F', H: 'F', W: 'F' },
} as const satisfies Record<string, Partial<Record<JobState, JobState>>>;

export type JobEvent = keyof typeof JOB_TRANSITIONS;

export const JOB_EVENTS = Object.keys(JOB_TRANSITIONS) as JobEvent[];

/** The state `event` leads to from `from`, or undefined when the table does not allow it. */
export function nextState(event: JobEvent, from: JobState): JobState | undefined {
  const row: Partial<Record<JobState, JobState>> = JOB_TRANSITIONS[event];
  return row[from];
}

/** The states `event` may start from. */
export function fromStates(event: JobEvent): JobState[] {
  return Object.keys(JOB_TRANSITIONS[event]) as JobState[];
}

/** A transition the table does not allow from the job's current state (or the job is gone). */
export class JobStateError extends StateError {
  constructor(
    readonly job: string,
    /** The state the job was in; undefined when its record no longer exists. */
    readonly from: JobState | undefined,
    readonly event: JobEvent,
  ) {
    super(from === undefined ? `job ${job} no longer exists (${event})` : `job ${job} is ${from}: ${event} is not allowed from ${from}`);
  }
}
