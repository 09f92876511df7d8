import { DelayedError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { EXIT, type JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import { nextState } from '../queue/job-states.js';
import { QUEUE_NAME, type Keys } from '../queue/keys.js';
import type { RunQueueData } from '../queue/run-queue.js';
import type { Capacity } from './capacity.js';
import type { JobRunner, StopReason } from './runner.js';

export interface DispatcherOptions {
  connection: ConnectionOptions;
  keys: Keys;
  store: JobStore;
  runner: JobRunner;
  capacity: Capacity;
  /** Most jobs running at once in this gcd (a job holds a slot for its whole run). */
  concurrency: number;
  /** BullMQ lock: renewed every half of it while the job runs, so hours-long jobs never stall. */
  lockDurationMs: number;
  /** How long a job that does not fit waits before it is looked at again. */
  retryDelayMs: number;
  /** Admin limits (max_running and friends): why a job may not start now, or undefined. */
  policy?: {
    admit(rec: JobRecord): string | undefined;
    started(rec: JobRecord, vstart: number): void;
    /** Undo started(): another runner won the job (its `run` compare-and-set failed here). */
    notStarted(rec: JobRecord): void;
  };
}

/**
 * Takes jobs from the BullMQ queue and runs them. Admission (capacity now; quotas later)
 * happens here: a job that cannot start goes back to the queue delayed, with its reason
 * recorded for gcqstat, and keeps its place by priority.
 */
export class Dispatcher {
  private worker: Worker<RunQueueData> | undefined;
  private readonly running = new Map<string, AbortController>();
  /** Running tasks per array, for the %max throttle (every running job is in this process). */
  private readonly arrayRunning = new Map<string, number>();

  constructor(private readonly o: DispatcherOptions) {}

  start(): void {
    this.worker = new Worker<RunQueueData>(QUEUE_NAME, (job, token) => this.process(job, token), {
      connection: this.o.connection,
      prefix: this.o.keys.bullPrefix,
      concurrency: this.o.concurrency,
      lockDuration: this.o.lockDurationMs,
      stalledInterval: Math.max(1000, Math.floor(this.o.lockDurationMs / 2)),
      // Lost runs are judged by our own run counter and -r y|n, not by BullMQ's stall limit.
      maxStalledCount: 1000,
      autorun: true,
    });
    this.worker.on('error', (e) => log.error('worker error', { error: errorMessage(e) }));
  }

  /** Stop a job running in this gcd. False if it is not running here. */
  cancel(id: string, reason: StopReason): boolean {
    const c = this.running.get(id);
    if (!c) return false;
    c.abort(reason);
    return true;
  }

  isRunning(id: string): boolean {
    return this.running.has(id);
  }

  private async process(bull: Job<RunQueueData>, token: string | undefined): Promise<void> {
    const { store, capacity, runner } = this.o;
    const rec = await store.tryGet(bull.data.id);
    // Only Q and W jobs start. R or E means another runner has it (a BullMQ lock loss gave it
    // to us too); jobs lost by a dead gcd were put back to Q (or finished) by its restart.
    if (!rec || nextState('run', rec.state) === undefined || this.running.has(rec.id)) return;
    const mem = rec.spec.resources.memMiB;
    const ncpus = rec.spec.resources.ncpus;
    const arrayRec = rec.arrayParent ? await store.tryGet(rec.arrayParent) : undefined;
    // From here to the reservations there is no await: concurrent workers see each other's.
    const why = this.throttled(arrayRec) ?? this.o.policy?.admit(rec) ?? capacity.tryReserve(ncpus, mem);
    if (why) {
      if (rec.comment !== why || rec.state !== 'Q') await store.transition(rec.id, 'defer', { comment: why });
      await bull.moveToDelayed(Date.now() + this.o.retryDelayMs, token);
      throw new DelayedError();
    }
    this.o.policy?.started(rec, bull.data.vstart ?? 0);
    const parent = rec.arrayParent;
    if (parent) this.arrayRunning.set(parent, (this.arrayRunning.get(parent) ?? 0) + 1);
    let won = false;
    try {
      // The one compare-and-set that decides who runs it: exactly one runner wins Q/W -> R.
      const t = await store.transition(rec.id, 'run', { comment: undefined });
      if (!t.ok) return;
      won = true;
      if (parent) await store.transition(parent, 'array-begin', { comment: undefined });
      const runCount = await store.incrRunCount(rec.id);
      const mine: JobRecord = { ...t.record, runCount };
      if (runCount > 1 && !rec.spec.rerunnable) {
        // It ran before and was lost (gcd died): -r n forbids a second run.
        await runner.finish(mine, { exitStatus: EXIT.LOST, comment: 'gcd stopped while the job ran; not rerunnable (-r n), so not run again', endReason: 'lost' });
        return;
      }
      const ctl = new AbortController();
      this.running.set(rec.id, ctl);
      try {
        const out = await runner.run(mine, ctl.signal);
        if (out.requeue) {
          await bull.moveToDelayed(Date.now(), token);
          throw new DelayedError();
        }
      } finally {
        this.running.delete(rec.id);
      }
    } finally {
      if (!won) this.o.policy?.notStarted(rec);
      capacity.release(ncpus, mem);
      if (parent) {
        const n = (this.arrayRunning.get(parent) ?? 1) - 1;
        if (n > 0) this.arrayRunning.set(parent, n);
        else this.arrayRunning.delete(parent);
      }
    }
  }

  /** Slurm's JobArrayTaskLimit: an array may run at most its %max tasks at once. */
  private throttled(parent: JobRecord | undefined): string | undefined {
    const max = parent?.array?.max;
    if (!parent || max === undefined) return undefined;
    const now = this.arrayRunning.get(parent.id) ?? 0;
    return now >= max ? `JobArrayTaskLimit: ${now} of %${max} tasks of ${parent.id} running` : undefined;
  }

  /** Graceful stop: running jobs are stopped, their clones destroyed, rerunnable ones requeued. */
  async close(): Promise<void> {
    for (const c of this.running.values()) c.abort('shutdown');
    await this.worker?.close();
  }
}
