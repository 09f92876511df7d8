// Over 400 lines on purpose: the job pipeline's one entry point; its methods share private state.
import { SnapshotBytesCheck } from './byte-quotas.js';
import { checkRedisRoom, isRedisOom, RedisFullError } from '../redis/memory-guard.js';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Driver } from '../drivers/driver.js';
import { errorMessage, StateError, UnknownJobError, UsageError } from '../errors.js';
import { log } from '../log.js';
import { EXIT, type JobRecord, type JobSpec } from '../queue/job.js';
import { JobStore } from '../queue/job-store.js';
import type { JobEvents } from '../queue/job-events.js';
import { nextState } from '../queue/job-states.js';
import type { Keys } from '../queue/keys.js';
import { RunQueue } from '../queue/run-queue.js';
import { mayActOn, type Actor } from './actor.js';
import { Capacity, type CapacityLimits } from './capacity.js';
import { arrayExitStatus, judgeDependencies } from './dependencies.js';
import { Dispatcher, type DispatchHost } from './dispatcher.js';
import { JobControl, type JobChanges } from './job-control.js';
import { JobRunner, type JobEnd, type StopReason } from './runner.js';
import { Submitter, type SubmitOptions } from './submitter.js';
import { emptyQuotaConfig, type QuotaConfig } from '../config/quotas.js';
import { freshSnapshotForRelease } from '../stageout/fresh-snapshot.js';
import { checkSubmit, DEFAULT_QUEUE_NAME, resolveQueue } from './policy.js';
import { RedisFairOrder } from './fair-redis.js';
import { QueuedLimitError } from '../queue/job-store.js';
import { queuedChecks, queuedError, refusalReason, runLimits, usageOf, UsageStore } from './usage-store.js';
import { crashPoint } from '../crash-point.js';
import { RecurringJobs } from './recurring.js';
import { EndedOutputs } from './ended-output.js';
import type { JobObservations } from '../lifecycle/observations.js';
import { LiveJobs } from './live-jobs.js';
import { moveJob } from './queue-move.js';
import { rerunJobs, signalJobs, type JobSignal, type RemoteJobs, type RunningOpsDeps } from './running-ops.js';

/** `cron3.srv`: a recurring job's id (gcqsub --cron); gcqhold/gcqrls/gcqdel pause, resume, remove it. */
const CRON_ID = /^cron\d+(\.|$)/;

export interface SchedulerOptions {
  redis: Redis;
  connection: ConnectionOptions;
  keys: Keys;
  serverName: string;
  driver: Driver;
  stateDir: string;
  capacity: CapacityLimits;
  concurrency?: number;
  lockDurationMs?: number;
  killDelayMs?: number;
  /** RunnerOptions.guestDeadlineMs. */
  guestDeadlineMs?: number;
  historyTtlSec?: number;
  retryDelayMs?: number;
  /** false: accept and list jobs but run none (a submit-only process, or a benchmark). */
  dispatch?: boolean;
  /** The admin's quota and queue settings, as of now (reloaded behind this function). */
  quotas?: () => QuotaConfig;
  /** What the state changes do not carry: new jobs with their snapshot pause, clone start latency. */
  observe?: JobObservations;
  /** A grid's other compute hosts: gcqdel, gcqsig and gcqrerun of jobs running there (src/grid). */
  remote?: RemoteJobs;
  /**
   * On a grid (src/grid/): this compute host. Its name becomes the execHost of the jobs it runs,
   * and a restart recovers only those (plus, on the server, jobs that name no host).
   */
  host?: DispatchHost & { isServer: boolean };
  /** false: recurring jobs (--cron) are not fired here (a grid node cannot snapshot a headnode). */
  cron?: boolean;
  /** The largest host of the grid now (submission refuses a job above it); default this host's capacity. */
  largestHost?: () => CapacityLimits | undefined;
  /**
   * A compute node (src/grid): the dependents of a job that ended here are reviewed by the
   * server, which can snapshot their headnode afresh (a node has no headnodes). false: the
   * server could not do it; they are reviewed here (in their submission snapshot, said so).
   */
  dependentsElsewhere?: (job: JobRecord) => Promise<boolean>;
}

export interface ListFilter {
  includeFinished?: boolean;
  user?: string;
  /** Array tasks too (gcqstat -t); otherwise only the array's own line. */
  tasks?: boolean;
}

