import type { Driver, SnapshotInfo } from '../drivers/driver.js';
import { UsageError } from '../errors.js';
import type { JobRecord, JobSpec, JobState } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import type { RunQueue } from '../queue/run-queue.js';
import { neverFits, type CapacityLimits } from './capacity.js';

export interface SubmitOptions {
  /** -h: keep the job held (state H) until gcqrls. */
  hold?: boolean;
  /** -a: do not start before this time (state W until then). */
  beginAt?: number;
}

/**
 * Accepts jobs: snapshot the headnode now (the job runs in the state the headnode had at
 * gcqsub time), write the records, then hand them to BullMQ. One snapshot serves every job
 * of one submission. If anything fails before BullMQ has the jobs, nothing is left behind.
 */
export class Submitter {
  constructor(
    private readonly driver: Driver,
    private readonly store: JobStore,
    private readonly queue: RunQueue,
    private readonly capacity: () => CapacityLimits,
  ) {}

  async submit(specs: JobSpec[], opts: SubmitOptions = {}): Promise<JobRecord[]> {
    if (specs.length === 0) return [];
    const byHeadnode = new Map<string, SnapshotInfo>();
    try {
      for (const s of specs) {
        if (!byHeadnode.has(s.headnode)) byHeadnode.set(s.headnode, await this.driver.snapshot(s.headnode));
      }
      const first = await this.store.nextSeqs(specs.length);
      const now = Date.now();
      const deferred = opts.beginAt !== undefined && opts.beginAt > now;
      const state: JobState = opts.hold ? 'H' : deferred ? 'W' : 'Q';
      const records = specs.map((spec, i): JobRecord => {
        const snap = byHeadnode.get(spec.headnode)!;
        const cloneMem = snap.memMiB ?? spec.resources.memMiB;
        if (spec.resources.memMiB > 0 && snap.memMiB !== undefined && spec.resources.memMiB > snap.memMiB) {
          throw new UsageError(
            `-l mem=${spec.resources.memMiB}MiB is more than headnode ${spec.headnode}'s ${snap.memMiB} MiB: a clone has its headnode's RAM; give the headnode more memory (gc headnode create --mem) and submit again`,
          );
        }
        const resources = { ncpus: spec.resources.ncpus, memMiB: cloneMem };
        const never = neverFits(this.capacity(), resources.ncpus, resources.memMiB);
        if (never) throw new UsageError(never);
        return {
          id: this.store.idFor(first + i),
          seq: first + i,
          spec: { ...spec, resources },
          state,
          queuedAt: now,
          runCount: 0,
          snapshotId: snap.id,
          ...(opts.hold ? { comment: 'Held: submitted with -h' } : deferred ? { comment: `BeginTime: not before ${new Date(opts.beginAt!).toISOString()}` } : {}),
        };
      });
      await this.store.create(records);
      if (!opts.hold) await this.queue.add(records, deferred ? opts.beginAt! - now : 0);
      return records;
    } catch (e) {
      // Snapshots no record points at would never be released: release them now.
      const refs = await this.store.snapshotRefs().catch(() => new Map<string, number>());
      for (const snap of byHeadnode.values()) {
        if (!refs.get(snap.id)) await this.driver.releaseSnapshot(snap.id).catch(() => undefined);
      }
      throw e;
    }
  }
}
