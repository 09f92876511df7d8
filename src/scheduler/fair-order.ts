import type { QuotaConfig } from '../config/quotas.js';

/**
 * The order in which queued jobs start, as one BullMQ priority per job (docs/quotas.md,
 * "Fair share"). From the most significant:
 * 1. queue priority tier: jobs of a queue with a higher `priority` go before any job of a
 *    lower one;
 * 2. fair share, by start-time fair queuing: each user's jobs get virtual start tags spaced
 *    ncpus/share apart, and the job's slot is how far its tag is ahead of the virtual time of
 *    the last dispatched job. A user who floods the queue pushes only their own jobs back; a
 *    user arriving later starts at the current virtual time (idle time earns no credit), so
 *    one 10,000-task array cannot starve anyone, and users get cpus in proportion to shares.
 * 3. job priority (-p), higher first, as in PBS, among jobs of one fair-share turn: -p orders
 *    a user's own jobs and cannot jump other users' turns (issue 13 item 11).
 * O(1) per job, no re-prioritising of queued jobs: a job keeps the priority it was queued
 * with (a changed queue priority or share applies to jobs queued from then on).
 *
 * Shares: `users.<u>.shares`, else the group's `shares` split equally among its members who
 * have jobs ahead of the virtual time and no shares of their own, else `defaults.shares`, else 1.
 */

/** Largest BullMQ priority (BullMQ: 2^21 - 1; lower runs first). */
export const BULL_PRIORITY_MAX = 2 ** 21 - 1;
/** Job priorities -1024..1023. */
const JOB_BANDS = 2048;
/** Queue priority tiers beyond this many distinct values share the lowest one. */
export const MAX_TIERS = 64;

/** What FairOrder needs to know of a job. */
export interface FairJob {
  user: string;
  group: string;
  queue: string;
  /** PBS -p, -1024..1023. */
  priority: number;
  ncpus: number;
}

interface UserTag {
  /** Virtual finish of the user's last tagged job. */
  finish: number;
  /** Set when the user's share is a split of this group's shares. */
  splitGroup?: string;
}

export class FairOrder {
  private vnow = 0;
  private readonly users = new Map<string, UserTag>();

  constructor(private readonly config: () => QuotaConfig) {}

  /** Tag a new job: its virtual start (hand back to dispatched()) and its BullMQ priority. */
  tag(job: FairJob): { vstart: number; bullPriority: number } {
    const cfg = this.config();
    const share = Math.max(1e-6, this.shareOf(cfg, job.user, job.group));
    const prev = this.users.get(job.user);
    const vstart = Math.max(this.vnow, prev?.finish ?? 0);
    const base = baseShare(cfg, job.user, job.group);
    const tag: UserTag = { finish: vstart + Math.max(1, job.ncpus) / share };
    if (base.split) tag.splitGroup = job.group;
    this.users.set(job.user, tag);

    return { vstart, bullPriority: bullPriorityOf(cfg, job, vstart, this.vnow) };
  }

  /** A job started: virtual time moves to its tag. */
  dispatched(vstart: number): void {
    if (vstart > this.vnow) this.vnow = vstart;
    // Users far behind the clock hold no credit: idle time earns nothing.
    if (this.users.size > 10_000) {
      for (const [u, t] of this.users) if (t.finish <= this.vnow) this.users.delete(u);
    }
  }

  /** A user's weight now: a group's shares are split among its members with jobs ahead. */
  shareOf(cfg: QuotaConfig, user: string, group: string): number {
    const b = baseShare(cfg, user, group);
    if (!b.split) return b.share;
    let members = 1; // the user asking
    for (const [u, t] of this.users) if (u !== user && t.splitGroup === group && t.finish > this.vnow) members++;
    return b.share / members;
  }
}

/** The BullMQ priority of a job tagged `vstart` when the clock is at `vnow`: tier, turn, then -p. */
export function bullPriorityOf(cfg: QuotaConfig, job: Pick<FairJob, 'queue' | 'priority'>, vstart: number, vnow: number): number {
  const tiers = queueTiers(cfg);
  const slots = Math.floor(BULL_PRIORITY_MAX / (tiers.length * JOB_BANDS));
  const prio = cfg.queues.get(job.queue)?.priority ?? 0;
  const tier = Math.min(tiers.length - 1, tiers.indexOf(prio));
  const band = 1023 - Math.max(-1024, Math.min(1023, job.priority));
  // A tier's turns start half-way into its range: a tier a reload adds above (whose range is
  // narrower, so starts lower) goes before jobs waiting since before the reload, as documented.
  const half = Math.floor(slots / 2);
  const slot = Math.min(half - 1, Math.max(0, Math.floor(vstart - vnow)));
  return (tier * slots + half + slot) * JOB_BANDS + band + 1;
}

/** A user's weight before any split, and whether it is a share of their group's. */
export function baseShare(cfg: QuotaConfig, user: string, group: string): { share: number; split: boolean } {
  const own = cfg.users.get(user)?.shares;
  if (own !== undefined) return { share: own, split: false };
  const g = cfg.groups.get(group)?.shares;
  if (g !== undefined) return { share: g, split: true };
  return { share: cfg.defaults.shares ?? 1, split: false };
}

/** Distinct queue priorities, highest first, always with 0 (unknown queues), at most MAX_TIERS. */
function queueTiers(cfg: QuotaConfig): number[] {
  const set = new Set<number>([0]);
  for (const q of cfg.queues.values()) set.add(q.priority);
  return [...set].sort((a, b) => b - a).slice(0, MAX_TIERS);
}