/**
 * The job pipeline as one object: submit, look, hold, alter, delete, wait; it owns the
 * dispatcher that runs jobs. gcd's API and the library entry both call this.
 */
export class Scheduler {
  readonly store: JobStore;
  readonly queue: RunQueue;
  readonly capacity: Capacity;
  private readonly submitter: Submitter;
  private readonly runner: JobRunner;
  private readonly control: JobControl;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly spoolDir: string;
  readonly recurring: RecurringJobs;
  /** Finished jobs' output, kept a minute for gcqpeek -f. */
  readonly endedOutputs: EndedOutputs;
  private readonly quotas: () => QuotaConfig;
  /** Queued/running counts per user, group, queue, shared by every gcd on the Redis (usage-store.ts). */
  readonly usage: UsageStore;
  /** Commands running in this gcd, for gcqsig. */
  private readonly live = new LiveJobs();

  constructor(private readonly o: SchedulerOptions) {
    this.quotas = o.quotas ?? (() => emptyQuotaConfig());
    this.store = new JobStore(o.redis, o.keys, o.serverName);
    this.usage = new UsageStore(o.redis, o.keys);
    this.queue = new RunQueue(o.connection, o.keys, new RedisFairOrder(o.redis, o.keys, () => this.quotas()));
    this.capacity = new Capacity(o.capacity);
    this.spoolDir = join(o.stateDir, 'spool');
    const bytes = new SnapshotBytesCheck(this.store, o.driver, () => this.quotas());
    this.submitter = new Submitter(
      o.driver,
      this.store,
      () => o.largestHost?.() ?? this.capacity.limits,
      (specs, snaps) => bytes.check(specs, snaps),
    );
    this.control = new JobControl(this.store, this.queue);
    this.recurring = new RecurringJobs(
      o.redis,
      o.connection,
      o.keys,
      o.serverName,
      async (spec) => (await this.submit([spec]))[0].id,
      async (headnode) => o.driver.headnodeIncarnation?.(headnode),
    );
    this.endedOutputs = new EndedOutputs(join(o.stateDir, 'ended-output'));
    this.runner = new JobRunner({
      driver: o.driver,
      quotas: () => this.quotas(),
      store: this.store,
      spoolDir: this.spoolDir,
      endedOutputs: this.endedOutputs,
      killDelayMs: o.killDelayMs ?? 10_000,
      ...(o.guestDeadlineMs !== undefined ? { guestDeadlineMs: o.guestDeadlineMs } : {}),
      historyTtlSec: o.historyTtlSec ?? 7 * 24 * 3600,
      onFinished: (job) => this.afterFinish(job),
      ...(o.observe ? { onCloneStarted: (job: JobRecord, ms: number) => o.observe?.cloneStarted(job, ms) } : {}),
      live: this.live,
    });
    if (o.dispatch !== false) {
      this.dispatcher = new Dispatcher({
        connection: o.connection,
        keys: o.keys,
        store: this.store,
        runner: this.runner,
        capacity: this.capacity,
        concurrency: o.concurrency ?? 64,
        lockDurationMs: o.lockDurationMs ?? 30_000,
        retryDelayMs: o.retryDelayMs ?? 1000,
        ...(o.host ? { host: o.host } : {}),
        policy: {
          blocked: (rec) => {
            const q = this.quotas().queues.get(rec.spec.queue);
            return q && !q.started ? `QueueStopped: queue ${q.name} is not started (started: false)` : undefined;
          },
          limits: (rec) => runLimits(this.quotas(), rec),
          betterOwn: (rec) => this.usage.betterOwn(rec.spec.queue, rec.spec.user, rec.spec.priority),
          reason: (rec, limited, throttle) => refusalReason(this.quotas(), rec, limited, throttle),
          started: async (_rec, vstart) => {
            await this.queue.fair.dispatched(vstart);
          },
        },
      });
    }
  }

  /** Every job state change, after its compare-and-set (mail, accounting and metrics subscribe here). */
  get events(): JobEvents {
    return this.store.events;
  }

  /** Reconcile after a crash, then start taking jobs. */
  async start(): Promise<void> {
    await this.recover();
    // Counts are moved with every state change; a crash cannot split the two, but records from
    // before counts lived in Redis (or a hand-edited Redis) are put right here.
    await this.store.rebuildUsage();
    this.dispatcher?.start();
    if (this.dispatcher && this.o.cron !== false) this.recurring.start();
  }

