import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import { emptyQuotaConfig } from '../config/quotas.js';
import { FairOrder } from '../scheduler/fair-order.js';
import type { FairTagger } from '../scheduler/fair-redis.js';
import type { JobRecord } from './job.js';
import { QUEUE_NAME, type Keys } from './keys.js';

/** What a BullMQ job carries: enough for any BullMQ client to see what it is. */
export interface RunQueueData {
  id: string;
  user: string;
  headnode: string;
  name: string;
  argv: string[];
  /** Fair-share virtual start tag (see FairOrder). */
  vstart: number;
}

/** The BullMQ queue jobs wait in until the dispatcher takes them. */
export class RunQueue {
  readonly queue: Queue<RunQueueData>;
  constructor(
    connection: ConnectionOptions,
    keys: Keys,
    /** Orders jobs between users by their shares; every job gets a priority, so none jumps the line. */
    readonly fair: FairTagger = new FairOrder(() => emptyQuotaConfig()),
  ) {
    this.queue = new Queue<RunQueueData>(QUEUE_NAME, { connection, prefix: keys.bullPrefix });
  }

  private async entry(r: JobRecord, now: number): Promise<{ name: string; data: RunQueueData; opts: JobsOptions }> {
    const delayMs = r.state === 'W' && r.beginAt !== undefined ? r.beginAt - now : 0;
    const { spec } = r;
    const { vstart, bullPriority } = await this.fair.tag({
      user: spec.user,
      group: spec.group,
      queue: spec.queue,
      priority: spec.priority,
      ncpus: spec.resources.ncpus,
    });
    return {
      name: r.spec.name,
      data: { id: r.id, user: r.spec.user, headnode: r.spec.headnode, name: r.spec.name, argv: r.spec.argv, vstart },
      opts: {
        jobId: r.id, // BullMQ refuses integer ids; the PBS id is unique and readable
        priority: bullPriority,
        delay: delayMs > 0 ? delayMs : undefined,
        removeOnComplete: true,
        removeOnFail: true,
        attempts: 1,
      },
    };
  }

  /** Hand jobs to BullMQ; a W job is delayed until its start time. */
  async add(records: JobRecord[]): Promise<void> {
    if (records.length === 0) return;
    const now = Date.now();
    const entries = [];
    for (const r of records) entries.push(await this.entry(r, now));
    await this.queue.addBulk(entries);
  }

  /** Remove a job that is waiting or delayed. False if BullMQ holds it active (locked). */
  async remove(id: string): Promise<boolean> {
    const j = await this.queue.getJob(id);
    if (!j) return true;
    return (await this.queue.remove(id)) === 1;
  }

  async has(id: string): Promise<boolean> {
    return (await this.queue.getJob(id)) !== undefined;
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
