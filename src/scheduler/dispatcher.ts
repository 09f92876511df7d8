import { DelayedError, Queue, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { EXIT, type JobRecord } from '../queue/job.js';
import type { JobStore, RunLimits } from '../queue/job-store.js';
import { nextState } from '../queue/job-states.js';
import { QUEUE_NAME, type Keys } from '../queue/keys.js';
import type { RunQueueData } from '../queue/run-queue.js';
import type { Capacity } from './capacity.js';
import type { JobRunner, StopReason } from './runner.js';
import { WaitingLine } from './waiting-line.js';
import { crashPoint } from '../crash-point.js';

export interface DispatcherOptions {
  connection: ConnectionOptions;
  keys: Keys;
  store: JobStore;
  runner: JobRunner;
  capacity: Capacity;
  /**
   * Most jobs this gcd's worker holds at once (a job holds a slot for its whole run). The worker
   * takes fewer while the host is full: see `slots()`.
   */
  concurrency: number;
  /** BullMQ lock: renewed every half of it while the job runs, so hours-long jobs never stall. */
  lockDurationMs: number;
  /** How long a job that does not fit waits before it is looked at again. */
  retryDelayMs: number;
  /**
   * Admin limits (max_running and friends), judged on the counts every gcd shares in Redis: the
   * job starts only through JobStore.start (admit + reserve + run, one atomic step).
   */
  policy?: {
    /** Why the job may not start whatever the counts (its queue is stopped), or undefined. */
    blocked(rec: JobRecord): string | undefined;
    /** The running limits of the job's five entities (usage-store.ts runLimits). */
    limits(rec: JobRecord): RunLimits[];
    /** The reason from the counts JobStore.start refused with. */
    reason(rec: JobRecord, limited: number[], throttle: number | undefined): string;
    /** The user's queued job (same queue) with a higher -p than this one, that should take its turn. */
    betterOwn?(rec: JobRecord): Promise<string | undefined>;
    /** The job won its start: the fair-share clock moves to its tag. */
    started(rec: JobRecord, vstart: number): Promise<void>;
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
  /**
   * Another live host takes jobs now (as of the last look at the grid). Then this host leaves
   * a job it has no room for in the queue, to them, instead of looking at it (see `slots()`).
   */
  othersTakeJobs?(): boolean;
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
  /** Jobs holding a capacity reservation now. */
  private holding = 0;

  constructor(private readonly o: DispatcherOptions) {}

  start(): void {
    this.worker = new Worker<RunQueueData>(QUEUE_NAME, (job, token) => this.process(job, token), {
      connection: this.o.connection,
      prefix: this.o.keys.bullPrefix,
      concurrency: this.slots(),
      lockDuration: this.o.lockDurationMs,
      stalledInterval: Math.max(1000, Math.floor(this.o.lockDurationMs / 2)),
      // Lost runs are judged by our own run counter and -r y|n, not by BullMQ's stall limit.
      maxStalledCount: 1000,
      autorun: true,
    });
    this.worker.on('error', (e) => log.error('worker error', { error: errorMessage(e) }));
    this.queue = new Queue<RunQueueData>(QUEUE_NAME, { connection: this.o.connection, prefix: this.o.keys.bullPrefix });
  }

  /**
   * How many jobs the worker may hold now: those holding capacity and one more per free cpu,
   * so a host takes no job it has no room for. Alone (no other host takes jobs), one more: a
   * full host looks at one waiting job at a time, which then says why it waits (its comment)
   * and goes back delayed. On a grid it does not: a job it looked at went back delayed by
   * `retryDelayMs` while other hosts had room (a 64-task array on 3 hosts took 2-4x as long
   * as on one; with this, less: docs/scale.md).
   */
  private slots(): number {
    const look = this.o.host?.othersTakeJobs?.() ? 0 : 1;
    return Math.max(1, Math.min(this.o.concurrency, this.holding + this.o.capacity.free.ncpus + look));
  }

  private reserved(by: number): void {
    this.holding += by;
    // Read by the worker before it fetches again (also in the job's completion, which comes after).
    if (this.worker) this.worker.concurrency = this.slots();
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
    // -p orders a user's own jobs only: a better one of theirs takes this fair-share turn.
    if (rec.state === 'Q') {
      const better = await this.o.policy?.betterOwn?.(rec);
      if (better && better !== rec.id && (await this.giveTurn(bull, token, better))) throw new DelayedError();
    }
    const arrayRec = rec.arrayParent ? await store.tryGet(rec.arrayParent) : undefined;
    const throttle = arrayRec?.array?.max;
    // From here to the capacity reservation there is no await: concurrent workers see each other's.
    const blocked = this.o.policy?.blocked(rec);
    const first = blocked === undefined ? this.line.ahead(capacity.free, priority, rec.id) : undefined;
    let why = blocked ?? (first ? `Priority: ${first.id} goes first (higher priority, same free resources)` : capacity.tryReserve(ncpus, mem));
    let forCapacity = blocked === undefined;
    let t: Awaited<ReturnType<JobStore['start']>> | undefined;
    if (!why) {
      this.reserved(1);
      crashPoint('dispatch:before-run');
      // The one compare-and-set that decides who runs it, with the quota counts of every gcd:
      // exactly one runner wins Q/W -> R, and only while every running limit holds.
      try {
        t = await store.start(rec.id, this.o.policy?.limits(rec) ?? [], throttle, {
          comment: undefined,
          ...(this.o.host ? { execHost: this.o.host.name } : {}),
        });
      } catch (e) {
        capacity.release(ncpus, mem);
        this.reserved(-1);
        throw e;
      }
      if (!t.ok) {
        capacity.release(ncpus, mem);
        this.reserved(-1);
        if (!t.limited) {
          this.line.forget(rec.id);
          return;
        }
        why = this.o.policy?.reason(rec, t.limited, throttle) ?? 'Resources: a limit holds the job';
        forCapacity = false;
      }
    }
    if (!t || !t.ok) {
      const reason = why ?? 'Resources';
      this.line.defer({ id: rec.id, priority: priority ?? Number.MAX_SAFE_INTEGER, ncpus, memMiB: mem, forCapacity });
      if (rec.comment !== reason || rec.state !== 'Q') await store.transition(rec.id, 'defer', { comment: reason });
      await bull.moveToDelayed(Date.now() + this.o.retryDelayMs, token);
      if (first) await this.promote(first.id);
      throw new DelayedError();
    }
    crashPoint('dispatch:after-run');
    this.line.forget(rec.id);
    const parent = rec.arrayParent;
    try {
      await this.o.policy?.started(rec, bull.data.vstart ?? 0);
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
          // Counted as queued again by its R -> Q transition (gcqrerun, shutdown, the failure monitor).
          await bull.moveToDelayed(Date.now(), token);
          throw new DelayedError();
        }
      } finally {
        this.running.delete(rec.id);
        this.dropped.delete(rec.id);
      }
    } finally {
      capacity.release(ncpus, mem);
      this.reserved(-1);
      // Freed capacity goes to the best deferred job now, not to whichever delay ends first.
      const next = this.line.ahead(capacity.free, undefined);
      if (next) await this.promote(next.id);
    }
  }

  /**
   * Swap BullMQ places (priority and fair-share tag) with the user's better job `id`, if it
   * waits behind this one; this job steps back (delayed for no time) to the other's place.
   */
  private async giveTurn(bull: Job<RunQueueData>, token: string | undefined, id: string): Promise<boolean> {
    try {
      const other = await this.queue?.getJob(id);
      if (!other) return false;
      const state = await other.getState();
      const mine = bull.opts.priority ?? 0;
      const theirs = other.opts.priority ?? 0;
      if ((state !== 'prioritized' && state !== 'waiting') || theirs <= mine) return false;
      await other.updateData({ ...other.data, vstart: bull.data.vstart });
      await other.changePriority({ priority: mine });
      await bull.updateData({ ...bull.data, vstart: other.data.vstart });
      await bull.changePriority({ priority: theirs });
      await bull.moveToDelayed(Date.now(), token);
      return true;
    } catch (e) {
      log.debug('give turn', { id, error: errorMessage(e) });
      return false;
    }
  }

  /**
   * Bring a deferred job out of the delayed set so the worker takes it next. One that is no
   * longer in BullMQ (deleted, held) leaves the line, and so does one a worker holds: on a grid
   * another host may have taken it, and while it stayed in this host's line every job this host
   * looked at stepped back for it ("Priority: ... goes first") until it ended there.
   */
  private async promote(id: string): Promise<void> {
    try {
      const job = await this.queue?.getJob(id);
      if (!job) {
        this.line.forget(id);
        return;
      }
      const state = await job.getState();
      if (state === 'active') this.line.forget(id);
      else if (state === 'delayed') await job.promote();
    } catch (e) {
      // It left the delayed set meanwhile (taken, removed): its own turn settles it.
      log.debug('promote deferred job', { id, error: errorMessage(e) });
    }
  }

  /** Graceful stop: running jobs are stopped, their clones destroyed, rerunnable ones requeued. */
  async close(): Promise<void> {
    for (const c of this.running.values()) c.abort('shutdown');
    await this.worker?.close();
    await this.queue?.close();
  }
}
