import type { QuotaConfig } from '../config/quotas.js';
import { StateError } from '../errors.js';
import type { Keys } from '../queue/keys.js';
import type { JobRecord, JobSpec } from '../queue/job.js';
import { nextState } from '../queue/job-states.js';
import type { JobStore, QueueMove } from '../queue/job-store.js';
import type { RunQueue } from '../queue/run-queue.js';
import { checkSubmit, DEFAULT_QUEUE_NAME, resolveQueue, type Counts } from './policy.js';
import { queuedChecks, queuedError, type UsageStore } from './usage-store.js';

export interface MoveDeps {
  store: JobStore;
  queue: RunQueue;
  usage: UsageStore;
  keys: Keys;
  quotas: QuotaConfig;
  /** The job (or an array's record and its tasks) as they are now. */
  targets: (rec: JobRecord) => Promise<JobRecord[]>;
}

/** Times a move is tried again when a concurrent gcqalter/gcqmove changed the job between read and write. */
const ATTEMPTS = 5;

const notStarted = (id: string, state: string | undefined): StateError =>
  new StateError(`job ${id} is ${state ?? 'gone'}: only jobs that have not started can be moved`);

/**
 * gcqmove DEST ID / gcqalter -q DEST ID: a job that has not started goes to another queue.
 * The destination's limits apply as at submission (it must exist and be enabled; its per-job
 * limits and max_queued, counted without the job itself); a refusal changes nothing.
 * An array moves whole (its record and every task) or not at all.
 *
 * The destination's max_queued is held by the step that moves (JobStore.move, one Lua script):
 * parallel moves into a queue cannot overshoot it. The look before it only refuses early with
 * the policy's message (per-job limits, a disabled or unknown queue).
 */
export async function moveJob(d: MoveDeps, rec: JobRecord, dest: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const targets = await d.targets(attempt === 1 ? rec : await d.store.get(rec.id));
    const done = await tryMove(d, targets[0], targets, dest);
    if (done !== undefined) return done;
    if (attempt >= ATTEMPTS) throw new StateError(`job ${rec.id} changed while it was being moved; try again`);
  }
}

/** One attempt: the queue, or undefined when a job changed meanwhile (read again). */
async function tryMove(d: MoveDeps, rec: JobRecord, targets: JobRecord[], dest: string): Promise<string | undefined> {
  for (const t of targets) if (nextState('move', t.state) === undefined) throw notStarted(t.id, t.state);
  const runnable = targets.filter((t) => !t.array);
  const s = rec.spec;
  // The early look judges max_queued without the job itself: it is counted already for its
  // user, group and the system (and for the queue when it stays).
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
  const moves: QueueMove[] = targets
    .filter((t) => t.spec.queue !== resolved.queue)
    .map((t) => ({
      id: t.id,
      was: t.spec,
      spec: { ...t.spec, queue: resolved.queue, ...(resolved.walltimeSec !== undefined ? { walltimeSec: resolved.walltimeSec } : {}) } satisfies JobSpec,
    }));
  if (moves.length === 0) return resolved.queue;
  // Only the destination's queue and user-in-queue counts grow: user, group and system hold the jobs already.
  const destKeys = [`${d.keys.usage}:q:`, `${d.keys.usage}:qu:`];
  const checks = queuedChecks(
    d.keys,
    d.quotas,
    moves.filter((m) => !targets.find((t) => t.id === m.id)?.array),
  ).filter((c) => destKeys.some((p) => c.key.startsWith(p)));
  const r = await d.store.move(moves, checks, { comment: undefined });
  if (!r.ok) {
    if (r.why === 'limit') throw queuedError(r.error.check, r.error.held);
    if (r.why === 'state') throw notStarted(r.id, r.state);
    return undefined;
  }
  for (const moved of r.records) {
    if (moved.array || moved.state === 'H') continue;
    // BullMQ orders by queue priority and fair share: put it back under its new queue.
    await d.queue.remove(moved.id);
    await d.queue.add([moved]);
  }
  return resolved.queue;
}