  private cronId(idText: string): string | undefined {
    if (!CRON_ID.test(idText)) return undefined;
    return idText.includes('.') ? idText : `${idText}.${this.o.serverName}`;
  }

  /** The admin's quota and queue settings now (gcqsub's custom resources, gcqstat -Q, -B and -s). */
  quotaConfig(): QuotaConfig {
    return this.quotas();
  }

  /** Accept jobs; returns their records (for an array: its own record first, then its tasks). */
  async submit(specs: JobSpec[], opts: SubmitOptions = {}): Promise<JobRecord[]> {
    await checkRedisRoom(this.o.redis);
    try {
      return await this.submitChecked(specs, opts);
    } catch (e) {
      if (isRedisOom(e)) throw new RedisFullError(0, 0);
      throw e;
    }
  }

  private async submitChecked(specs: JobSpec[], opts: SubmitOptions): Promise<JobRecord[]> {
    const cfg = this.quotas();
    const count = opts.array ? opts.array.indices.length : 1;
    const resolved = [];
    for (const spec of specs) {
      // Queue defaults and per-job limits; max_queued counts the whole batch. This look is
      // early and cheap (before the snapshot); the records' own write checks max_queued again,
      // atomically, so parallel submissions cannot overshoot it.
      const queue = resolveQueue(cfg, spec.queue)?.name ?? (spec.queue || DEFAULT_QUEUE_NAME);
      const r = checkSubmit(
        cfg,
        await this.usage.read(spec.user, spec.group, queue),
        {
          user: spec.user,
          group: spec.group,
          queue: spec.queue,
          ncpus: spec.resources.ncpus,
          ...(spec.resources.memMiB ? { memMiB: spec.resources.memMiB } : {}),
          ...(spec.walltimeSec !== undefined ? { walltimeSec: spec.walltimeSec } : {}),
        },
        count * specs.length,
      );
      resolved.push({
        ...spec,
        queue: r.queue,
        resources: { ...spec.resources, ncpus: r.ncpus },
        ...(r.walltimeSec !== undefined ? { walltimeSec: r.walltimeSec } : {}),
      });
    }
    let s: Awaited<ReturnType<Submitter['submit']>>;
    try {
      s = await this.submitter.submit(resolved, {
        ...opts,
        checks: (recs) =>
          queuedChecks(
            this.o.keys,
            cfg,
            recs.filter((x) => !x.array),
          ),
      });
    } catch (e) {
      if (e instanceof QueuedLimitError) throw queuedError(e.check, e.held);
      throw e;
    }
    crashPoint('submit:after-create');
    for (const w of s.waiting) await this.store.addDependents(w.on, w.child);
    await this.queue.add(s.runnable);
    // A parent may have ended between the check and the registration: look again.
    for (const w of s.waiting) await this.reviewDependent(w.child);
    this.o.observe?.submitted(s.records, s.snapshots);
    return s.records;
  }

  async list(actor: Actor, f: ListFilter = {}): Promise<JobRecord[]> {
    const all = await this.store.list({ tasks: f.tasks === true });
    return all.filter(
      (j) =>
        mayActOn(actor, j.spec.user) &&
        (f.includeFinished || j.state !== 'F') &&
        (!f.user || j.spec.user === f.user) &&
        (f.tasks || j.arrayParent === undefined),
    );
  }

  async get(actor: Actor, idText: string): Promise<JobRecord> {
    const id = this.store.parseId(idText);
    const j = await this.store.tryGet(id);
    // Another user's job is reported unknown, so ids do not leak across users.
    if (!j || !mayActOn(actor, j.spec.user)) throw new UnknownJobError(idText);
    return j;
  }

