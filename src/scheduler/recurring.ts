import { Queue, Worker, type ConnectionOptions } from 'bullmq';
import { CronExpressionParser } from 'cron-parser';
import type { Redis } from 'ioredis';
import { NotFoundError, UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { IncarnationError } from '../headnodes/incarnation.js';
import type { JobSpec } from '../queue/job.js';
import type { Keys } from '../queue/keys.js';
import { mayActOn, type Actor } from './actor.js';

/** A recurring job (`gcqsub --cron PATTERN ...`): each firing submits with a fresh snapshot. */
export interface RecurringJob {
  id: string;
  pattern: string;
  spec: JobSpec;
  paused: boolean;
  createdAt: number;
  /** The job id of the last firing, and when. */
  lastJob?: string;
  lastAt?: number;
  /** Why the last firing failed (headnode stopped, quota...). */
  lastError?: string;
  /** The next firing, if not paused. */
  nextAt?: number;
}

const CRON_QUEUE = 'cron';

/**
 * Recurring jobs on BullMQ's job schedulers (cron patterns through cron-parser). The
 * definition lives in Redis (`<prefix>:cron:<id>`); BullMQ fires `{id}` on the cron queue; a
 * worker here submits the definition's spec as a new job, which snapshots the headnode as it
 * is at that moment. Pause removes the BullMQ scheduler and keeps the definition.
 */
export class RecurringJobs {
  private readonly queue: Queue<{ id: string }>;
  private worker: Worker<{ id: string }> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly connection: ConnectionOptions,
    private readonly keys: Keys,
    private readonly serverName: string,
    private readonly submit: (spec: JobSpec) => Promise<string>,
    /** The headnode's incarnation now: a definition fires only into the life it was made in. */
    private readonly incarnationOf: (headnode: string) => Promise<string | undefined> = async () => undefined,
  ) {
    this.queue = new Queue(CRON_QUEUE, { connection, prefix: keys.bullPrefix });
  }

  private key(id: string): string {
    return `${this.keys.bullPrefix.replace(/:bull$/, '')}:cron:${id}`;
  }

  private indexKey(): string {
    return `${this.keys.bullPrefix.replace(/:bull$/, '')}:crons`;
  }

  start(): void {
    this.worker = new Worker<{ id: string }>(CRON_QUEUE, async (job) => this.fire(job.data.id), {
      connection: this.connection,
      prefix: this.keys.bullPrefix,
      concurrency: 4,
    });
    this.worker.on('error', (e) => log.error('cron worker error', { error: errorMessage(e) }));
  }

  /** Validate a pattern: five fields, and it must fire at least once in the next 5 years. */
  static nextFiring(pattern: string, from = new Date()): number {
    let next: Date;
    try {
      next = CronExpressionParser.parse(pattern, { currentDate: from }).next().toDate();
    } catch (e) {
      throw new UsageError(`--cron "${pattern}": ${errorMessage(e)}`);
    }
    if (next.getTime() - from.getTime() > 5 * 365 * 86400_000) throw new UsageError(`--cron "${pattern}" never fires`);
    return next.getTime();
  }

  async create(pattern: string, spec: JobSpec): Promise<RecurringJob> {
    const nextAt = RecurringJobs.nextFiring(pattern);
    if (spec.headnodeIncarnation === undefined) {
      const incarnation = await this.incarnationOf(spec.headnode);
      if (incarnation !== undefined) spec = { ...spec, headnodeIncarnation: incarnation };
    }
    const n = await this.redis.incr(`${this.indexKey()}:seq`);
    const id = `cron${n}.${this.serverName}`;
    const rec: RecurringJob = { id, pattern, spec, paused: false, createdAt: Date.now(), nextAt };
    await this.redis.multi().set(this.key(id), JSON.stringify(rec)).sadd(this.indexKey(), id).exec();
    await this.queue.upsertJobScheduler(id, { pattern }, { name: spec.name, data: { id } });
    return rec;
  }

  async list(actor: Actor): Promise<RecurringJob[]> {
    const ids = (await this.redis.smembers(this.indexKey())).sort();
    const out: RecurringJob[] = [];
    for (const id of ids) {
      const r = await this.load(id);
      if (r && mayActOn(actor, r.spec.user)) out.push(r.paused ? r : { ...r, nextAt: RecurringJobs.nextFiring(r.pattern) });
    }
    return out;
  }

  private async load(id: string): Promise<RecurringJob | undefined> {
    const text = await this.redis.get(this.key(id));
    return text ? (JSON.parse(text) as RecurringJob) : undefined;
  }

  private async mine(actor: Actor, id: string): Promise<RecurringJob> {
    const r = await this.load(id);
    if (!r || !mayActOn(actor, r.spec.user)) throw new NotFoundError(`unknown recurring job ${id}`);
    return r;
  }

  async pause(actor: Actor, id: string): Promise<void> {
    const r = await this.mine(actor, id);
    await this.queue.removeJobScheduler(id);
    await this.redis.set(this.key(id), JSON.stringify({ ...r, paused: true }));
  }

  async resume(actor: Actor, id: string): Promise<void> {
    const r = await this.mine(actor, id);
    await this.redis.set(this.key(id), JSON.stringify({ ...r, paused: false }));
    await this.queue.upsertJobScheduler(id, { pattern: r.pattern }, { name: r.spec.name, data: { id } });
  }

  async remove(actor: Actor, id: string): Promise<void> {
    await this.mine(actor, id);
    await this.queue.removeJobScheduler(id);
    await this.redis.multi().del(this.key(id)).srem(this.indexKey(), id).exec();
  }

  private async fire(id: string): Promise<void> {
    const r = await this.load(id);
    if (!r || r.paused) return;
    try {
      const jobId = await this.submit(r.spec);
      await this.redis.set(this.key(id), JSON.stringify({ ...r, lastJob: jobId, lastAt: Date.now(), lastError: undefined }));
    } catch (e) {
      if (e instanceof IncarnationError) {
        // The headnode was destroyed and its name taken again: never fire as the new owner.
        // Paused (not deleted), so its owner sees why with gcqstat --cron.
        log.warn('recurring job paused: its headnode was re-created', { id, error: e.message });
        await this.queue.removeJobScheduler(id).catch(() => undefined);
        await this.redis.set(this.key(id), JSON.stringify({ ...r, paused: true, lastAt: Date.now(), lastError: `not fired, paused: ${e.message}` }));
        return;
      }
      // A stopped headnode or a quota: this firing is skipped, the next one tries again.
      log.warn('recurring job firing failed', { id, error: errorMessage(e) });
      await this.redis.set(this.key(id), JSON.stringify({ ...r, lastAt: Date.now(), lastError: errorMessage(e) }));
    }
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
  }
}
