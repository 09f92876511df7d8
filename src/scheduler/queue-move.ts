import type { QuotaConfig } from '../config/quotas.js';
import { StateError } from '../errors.js';
import type { JobRecord, JobSpec } from '../queue/job.js';
import { nextState } from '../queue/job-states.js';
import type { JobStore } from '../queue/job-store.js';
import type { RunQueue } from '../queue/run-queue.js';
import { checkSubmit, DEFAULT_QUEUE_NAME, resolveQueue, type Counts } from './policy.js';
import type { UsageStore } from './usage-store.js';

export interface MoveDeps {
  store: JobStore;
  queue: RunQueue;
  usage: UsageStore;
  quotas: QuotaConfig;
}

/**
 * gcqmove DEST ID / gcqalter -q DEST ID: a job that has not started goes to another queue.
 * The destination's limits apply as at submission (it must exist and be enabled; its per-job
 * limits and max_queued, counted without the job itself); a refusal changes nothing.
 * `targets` is the job, or an array's record and its tasks (all must be movable).
 */
export async function moveJob(d: MoveDeps, rec: JobRecord, targets: JobRecord[], dest: string): Promise<string> {
  for (const t of targets) {
    if (nextState('move', t.state) === undefined) {
      throw new StateError(`job ${t.id} is ${t.state}: only jobs that have not started can be moved`);
    }
  }
  const runnable = targets.filter((t) => !t.array);
  const s = rec.spec;
  // Judge max_queued without the job itself: it is counted already for its user, group and
  // the system (and for the queue when it stays). Not atomic with other submissions: the move
  // itself moves the counts atomically (JobStore.transition), a race can only lose a little.
  const destName = resolveQueue(d.quotas, dest)?.name ?? (dest || DEFAULT_QUEUE_NAME);
  const u = await d.usage.read(s.user, s.group, destName);
  const n = runnable.length;
  const less = (c: Counts | undefined): void => {
    if (c) c.queued = Math.max(0, c.queued - n);
  };
  less(u.users.get(s.user));
  less(u.groups.get(s.group));
  less(u.total);
  if (destName === s.queue) {
    less(u.queues.get(destName));
    less(u.queueUsers.get(destName)?.get(s.user));
  }
  const resolved = checkSubmit(
    d.quotas,
    u,
    {
      user: s.user,
      group: s.group,
      queue: dest,
      ncpus: s.resources.ncpus,
      ...(s.resources.memMiB ? { memMiB: s.resources.memMiB } : {}),
      ...(s.walltimeSec !== undefined ? { walltimeSec: s.walltimeSec } : {}),
    },
    Math.max(1, n),
  );
  for (const t of targets) {
    if (t.spec.queue === resolved.queue) continue;
    const spec: JobSpec = { ...t.spec, queue: resolved.queue, ...(resolved.walltimeSec !== undefined ? { walltimeSec: resolved.walltimeSec } : {}) };
    const r = await d.store.transition(t.id, 'move', { comment: undefined }, spec);
    if (!r.ok) throw new StateError(`job ${t.id} is ${r.from ?? 'gone'}: only jobs that have not started can be moved`);
    if (t.array) continue;
    if (r.to !== 'H') {
      // BullMQ orders by queue priority and fair share: put it back under its new queue.
      await d.queue.remove(t.id);
      await d.queue.add([r.record]);
    }
  }
  return resolved.queue;
}
