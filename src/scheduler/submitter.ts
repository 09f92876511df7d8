import type { Driver, SnapshotInfo } from '../drivers/driver.js';
import { KeyedLock } from '../vm/keyed-lock.js';
import { UsageError } from '../errors.js';
import { incarnationMismatch } from '../headnodes/incarnation.js';
import type { JobDependency, JobRecord, JobSpec, JobState } from '../queue/job.js';
import type { JobStore, QueuedCheck } from '../queue/job-store.js';
import { crashPoint } from '../crash-point.js';
import { neverFits, resolveAssignment, type CapacityLimits } from './capacity.js';
import { nextState } from '../queue/job-states.js';
import { describeDependencies, judgeDependencies } from './dependencies.js';

export interface SubmitOptions {
  /** -h: keep the job held (state H) until gcqrls. */
  hold?: boolean;
  /** -a: do not start before this time (state W until then). */
  beginAt?: number;
  /** -W depend: full job ids. */
  depend?: JobDependency[];
  /** -J / -t: one record per task plus the array's own record; one snapshot for all. */
  array?: { indices: number[]; max?: number };
  /** max_queued checks the new records must pass, in the same atomic step that writes them. */
  checks?: (records: JobRecord[]) => QueuedCheck[];
}

/** What the caller must do after the records exist: enqueue these, register those dependents. */
export interface Submitted {
  records: JobRecord[];
  /** Records BullMQ must get now (state Q or W). */
  runnable: JobRecord[];
  /** Jobs that wait on others: child id -> parents still pending. */
  waiting: Array<{ child: string; on: string[] }>;
  /** The snapshots taken (one per headnode): their pause is measured by the metrics. */
  snapshots: SnapshotInfo[];
}

/** The state a new job starts in and why, in PBS and Slurm terms. */
function initialState(opts: SubmitOptions, now: number, dependsOn: string[]): { state: JobState; holds?: string; comment?: string } {
  const holds = (opts.hold ? 'u' : '') + (dependsOn.length ? 's' : '');
  if (holds) {
    const why = opts.hold ? 'Held: submitted with -h' : `Dependency: waiting for ${describeDependencies(opts.depend ?? [])}`;
    return { state: 'H', holds, comment: why };
  }
  if (opts.beginAt !== undefined && opts.beginAt > now) return { state: 'W', comment: `BeginTime: not before ${new Date(opts.beginAt).toISOString()}` };
  return { state: 'Q' };
}

/**
 * Accepts jobs: snapshot the headnode now (the job runs in the state the headnode had at
 * gcqsub time), then write the records. One snapshot serves every job of one submission,
 * array tasks included. If anything fails before the records exist, nothing is left behind.
 */
/** `fn` under every key of `keys` at once, taken in sorted order (two callers cannot deadlock). */
function underAll<T>(lock: KeyedLock, keys: readonly string[], fn: () => Promise<T>): Promise<T> {
  const sorted = [...new Set(keys)].sort();
  const step = (i: number): Promise<T> => (i === sorted.length ? fn() : lock.run(sorted[i], () => step(i + 1)));
  return step(0);
}

export class Submitter {
  private readonly userLock = new KeyedLock();

  constructor(
    private readonly driver: Driver,
    private readonly store: JobStore,
    private readonly capacity: () => CapacityLimits,
    /** Checks on the snapshots just taken (byte quotas); a throw refuses the submission and drops them. */
    private readonly afterSnapshots?: (specs: JobSpec[], snapshots: SnapshotInfo[]) => Promise<void>,
  ) {}

  private async checkDependencies(depend: JobDependency[] | undefined): Promise<string[]> {
    if (!depend?.length) return [];
    const parents = new Map<string, JobRecord | undefined>();
    for (const d of depend) {
      for (const id of d.jobIds) {
        const p = await this.store.tryGet(id);
        if (!p) throw new UsageError(`-W depend: unknown job ${id}`);
        parents.set(id, p);
      }
    }
    const v = judgeDependencies(depend, parents);
    if (v.kind === 'never') throw new UsageError(`-W depend: ${v.reason}`);
    return v.kind === 'pending' ? v.on : [];
  }

