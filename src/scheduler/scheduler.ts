import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConnectionOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Driver } from '../drivers/driver.js';
import { PermissionError, StateError, UnknownJobError } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord, JobSpec } from '../queue/job.js';
import { JobStore } from '../queue/job-store.js';
import type { Keys } from '../queue/keys.js';
import { RunQueue } from '../queue/run-queue.js';
import { mayActOn, type Actor } from './actor.js';
import { Capacity, type CapacityLimits } from './capacity.js';
import { Dispatcher } from './dispatcher.js';
import { JobRunner } from './runner.js';
import { Submitter, type SubmitOptions } from './submitter.js';

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
  historyTtlSec?: number;
  retryDelayMs?: number;
  /** false: accept and list jobs but run none (a submit-only process, or a benchmark). */
  dispatch?: boolean;
}

export interface ListFilter {
  includeFinished?: boolean;
  user?: string;
}

/**
 * The job pipeline as one object: submit, look, delete, wait; it owns the dispatcher that
 * runs jobs. gcd's API and the library entry both call this; nothing else touches the queue.
 */
export class Scheduler {
  readonly store: JobStore;
  readonly queue: RunQueue;
  readonly capacity: Capacity;
  private readonly submitter: Submitter;
  private readonly runner: JobRunner;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly spoolDir: string;

  constructor(private readonly o: SchedulerOptions) {
    this.store = new JobStore(o.redis, o.keys, o.serverName);
    this.queue = new RunQueue(o.connection, o.keys);
    this.capacity = new Capacity(o.capacity);
    this.spoolDir = join(o.stateDir, 'spool');
    this.submitter = new Submitter(o.driver, this.store, this.queue, () => this.capacity.limits);
    this.runner = new JobRunner({
      driver: o.driver,
      store: this.store,
      spoolDir: this.spoolDir,
      killDelayMs: o.killDelayMs ?? 10_000,
      historyTtlSec: o.historyTtlSec ?? 7 * 24 * 3600,
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
      });
    }
  }

  /** Reconcile after a crash, then start taking jobs. */
  async start(): Promise<void> {
    await this.recover();
    this.dispatcher?.start();
  }

  submit(specs: JobSpec[], opts?: SubmitOptions): Promise<JobRecord[]> {
    return this.submitter.submit(specs, opts);
  }

  async list(actor: Actor, f: ListFilter = {}): Promise<JobRecord[]> {
    const all = await this.store.list();
    return all.filter(
      (j) => mayActOn(actor, j.spec.user) && (f.includeFinished || j.state !== 'F') && (!f.user || j.spec.user === f.user),
    );
  }

  async get(actor: Actor, idText: string): Promise<JobRecord> {
    const id = this.store.parseId(idText);
    const j = await this.store.get(id);
    // Another user's job is reported unknown, so ids do not leak across users.
    if (!mayActOn(actor, j.spec.user)) throw new UnknownJobError(idText);
    return j;
  }

  /** gcqdel: remove a waiting job; stop a running one (its clone is destroyed). */
  async delete(actor: Actor, idText: string): Promise<JobRecord> {
    const j = await this.get(actor, idText);
    if (j.state === 'F' || j.state === 'E') throw new StateError(`Request invalid for state of job ${j.id} (${j.state})`);
    const t = await this.store.transition(j.id, ['Q', 'H', 'W'], { state: 'F', endedAt: Date.now(), comment: 'deleted by gcqdel before it ran' });
    if (t.ok) {
      await this.queue.remove(j.id);
      await this.runner.finish(j, { exitStatus: -1, comment: 'deleted by gcqdel before it ran' }).catch(() => undefined);
      // finish() sets exitStatus; PBS shows none for a job that never ran.
      await this.store.update(j.id, { exitStatus: undefined });
      return this.store.get(j.id);
    }
    if (t.state === 'R' && this.dispatcher?.cancel(j.id, 'deleted')) return this.store.get(j.id);
    if (!mayActOn(actor, j.spec.user)) throw new PermissionError(`not your job: ${j.id}`);
    throw new StateError(`job ${j.id} is ${t.state ?? 'gone'} and cannot be deleted now`);
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

  /**
   * After a crash: no job clone survives gcd (they die with it), so destroy leftovers; put
   * back into BullMQ any queued record it lost; release snapshots no job needs; empty the spool.
   */
  private async recover(): Promise<void> {
    const swept = await this.o.driver.sweep(new Set());
    if (swept.length) log.info('destroyed clones left by a previous gcd', { clones: swept });
    const all = await this.store.list();
    const lost = [];
    for (const j of all) {
      if (['Q', 'W', 'R'].includes(j.state) && !(await this.queue.has(j.id))) lost.push(j);
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
    await this.store.pruneIndex();
  }

  async close(): Promise<void> {
    await this.dispatcher?.close();
    await this.queue.close();
  }
}
