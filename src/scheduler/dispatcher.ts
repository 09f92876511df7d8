import { DelayedError, Queue, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { EXIT, type JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import { nextState } from '../queue/job-states.js';
import { QUEUE_NAME, type Keys } from '../queue/keys.js';
import type { RunQueueData } from '../queue/run-queue.js';
import type { Capacity } from './capacity.js';
import type { JobRunner, StopReason } from './runner.js';
import { WaitingLine } from './waiting-line.js';

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
  /** On a grid (src/grid/): this compute host, written as the job's execHost with R. */
  host?: DispatchHost;
}

/** The compute host a dispatcher runs on, and what its grid says before it takes a job. */
export interface DispatchHost {
  name: string;
  /**
   * Why this host leaves the job to others for now (offline, another host caches its
   * snapshot), or undefined. The job goes back delayed by `gateDelayMs`, its record untouched.
   */
  gate(rec: JobRecord): Promise<string | undefined>;
  gateDelayMs: number;
}

/**
 * Takes jobs from the BullMQ queue and runs them. Admission (capacity now; quotas later)
 * happens here: a job that cannot start goes back to the queue delayed, with its reason
 * recorded for gcqstat. In BullMQ's delayed set priority means nothing, so the dispatcher keeps
 * its own line of deferred jobs: a job is admitted only if no deferred job with a better
 * priority, waiting only for capacity, fits now; else it steps back and that job is promoted.
 */
export class Dispatcher {
  private worker: Worker<RunQueueData> | undefined;
  /** To promote a deferred job out of BullMQ's delayed set when it is its turn. */
  private queue: Queue<RunQueueData> | undefined;
  private readonly line = new WaitingLine();
  private readonly running = new Map<string, AbortController>();
  /** Runs stopped by dropAll(). */
  private readonly dropped = new Set<string>();
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
    this.queue = new Queue<RunQueueData>(QUEUE_NAME, { connection: this.o.connection, prefix: this.o.keys.bullPrefix });
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

  /** Jobs running in this gcd now (the node heartbeat reports them). */
  runningIds(): string[] {
    return [...this.running.keys()];
  }

  /** Stop or resume taking new jobs (an offline or draining host); running jobs go on either way. */
  async setTaking(on: boolean): Promise<void> {
    if (!this.worker) return;
    if (on && this.worker.isPaused()) await this.worker.resume();
    else if (!on && !this.worker.isPaused()) await this.worker.pause(true);
  }

  /**
   * This host was declared dead while it still ran (a stall, a cut link): its jobs were settled
   * elsewhere. Stop them all; their runners' own transitions are refused (execHost guard).
   */
  dropAll(): void {
    for (const [id, c] of this.running) {
      this.dropped.add(id);
      c.abort('shutdown');
    }
  }

  private async process(bull: Job<RunQueueData>, token: string | undefined): Promise<void> {
    const { store, capacity, runner } = this.o;
    const rec = await store.tryGet(bull.data.id);
    // Only Q and W jobs start. R or E means another runner has it (a BullMQ lock loss gave it
    // to us too); jobs lost by a dead gcd were put back to Q (or finished) by its restart.
    if (!rec || nextState('run', rec.state) === undefined || this.running.has(rec.id)) {
      this.line.forget(bull.data.id);
      return;
    }
    const gated = await this.o.host?.gate(rec);
    if (gated !== undefined && this.o.host) {
      log.debug('job left to other hosts', { job: rec.id, host: this.o.host.name, why: gated });
      await bull.moveToDelayed(Date.now() + this.o.host.gateDelayMs, token);
      throw new DelayedError();
    }
    const mem = rec.spec.resources.memMiB;
    const ncpus = rec.spec.resources.ncpus;
    const priority = bull.opts.priority;
    const arrayRec = rec.arrayParent ? await store.tryGet(rec.arrayParent) : undefined;
    // From here to the reservations there is no await: concurrent workers see each other's.
    const held = this.throttled(arrayRec) ?? this.o.policy?.admit(rec);
    const first = held === undefined ? this.line.ahead(capacity.free, priority, rec.id) : undefined;
    const why = held ?? (first ? `Priority: ${first.id} goes first (higher priority, same free resources)` : capacity.tryReserve(ncpus, mem));
    if (why) {
      this.line.defer({ id: rec.id, priority: priority ?? Number.MAX_SAFE_INTEGER, ncpus, memMiB: mem, forCapacity: held === undefined });
      if (rec.comment !== why || rec.state !== 'Q') await store.transition(rec.id, 'defer', { comment: why });
      await bull.moveToDelayed(Date.now() + this.o.retryDelayMs, token);
      if (first) await this.promote(first.id);
      throw new DelayedError();
    }
    this.line.forget(rec.id);
    this.o.policy?.started(rec, bull.data.vstart ?? 0);
    const parent = rec.arrayParent;
    if (parent) this.arrayRunning.set(parent, (this.arrayRunning.get(parent) ?? 0) + 1);
    let won = false;
    try {
      // The one compare-and-set that decides who runs it: exactly one runner wins Q/W -> R.
      const t = await store.transition(rec.id, 'run', { comment: undefined, ...(this.o.host ? { execHost: this.o.host.name } : {}) });
      if (!t.ok) return;
      won = true;
      if (parent) await store.transition(parent, 'array-begin', { comment: undefined });
      const runCount = await store.incrRunCount(rec.id);
      const mine: JobRecord = { ...t.record, runCount };
      if (runCount > 1 && !rec.spec.rerunnable) {
        // It ran before and was lost (gcd died): -r n forbids a second run.
        await runner.finish(mine, {
          exitStatus: EXIT.LOST,
          comment: 'gcd stopped while the job ran; not rerunnable (-r n), so not run again',
          endReason: 'lost',
        });
        return;
      }
      const ctl = new AbortController();
      this.running.set(rec.id, ctl);
      try {
        const out = await runner.run(mine, ctl.signal);
        // A run dropped because this host was declared dead (dropAll): its BullMQ entry goes back
        // too (if this worker still holds it), so the job, settled elsewhere, is not left without one.
        const dropped = this.dropped.delete(rec.id);
        if (out.requeue || dropped) {
          this.o.policy?.notStarted(rec); // counted as queued again (gcqrerun, shutdown)
          await bull.moveToDelayed(Date.now(), token);
          throw new DelayedError();
        }
      } finally {
        this.running.delete(rec.id);
        this.dropped.delete(rec.id);
      }
    } finally {
      if (!won) this.o.policy?.notStarted(rec);
      capacity.release(ncpus, mem);
      if (parent) {
        const n = (this.arrayRunning.get(parent) ?? 1) - 1;
        if (n > 0) this.arrayRunning.set(parent, n);
        else this.arrayRunning.delete(parent);
      }
      // Freed capacity goes to the best deferred job now, not to whichever delay ends first.
      const next = this.line.ahead(capacity.free, undefined);
      if (next) await this.promote(next.id);
    }
  }

  /**
   * Bring a deferred job out of the delayed set so the worker takes it next. One that is no
   * longer in BullMQ (deleted, held) leaves the line; one already waiting or active needs nothing.
   */
  private async promote(id: string): Promise<void> {
    try {
      const job = await this.queue?.getJob(id);
      if (!job) {
        this.line.forget(id);
        return;
      }
      if (await job.isDelayed()) await job.promote();
    } catch (e) {
      // It left the delayed set meanwhile (taken, removed): its own turn settles it.
      log.debug('promote deferred job', { id, error: errorMessage(e) });
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
    await this.queue?.close();
  }
}
