import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord, JobState } from './job.js';
import type { JobEvent } from './job-states.js';

/** One state change that has happened (its compare-and-set succeeded in Redis). */
export interface JobTransition {
  jobId: string;
  event: JobEvent;
  from: JobState;
  to: JobState;
  /** The record as written by the transition (state `to`). */
  record: JobRecord;
  /**
   * Told again at gcd start: the job's F was written but a crash came before it was settled,
   * so listeners may not have heard it. Listeners keeping durable records skip what they have.
   */
  replay?: boolean;
}

export type JobTransitionListener = (t: JobTransition) => void | Promise<void>;

/**
 * JobEvents: the one place to watch job state changes. JobStore.transition emits here after
 * every successful compare-and-set, so a listener sees each change exactly once per gcd,
 * in the order this gcd made them. For mail (-m abe: `to === 'R'`, `to === 'F'`), accounting
 * (`to === 'F'`) and metrics. A listener that throws or rejects is logged and does not
 * affect the job or the other listeners; listeners are not awaited by the scheduler.
 */
export class JobEvents {
  private readonly listeners = new Set<JobTransitionListener>();

  /** Returns the function that unsubscribes. */
  subscribe(listener: JobTransitionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(t: JobTransition): void {
    for (const l of this.listeners) {
      try {
        const r = l(t);
        if (r instanceof Promise) r.catch((e) => log.error('job event listener failed', { job: t.jobId, event: t.event, error: errorMessage(e) }));
      } catch (e) {
        log.error('job event listener failed', { job: t.jobId, event: t.event, error: errorMessage(e) });
      }
    }
  }
}
