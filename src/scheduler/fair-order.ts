/**
 * Fair share on plain BullMQ, by start-time fair queuing: each user's jobs get virtual start
 * tags spaced 1/share apart, and a job's BullMQ priority (within its PBS priority band) is how
 * far its tag is ahead of the virtual time of the last dispatched job. A user who floods the
 * queue pushes only their own jobs back; a user arriving later starts at the current virtual
 * time, so one 10,000-task array cannot starve anyone, and under load users are served in
 * proportion to their shares. O(1) per job, no re-prioritising of queued jobs.
 */
export const FAIR_SLOTS = 1023;

export class FairOrder {
  private vnow = 0;
  private readonly lastFinish = new Map<string, number>();

  constructor(private readonly shareOf: (user: string, group: string) => number) {}

  /** Tag a new job of `user`; returns its virtual start and its slot (0..FAIR_SLOTS-1) in its band. */
  tag(user: string, group: string): { vstart: number; slot: number } {
    const share = Math.max(1e-6, this.shareOf(user, group));
    const vstart = Math.max(this.vnow, this.lastFinish.get(user) ?? 0);
    this.lastFinish.set(user, vstart + 1 / share);
    return { vstart, slot: Math.min(FAIR_SLOTS - 1, Math.floor(vstart - this.vnow)) };
  }

  /** A job started: virtual time moves to its tag. */
  dispatched(vstart: number): void {
    if (vstart > this.vnow) this.vnow = vstart;
    // Users far behind the clock hold no credit: idle time earns nothing.
    if (this.lastFinish.size > 10_000) {
      for (const [u, f] of this.lastFinish) if (f <= this.vnow) this.lastFinish.delete(u);
    }
  }
}

/** BullMQ priority (lower first, 1..2^21-1) from PBS priority (-1024..1023, higher first) and a fair slot. */
export function bullPriorityOf(pbsPriority: number, slot: number): number {
  return (1023 - pbsPriority) * (FAIR_SLOTS + 1) + slot + 1;
}
