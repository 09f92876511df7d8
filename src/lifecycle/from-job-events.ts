import type { SnapshotInfo } from '../drivers/driver.js';
import type { JobRecord } from '../queue/job.js';
import type { JobEvents, JobTransition as StateChange } from '../queue/job-events.js';
import type { JobEvent } from '../queue/job-states.js';
import { tellListeners, type JobTransition, type LifecycleEvent, type LifecycleListener } from './listener.js';

const BY_EVENT: Partial<Record<JobEvent, LifecycleEvent>> = {
  run: 'started',
  requeue: 'rerun',
  delete: 'deleted',
  'array-end': 'ended',
};

/**
 * The lifecycle event a state change is, or undefined for the changes observers do not
 * record (holds, alters, defers, exit to E). How a finished job ended comes from the
 * endReason the runner writes with its F.
 */
export function lifecycleEventOf(t: StateChange): LifecycleEvent | undefined {
  if (t.event !== 'finish') return BY_EVENT[t.event];
  const why = t.record.endReason;
  return why === 'deleted' ? 'deleted' : why === 'failed' || why === 'lost' ? 'aborted' : 'ended';
}

/**
 * Feeds the observers from the one stream of state changes, plus the two things it does not
 * carry (new records at gcqsub with their snapshot pause; clone start latency). Appends run
 * one after another so a job's lines keep their order.
 */
export class JobLifecycle {
  private readonly listeners: LifecycleListener[] = [];
  private readonly cloneStartWatchers: Array<(ms: number) => void> = [];
  private chain: Promise<void> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;

  add(l: LifecycleListener): void {
    this.listeners.push(l);
  }

  onCloneStart(fn: (ms: number) => void): void {
    this.cloneStartWatchers.push(fn);
  }

  attach(events: JobEvents): void {
    this.unsubscribe = events.subscribe((t) => {
      const event = lifecycleEventOf(t);
      if (!event) return;
      const r = t.record;
      const at = event === 'started' ? Date.now() : (r.endedAt ?? Date.now());
      // The runner writes startedAt just after the run transition: the observers get it now.
      const record = event === 'started' && r.startedAt === undefined ? { ...r, startedAt: at } : r;
      this.tell({ jobId: t.jobId, event, record, at, ...(t.replay ? { replay: true } : {}) });
    });
  }

  /** Q records (PBS writes one for an array, not for each task); one snapshot pause per snapshot. */
  submitted(records: JobRecord[], snapshots: SnapshotInfo[]): void {
    const pause = new Map(snapshots.map((x) => [x.headnode, x.pauseMs]));
    for (const r of records) {
      if (r.arrayParent) continue;
      const p = pause.get(r.spec.headnode);
      pause.delete(r.spec.headnode);
      this.tell({ jobId: r.id, event: 'queued', record: r, at: r.queuedAt, ...(p !== undefined ? { timings: { snapshotPauseMs: p } } : {}) });
    }
  }

  cloneStarted(_job: JobRecord, ms: number): void {
    for (const fn of this.cloneStartWatchers) fn(ms);
  }

  /** Resolves once every change heard so far has reached the listeners. */
  idle(): Promise<void> {
    return this.chain;
  }

  close(): Promise<void> {
    this.unsubscribe?.();
    return this.chain;
  }

  private tell(t: JobTransition): void {
    this.chain = this.chain.then(() => tellListeners(this.listeners, t));
  }
}
