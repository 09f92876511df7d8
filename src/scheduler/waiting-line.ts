import type { CapacityLimits } from './capacity.js';

/** A job sent back to BullMQ delayed because it could not start when it was looked at. */
export interface WaitingJob {
  id: string;
  /** Its BullMQ priority (lower starts first). */
  priority: number;
  ncpus: number;
  memMiB: number;
  /** Only capacity held it back (not a quota, a stopped queue or an array's %max). */
  forCapacity: boolean;
}

/**
 * The jobs the dispatcher has deferred, by BullMQ priority. A deferred job sits in BullMQ's
 * delayed set, where priority means nothing: whichever delay runs out first would take freed
 * capacity. The dispatcher asks this line before it admits a job, so a job with a better
 * priority that waits only for capacity, and fits now, goes first (docs/quotas.md, "Fair share").
 */
export class WaitingLine {
  private readonly jobs = new Map<string, WaitingJob>();

  defer(job: WaitingJob): void {
    this.jobs.set(job.id, job);
  }

  /** The job started, was removed, or is no longer queued. */
  forget(id: string): void {
    this.jobs.delete(id);
  }

  /**
   * The best-priority job waiting only for capacity that fits in what is free now and goes
   * before `priority` (undefined: before anything), other than `self`.
   */
  ahead(free: CapacityLimits, priority: number | undefined, self?: string): WaitingJob | undefined {
    let best: WaitingJob | undefined;
    for (const j of this.jobs.values()) {
      if (j.id === self || !j.forCapacity || j.ncpus > free.ncpus || j.memMiB > free.memMiB) continue;
      if (priority !== undefined && j.priority >= priority) continue;
      if (!best || j.priority < best.priority) best = j;
    }
    return best;
  }

  get size(): number {
    return this.jobs.size;
  }
}
