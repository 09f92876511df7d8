import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord } from '../queue/job.js';

/**
 * A job's lifecycle as the observers (metrics, accounting) see it, in PBS accounting terms:
 * queued (Q), started (S), ended (E), deleted (D), rerun (R: put back in the queue to run
 * again), aborted (A: ended by the server, not by its command). Derived from the scheduler's
 * state changes (JobEvents) by lifecycle/from-job-events.ts.
 */
export type LifecycleEvent = 'queued' | 'started' | 'ended' | 'deleted' | 'rerun' | 'aborted';

export interface JobTransition {
  jobId: string;
  event: LifecycleEvent;
  /** The record as written by the change (finished jobs: with usage, start time, run count). */
  record: JobRecord;
  /** Epoch ms of the change. */
  at: number;
  /** Measured on the way: snapshot pause at submission. */
  timings?: { snapshotPauseMs?: number };
  /** For deleted: who asked (PBS requestor=). */
  requestor?: string;
  /** Told again after a crash (JobTransition.replay in queue/job-events.ts): may have been heard. */
  replay?: boolean;
}

export interface LifecycleListener {
  readonly name: string;
  onTransition(t: JobTransition): void | Promise<void>;
}

/** Calls each listener; a listener's failure is logged and never reaches the scheduler or the others. */
export async function tellListeners(listeners: readonly LifecycleListener[], t: JobTransition): Promise<void> {
  for (const l of listeners) {
    try {
      await l.onTransition(t);
    } catch (e) {
      log.error('lifecycle listener failed', { listener: l.name, job: t.jobId, event: t.event, error: errorMessage(e) });
    }
  }
}
