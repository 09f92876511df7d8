import type { Redis } from 'ioredis';
import type { JobRecord } from '../queue/job.js';
import type { Keys } from '../queue/keys.js';
import type { GridView } from './grid-view.js';

/**
 * Placement preference: a host that does not hold a job's snapshot in its cache leaves the job,
 * for a short while, to an up host that does and has room for it, so that array tasks and
 * repeated submissions from one headnode fan out without fetching the snapshot again. Bounded:
 * a job is deferred for at most `boundMs` from its first deferral (a Redis key with a TTL, so
 * every host counts from the same moment); after that any host with room takes it.
 */
export class Placement {
  constructor(
    private readonly o: {
      redis: Redis;
      keys: Keys;
      view: GridView;
      /** GC_PLACEMENT_DEFER_MS; 0 turns the preference off. */
      boundMs: number;
    },
  ) {}

  /** Why `thisNode` should leave the job to another host now, or undefined to take it. */
  async shouldDefer(job: JobRecord, thisNode: string): Promise<string | undefined> {
    const snap = job.snapshotId;
    if (this.o.boundMs <= 0 || !snap) return undefined;
    const nodes = this.o.view.all();
    if (nodes.find((n) => n.name === thisNode)?.cachedSnapshots.includes(snap)) return undefined;
    const { ncpus, memMiB } = job.spec.resources;
    const holder = nodes.find(
      (n) =>
        n.name !== thisNode &&
        n.alive &&
        n.state === 'up' &&
        n.cachedSnapshots.includes(snap) &&
        n.ncpus - n.usedNcpus >= ncpus &&
        n.memMiB - n.usedMemMiB >= memMiB,
    );
    if (!holder) return undefined;
    const key = this.o.keys.placementDefer(job.id);
    const now = Date.now();
    // The first deferral's time, shared by every host; the key outlives the bound, then goes.
    await this.o.redis.set(key, String(now), 'PX', this.o.boundMs * 4, 'NX');
    const first = Number(await this.o.redis.get(key)) || now;
    if (now - first >= this.o.boundMs) return undefined;
    return `Placement: node ${holder.name} already caches snapshot ${snap}`;
  }
}