  /**
   * gcqdel: remove waiting jobs; stop running ones (their clones are destroyed). `force`
   * (-W force): destroy a running job's clone at once without asking it anything, and end a
   * job this gcd no longer drives. `purge` (-x): finished jobs' history goes too.
   */
  async delete(actor: Actor, idText: string, opts: { force?: boolean; purge?: boolean } = {}): Promise<void> {
    const cron = this.cronId(idText);
    if (cron) return this.recurring.remove(actor, cron);
    const rec = await this.get(actor, idText);
    if (rec.state === 'F' && opts.purge) return this.purge(rec);
    if (rec.state === 'F') throw new StateError(`Request invalid for state of job ${rec.id} (F)`);
    let acted = false;
    for (const t of await this.control.targets(rec)) {
      if (t.array) continue; // the array's record ends with its last task
      const r = await this.runner.finish(t, { comment: 'deleted by gcqdel before it ran' }, 'delete');
      if (r.ok) {
        await this.queue.remove(t.id);
        acted = true;
      } else if (
        (r.from === 'R' || r.from === 'S') &&
        (this.dispatcher?.cancel(t.id, opts.force ? 'forced' : 'deleted') || (await this.o.remote?.cancel(t, opts.force ? 'forced' : 'deleted')))
      )
        acted = true;
      else if ((r.from === 'R' || r.from === 'S' || r.from === 'E') && opts.force) {
        // Nothing here drives it (its runner is stuck or gone): end it and destroy its clone.
        if (t.cloneId) await this.o.driver.destroy(t.cloneId).catch(() => undefined);
        const f = await this.runner.finish(t, { exitStatus: EXIT.LOST, comment: 'deleted by gcqdel -W force: its clone was destroyed at once' });
        acted = f.ok || acted;
      }
    }
    if (rec.array && !acted) {
      await this.completeArray(rec.id);
      acted = true;
    }
    if (!acted) throw new StateError(`job ${rec.id} is ${rec.state} and cannot be deleted now`);
  }

  /** gcqdel -x: forget a finished job (an array with its tasks) now rather than at history expiry. */
  private async purge(rec: JobRecord): Promise<void> {
    const targets = await this.control.targets(rec);
    for (const t of targets) {
      if (!(await this.store.purge(t.id)) && t.id === rec.id) throw new StateError(`job ${rec.id} is still being settled; try again`);
    }
  }

  /** gcqsig -s SIG|suspend|resume. */
  async signal(actor: Actor, idText: string, sig: JobSignal): Promise<void> {
    const rec = await this.get(actor, idText);
    await signalJobs(this.runningOps(), rec, await this.control.targets(rec), sig);
  }

  /** gcqrerun: stop the running command and run the job again from the same snapshot. */
  async rerun(actor: Actor, idText: string): Promise<void> {
    const rec = await this.get(actor, idText);
    await rerunJobs(this.runningOps(), rec, await this.control.targets(rec));
  }

  /** gcqmove / gcqalter -q: a job that has not started goes to another queue; returns the queue. */
  async move(actor: Actor, idText: string, dest: string): Promise<string> {
    const rec = await this.get(actor, idText);
    const deps = {
      store: this.store,
      queue: this.queue,
      usage: this.usage,
      keys: this.o.keys,
      quotas: this.quotas(),
      targets: (r: JobRecord) => this.control.targets(r),
    };
    return moveJob(deps, rec, dest);
  }

  private runningOps(): RunningOpsDeps {
    return { ...this.localRunning(), ...(this.o.remote ? { remote: this.o.remote } : {}) };
  }

  /** The jobs whose command runs in this gcd: what a compute node's control listener acts on (src/grid). */
  localRunning(): { live: LiveJobs; cancel: (id: string, reason: StopReason) => boolean } {
    return { live: this.live, cancel: (id, reason) => this.dispatcher?.cancel(id, reason) ?? false };
  }

  async hold(actor: Actor, idText: string): Promise<void> {
    const cron = this.cronId(idText);
    if (cron) return this.recurring.pause(actor, cron);
    await this.control.hold(await this.get(actor, idText), 'u');
  }

  async release(actor: Actor, idText: string): Promise<void> {
    const cron = this.cronId(idText);
    if (cron) return this.recurring.resume(actor, cron);
    await this.control.release(await this.get(actor, idText), 'u');
  }

