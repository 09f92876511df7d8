import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord } from '../queue/job.js';

/**
 * A job's lifecycle as the observers (metrics, accounting) see it, in PBS accounting terms:
 * queued (Q), started (S), ended (E), deleted (D), rerun (R: put back in the queue to run
 * again), aborted (A: ended by the server, not by its command). Until the scheduler's state
 * machine emits typed transitions itself, the scheduler calls `emit` at these few points.
 */
export type LifecycleEvent = 'queued' | 'started' | 'ended' | 'deleted' | 'rerun' | 'aborted';

export interface JobTransition {
  jobId: string;
  event: LifecycleEvent;
  /** The record as it is after the change (finished jobs: read back from Redis). */
  record: JobRecord;
  /** Epoch ms of the change. */
  at: number;
  /** Measured on the way: snapshot pause at submission, clone start at start. */
  timings?: { snapshotPauseMs?: number; cloneStartMs?: number };
  /** For deleted: who asked (PBS requestor=). */
  requestor?: string;
}

export interface LifecycleListener {
  readonly name: string;
  onTransition(t: JobTransition): void | Promise<void>;
}

/**
 * Fan-out to the listeners. A listener's failure is logged and never reaches the scheduler:
 * a full disk for accounting must not stop jobs from running.
 */
export class LifecycleBus {
  private readonly listeners: LifecycleListener[] = [];

  add(l: LifecycleListener): void {
    this.listeners.push(l);
  }

  async emit(t: JobTransition): Promise<void> {
    for (const l of this.listeners) {
      try {
        await l.onTransition(t);
      } catch (e) {
        log.error('lifecycle listener failed', { listener: l.name, job: t.jobId, event: t.event, error: errorMessage(e) });
      }
    }
  }
}