  async submit(specs: JobSpec[], opts: SubmitOptions = {}): Promise<Submitted> {
    if (specs.length === 0) return { records: [], runnable: [], waiting: [], snapshots: [] };
    if (opts.array && specs.length !== 1) throw new UsageError('an array job is one submission of one spec');
    for (const s of specs) {
      const never = neverFits(this.capacity(), s.resources.ncpus, s.resources.memMiB);
      if (never) throw new UsageError(never);
    }
    const dependsOn = await this.checkDependencies(opts.depend);
    const byHeadnode = new Map<string, SnapshotInfo>();
    try {
      for (const s of specs) {
        if (!byHeadnode.has(s.headnode)) byHeadnode.set(s.headnode, await this.driver.snapshot(s.headnode));
        // A recurring job (or a resubmission) made in an earlier life of this headnode name.
        const other = incarnationMismatch(s.headnode, s.headnodeIncarnation, byHeadnode.get(s.headnode)!.incarnation);
        if (other) throw other;
      }
      crashPoint('submit:after-snapshot');
      // The byte-quota check and the write are one step per user: two submissions of one user
      // cannot both pass snapshot_bytes on counts that hold neither (snapshots are slow: outside).
      return await underAll(
        this.userLock,
        specs.map((s) => s.user),
        () => this.checkAndCreate(specs, opts, byHeadnode, dependsOn),
      );
    } catch (e) {
      // Snapshots no record points at would never be released: release them now.
      const refs = await this.store.snapshotRefs().catch(() => new Map<string, number>());
      for (const snap of byHeadnode.values()) {
        if (!refs.get(snap.id)) await this.driver.releaseSnapshot(snap.id).catch(() => undefined);
      }
      throw e;
    }
  }

  private async checkAndCreate(specs: JobSpec[], opts: SubmitOptions, byHeadnode: Map<string, SnapshotInfo>, dependsOn: string[]): Promise<Submitted> {
    await this.afterSnapshots?.(specs, [...byHeadnode.values()]);
    const first = await this.store.nextSeqs(specs.length);
    const now = Date.now();
    const init = initialState(opts, now, dependsOn);
    const records: JobRecord[] = [];
    const runnable: JobRecord[] = [];
    const waiting: Submitted['waiting'] = [];
    specs.forEach((spec, i) => {
      const snap = byHeadnode.get(spec.headnode)!;
      const resolved = this.resolveSpec(spec, snap);
      const seq = first + i;
      const common = {
        seq,
        spec: resolved,
        state: init.state,
        queuedAt: now,
        runCount: 0,
        ...(init.holds ? { holds: init.holds } : {}),
        ...(init.comment ? { comment: init.comment } : {}),
        ...(opts.beginAt !== undefined ? { beginAt: opts.beginAt } : {}),
        ...(opts.depend?.length ? { depend: opts.depend } : {}),
      };
      if (!opts.array) {
        const r: JobRecord = { id: this.store.idFor(seq), snapshotId: snap.id, ...common };
        records.push(r);
        if (nextState('run', init.state)) runnable.push(r);
        if (dependsOn.length) waiting.push({ child: r.id, on: dependsOn });
        return;
      }
      const parent: JobRecord = { id: `${seq}[].${this.store.serverName}`, ...common, array: opts.array };
      records.push(parent);
      if (dependsOn.length) waiting.push({ child: parent.id, on: dependsOn });
      for (const index of opts.array.indices) {
        const t: JobRecord = { ...common, id: `${seq}[${index}].${this.store.serverName}`, snapshotId: snap.id, arrayParent: parent.id, arrayIndex: index };
        delete t.depend; // the array's record carries the dependency for all its tasks
        records.push(t);
        if (nextState('run', init.state)) runnable.push(t);
      }
    });
    await this.store.create(records, opts.checks?.(records) ?? []);
    return { records, runnable, waiting, snapshots: [...byHeadnode.values()] };
  }

  /**
   * What the job reserves (resources: as asked, and at least the headnode's RAM, which a
   * clone inherits) and what its clone really gets (assigned: memory and vCPUs as asked, up to
   * the snapshot's maxmem and CPU slots; memory above its RAM is hot-plugged). Only a request
   * above the host's capacity is refused.
   */
  private resolveSpec(spec: JobSpec, snap: SnapshotInfo): JobSpec {
    const pinned = snap.incarnation !== undefined ? { headnodeIncarnation: snap.incarnation } : {};
    return { ...spec, ...pinned, ...resolveAssignment(spec.resources, snap, this.capacity()) };
  }
}