  async alter(actor: Actor, idText: string, changes: JobChanges): Promise<void> {
    const rec = await this.get(actor, idText);
    // A limit submission enforces holds for gcqalter too (issue 13 item 11): max_job_walltime,
    // judged on the spec written (in the queue the job is in then, should a gcqmove race it).
    const validate = (s: JobSpec): void => {
      if (changes.walltimeSec === undefined) return;
      checkSubmit(
        this.quotas(),
        usageOf(s.user, s.group, s.queue, []), // per-job limits only: counts do not matter
        {
          user: s.user,
          group: s.group,
          queue: s.queue,
          ncpus: s.resources.ncpus,
          ...(s.resources.memMiB ? { memMiB: s.resources.memMiB } : {}),
          walltimeSec: changes.walltimeSec,
        },
        0,
      );
    };
    validate(rec.spec);
    if (changes.priority !== undefined && (!Number.isInteger(changes.priority) || changes.priority < -1024 || changes.priority > 1023)) {
      throw new UsageError(`-p ${changes.priority}: the priority must be a whole number from -1024 to 1023`);
    }
    await this.control.alter(rec, changes, validate);
  }

  /** Resolve when the job has finished (for -W block=true). */
  async waitFor(id: string, pollMs = 200): Promise<JobRecord> {
    for (;;) {
      const j = await this.store.tryGet(id);
      if (!j) throw new UnknownJobError(id);
      if (j.state === 'F') return j;
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /** A job ended: complete its array, then release or cancel the jobs that depended on it. */
  private async afterFinish(job: JobRecord): Promise<void> {
    if (job.arrayParent) await this.completeArray(job.arrayParent);
    if (this.o.dependentsElsewhere && (await this.o.dependentsElsewhere(job))) return;
    await this.reviewDependentsOf(job);
  }

  /** Release or cancel the jobs that depended on `job` (F); the grid's server calls it for its nodes. */
  async reviewDependentsOf(job: Pick<JobRecord, 'id'>): Promise<void> {
    // Review, then forget: a crash in between reviews them again (reviewing is idempotent).
    for (const child of await this.store.dependentsOf(job.id)) await this.reviewDependent(child);
    await this.store.forgetDependents(job.id);
  }

  /** An array's record is F once every task is. */
  private async completeArray(parentId: string): Promise<void> {
    const parent = await this.store.tryGet(parentId);
    if (!parent || parent.state === 'F') return;
    const tasks = (await this.control.targets(parent)).filter((t) => t.id !== parentId);
    if (tasks.some((t) => t.state !== 'F')) return;
    const status = arrayExitStatus(tasks);
    await this.runner.finish(parent, { exitStatus: status, comment: `Job Array ended: ${tasks.length} tasks, Exit_status ${status}` }, 'array-end');
  }

  private async reviewDependent(childId: string): Promise<void> {
    const child = await this.store.tryGet(childId);
    if (!child?.depend || !(child.holds ?? '').includes('s')) return;
    const parents = new Map<string, JobRecord | undefined>();
    for (const d of child.depend) for (const id of d.jobIds) parents.set(id, await this.store.tryGet(id));
    const v = judgeDependencies(child.depend, parents);
    if (v.kind === 'met') {
      // Its parents' files are home now: the job runs in the headnode as it is now.
      const note = await freshSnapshotForRelease(this.o.driver, this.store, child.spec.headnode, await this.control.targets(child));
      if (note) await this.store.update(child.id, { comment: note });
      await this.control.release(child, 's');
    } else if (v.kind === 'never') {
      // PBS deletes a job whose dependency can no longer be met; its history says why.
      log.info('dependency can never be met; job deleted', { job: child.id, reason: v.reason });
      for (const t of await this.control.targets(child)) {
        if (t.array) continue;
        const r = await this.runner.finish(t, { comment: `deleted: dependency ${v.reason}` }, 'delete');
        if (r.ok) await this.queue.remove(t.id);
      }
      if (child.array) {
        await this.completeArray(child.id);
        await this.store.update(child.id, { comment: `deleted: dependency ${v.reason}` });
      }
    }
  }

  /**
   * After a crash: no job clone survives gcd (they die with it), so destroy leftovers; put
   * back into BullMQ any queued record it lost; release snapshots no job needs; empty the spool.
   */
  private async recover(): Promise<void> {
    const swept = await this.o.driver.sweep(new Set());
    if (swept.length) log.info('destroyed clones left by a previous gcd', { clones: swept });
    await this.recoverStates();
    const all = await this.store.list();
    const lost = [];
    for (const j of all) {
      if (j.array) continue;
      if (nextState('run', j.state) !== undefined && !(await this.queue.has(j.id))) lost.push(j);
    }
    if (lost.length) {
      log.info('re-queued jobs BullMQ did not have', { jobs: lost.map((j) => j.id) });
      await this.queue.add(lost);
    }
    const refs = await this.store.snapshotRefs();
    for (const snap of await this.o.driver.listSnapshots()) {
      if (!refs.get(snap)) await this.o.driver.releaseSnapshot(snap).catch(() => undefined);
    }
    const spooled = await readdir(this.spoolDir).catch(() => [] as string[]);
    for (const d of spooled) await rm(join(this.spoolDir, d), { recursive: true, force: true });
    await this.endedOutputs.clear();
    await this.store.pruneIndex();
  }

  /**
   * Jobs a dead gcd left in the middle: R (its clone died with it) goes back to Q if
   * rerunnable (-r y) or ends; E (the command had ended, its output was on its way) ends with
   * its recorded status, never reruns; F still marked `settling` is settled again.
   */
  private async recoverStates(): Promise<void> {
    for (const j of await this.store.list()) {
      if (j.array && j.state !== 'F') continue;
      // On a grid, a host recovers only its own runs; other hosts' are theirs (or the failure monitor's).
      if (j.state !== 'F' && !this.ranHere(j)) continue;
      if ((j.state === 'R' || j.state === 'S') && j.spec.rerunnable) {
        await this.store.transitionOnHost(j.id, j.execHost, 'requeue', {
          comment: 'requeued: gcd stopped while the job ran',
          cloneId: undefined,
          execHost: undefined,
        });
      } else if (j.state === 'R' || j.state === 'S') {
        await this.runner.finish(j, {
          exitStatus: EXIT.LOST,
          comment: 'gcd stopped while the job ran; not rerunnable (-r n), so not run again',
          endReason: 'lost',
        });
      } else if (j.state === 'E') {
        const status = j.exitStatus ?? EXIT.LOST;
        // Its output waits in the spool, which recover() empties after this: deliver it first.
        const note = await this.runner.deliverSpooled(j).catch((e: unknown) => `output not delivered: ${errorMessage(e)}`);
        const comment = `${j.comment ?? 'Job run'}; gcd stopped while its output was delivered${note ? `; ${note}` : ''}`;
        await this.runner.finish(j, { exitStatus: status, comment, endReason: 'exit' });
      } else if (j.state === 'F' && j.settling) {
        await this.settleLeft(j);
      }
    }
  }

  /**
   * Settle again a job F still marked `settling`: the gcd that wrote F died before its snapshot
   * reference, array and dependents were settled (at start for any host's; the failure monitor
   * for a dead node's). Each settle step is idempotent, so a second settler changes nothing.
   */
  async settleLeft(j: JobRecord): Promise<void> {
    if (j.state !== 'F' || !j.settling) return;
    // Listeners (accounting) may not have heard of this F before the crash: tell them again.
    const event = j.array ? 'array-end' : j.endReason === 'deleted' && j.startedAt === undefined ? 'delete' : 'finish';
    this.store.events.emit({ jobId: j.id, event, from: j.startedAt === undefined ? 'Q' : 'E', to: 'F', record: j, replay: true });
    await this.runner.settle(j);
  }

  /** Whether a job's run (R, S, E) belongs to this gcd: its host, or no host and this is the server. */
  private ranHere(j: JobRecord): boolean {
    const h = this.o.host;
    if (!h) return true;
    return j.execHost === undefined ? h.isServer : j.execHost === h.name;
  }

  /** Jobs this gcd runs now. */
  runningJobs(): string[] {
    return this.dispatcher?.runningIds() ?? [];
  }

  /** Stop or resume taking new jobs (gc node offline|drain|online); running jobs go on. */
  async setTaking(on: boolean): Promise<void> {
    await this.dispatcher?.setTaking(on);
  }

  /** This host was declared dead while alive: stop its runs (settled elsewhere) without touching their records. */
  dropRuns(): void {
    this.dispatcher?.dropAll();
  }

  /**
   * End a run lost with its host (src/grid/failure-monitor.ts): -> F and settled, only while
   * the record still names that host. Idempotent as JobRunner.finish is.
   */
  async finishLost(job: JobRecord, end: JobEnd): Promise<boolean> {
    return (await this.runner.finish(job, end)).ok;
  }

  async close(): Promise<void> {
    await this.recurring.close();
    await this.dispatcher?.close();
    await this.queue.close();
    await this.endedOutputs.clear();
  }
}
