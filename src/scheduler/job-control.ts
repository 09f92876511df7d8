import { StateError, UsageError } from '../errors.js';
import type { JobRecord, JobSpec, JobState } from '../queue/job.js';
import type { FieldPatch, JobStore } from '../queue/job-store.js';
import { nextState, type JobEvent } from '../queue/job-states.js';
import type { RunQueue } from '../queue/run-queue.js';

/** What gcqalter may change on a job that is not running. */
export interface JobChanges {
  name?: string;
  priority?: number;
  walltimeSec?: number;
  /** 'u' to hold, '' to release a user hold. */
  hold?: 'u' | '';
  /** New start time (epoch ms); 0 clears it. */
  beginAt?: number;
  /** Array throttle (%max); 0 removes it. */
  throttle?: number;
}

/**
 * Holds, releases and alterations of jobs that have not started. A job leaves BullMQ while
 * held and comes back when its last hold goes; every change is compare-and-set on the
 * record, so a job the dispatcher has just taken is never altered behind its back.
 */
export class JobControl {
  constructor(
    private readonly store: JobStore,
    private readonly queue: RunQueue,
  ) {}

  /** The records an operation on `rec` acts on: an array's tasks, or the job itself. */
  async targets(rec: JobRecord): Promise<JobRecord[]> {
    if (!rec.array) return [rec];
    const seq = rec.seq;
    const out: JobRecord[] = [rec];
    for (const i of rec.array.indices) {
      const t = await this.store.tryGet(`${seq}[${i}].${this.store.serverName}`);
      if (t) out.push(t);
    }
    return out;
  }

  async hold(rec: JobRecord, type: 'u' | 's'): Promise<number> {
    let n = 0;
    for (const t of await this.targets(rec)) {
      if (nextState('hold', t.state) === undefined) continue;
      const holds = [...new Set((t.holds ?? '') + type)].sort().join('');
      const patch: FieldPatch = { holds, comment: type === 'u' ? 'Held: gcqhold' : t.comment };
      const r = await this.store.transition(t.id, 'hold', patch);
      if (!r.ok) continue;
      if (!t.array) await this.queue.remove(t.id);
      n++;
    }
    if (n === 0) throw new StateError(`job ${rec.id} is ${rec.state}: only jobs that have not started can be held`);
    return n;
  }

  /** Drop a hold; jobs with no hold left go back to BullMQ (W if their start time is ahead). */
  async release(rec: JobRecord, type: 'u' | 's'): Promise<number> {
    let n = 0;
    const now = Date.now();
    for (const t of await this.targets(rec)) {
      if (t.state !== 'H' || !(t.holds ?? '').includes(type)) continue;
      const holds = (t.holds ?? '').replace(type, '');
      const waitBegin = t.beginAt !== undefined && t.beginAt > now;
      const state: JobState = holds ? 'H' : waitBegin ? 'W' : 'Q';
      const comment = holds ? t.comment : waitBegin ? `BeginTime: not before ${new Date(t.beginAt!).toISOString()}` : undefined;
      const event: JobEvent = holds ? 'release-partial' : waitBegin ? 'release-wait' : 'release';
      const r = await this.store.transition(t.id, event, { holds: holds || undefined, comment });
      if (!r.ok) continue;
      if (!holds && !t.array) await this.queue.add([{ ...t, state }]);
      n++;
    }
    if (n === 0 && type === 'u') throw new StateError(`job ${rec.id} has no user hold to release`);
    return n;
  }

  /**
   * `validate` judges each new spec against the limits submission enforces (its queue's may have
   * changed under a concurrent gcqmove: a target that changed meanwhile is read and judged again).
   */
  async alter(rec: JobRecord, c: JobChanges, validate: (spec: JobSpec) => void = () => undefined): Promise<void> {
    if (c.throttle !== undefined) {
      if (!rec.array) throw new UsageError(`--throttle applies to array jobs (${rec.id} is not one)`);
      await this.store.setArray(rec.id, { ...rec.array, ...(c.throttle > 0 ? { max: c.throttle } : { max: undefined }) });
    }
    const specChange = c.name !== undefined || c.priority !== undefined || c.walltimeSec !== undefined;
    const timing = c.beginAt !== undefined;
    if (!specChange && !timing && c.hold === undefined) return;
    for (const first of await this.targets(rec)) {
      await this.alterOne(rec, first, c, validate);
    }
    if (c.hold === 'u') await this.hold(await this.store.get(rec.id), 'u');
    if (c.hold === '') await this.release(await this.store.get(rec.id), 'u');
  }

  /** One target of alter(): compare-and-set on its spec, read again when another change won. */
  private async alterOne(rec: JobRecord, first: JobRecord, c: JobChanges, validate: (spec: JobSpec) => void): Promise<void> {
    const timing = c.beginAt !== undefined;
    let t: JobRecord | undefined = first;
    for (let attempt = 1; t; attempt++) {
      if (nextState('alter', t.state) === undefined) {
        if (t.id === rec.id) throw new StateError(`job ${rec.id} is ${t.state}: only jobs that have not started can be altered`);
        return;
      }
      const spec = { ...t.spec };
      if (c.name !== undefined) spec.name = c.name;
      if (c.priority !== undefined) spec.priority = c.priority;
      if (c.walltimeSec !== undefined) spec.walltimeSec = c.walltimeSec;
      validate(spec);
      const now = Date.now();
      let state = t.state;
      let beginAt = t.beginAt;
      let event: JobEvent = 'alter';
      if (timing) {
        beginAt = c.beginAt ? c.beginAt : undefined;
        if (state !== 'H' && !t.array) {
          state = beginAt !== undefined && beginAt > now ? 'W' : 'Q';
          event = state === 'W' ? 'alter-wait' : 'alter-ready';
        }
      }
      const r = await this.store.transitionSpec(t.id, event, { beginAt }, t.spec, spec);
      if (!r.ok) {
        // Not alterable any more (it started: the check above says so), or its spec changed.
        if (attempt >= 5) throw new StateError(`job ${t.id} changed while it was being altered; try again`);
        t = await this.store.tryGet(t.id);
        continue;
      }
      if (!t.array && state !== 'H') {
        // BullMQ keeps priority and delay per job: put it back with the new ones.
        await this.queue.remove(t.id);
        await this.queue.add([{ ...r.record, spec, state, ...(beginAt !== undefined ? { beginAt } : {}) }]);
      }
      return;
    }
  }
}
