/**
 * Quota decisions on counts held in Redis, shared by every gcd on it (issue 14 item 2). The
 * counts are moved by the job store's own scripts, in the same atomic step as each state
 * change (queue/usage-lua.ts); this module turns the admin's limits into the arguments of
 * those scripts, and their answers back into policy.ts's messages. Read-side API for other
 * parts (the grid's nodes, gcqstat): `read()`.
 *
 * Keys, under `<prefix>:usage` (Keys.usage):
 *   u:<user>, g:<group>, q:<queue>, qu:<queue>:<user>, sys   hashes: queued, running, ncpus, mem
 *   arr:<array id>                                           array tasks running (%max)
 *   fair:vnow, fair:finish, fair:groups, fair:split:<group>  the fair-share clock (fair-redis.ts)
 */
import type { Redis } from 'ioredis';
import type { QueueConfig, QuotaConfig } from '../config/quotas.js';
import { QuotaError } from '../errors.js';
import type { JobRecord } from '../queue/job.js';
import type { QueuedCheck, RunLimits } from '../queue/job-store.js';
import type { Keys } from '../queue/keys.js';
import { admit, userLimit, zeroCounts, type Counts, type Usage } from './policy.js';

/** The five count keys of a job of user/group/queue, in the order the scripts use. */
export function usageKeys(keys: Keys, user: string, group: string, queue: string): string[] {
  const p = keys.usage;
  return [`${p}:u:${user}`, `${p}:g:${group}`, `${p}:q:${queue}`, `${p}:qu:${queue}:${user}`, `${p}:sys`];
}

type LimitKey = 'maxQueued' | 'maxRunning' | 'maxRunningNcpus' | 'maxRunningMemMiB';

/**
 * One limit for each of the five entities (undefined: none), as policy.ts resolves them, in
 * usageKeys order (user, group, queue, user in queue, system): the Lua scripts pair them by index.
 */
function limitsOf(cfg: QuotaConfig, user: string, group: string, queue: string, k: LimitKey): Array<number | undefined> {
  const q: QueueConfig | undefined = cfg.queues.get(queue);
  return [userLimit(cfg, user, k), cfg.groups.get(group)?.[k], q?.[k], q?.perUser[k], cfg.system[k]];
}

/** The entities' names for messages, in usageKeys order. */
const LABELS = (user: string, group: string, queue: string): string[] => [
  `user ${user}`,
  `group ${group}`,
  `queue ${queue}`,
  `user ${user} in queue ${queue}`,
  'the system',
];

/** The order policy.ts names a limit in (user, group, user in queue, queue, system), as usageKeys indices. */
const POLICY_ORDER = [0, 1, 3, 2, 4] as const;

/** The running limits of a job's five entities, for JobStore.start. */
export function runLimits(cfg: QuotaConfig, rec: Pick<JobRecord, 'spec'>): RunLimits[] {
  const { user, group, queue } = rec.spec;
  const run = limitsOf(cfg, user, group, queue, 'maxRunning');
  const cpus = limitsOf(cfg, user, group, queue, 'maxRunningNcpus');
  const mem = limitsOf(cfg, user, group, queue, 'maxRunningMemMiB');
  return run.map((r, i) => ({ maxRunning: r, maxNcpus: cpus[i], maxMem: mem[i] }));
}

/** max_queued checks of a batch: each job adds to its five entities; amounts summed per key. */
export function queuedChecks(keys: Keys, cfg: QuotaConfig, jobs: Array<Pick<JobRecord, 'spec'>>): QueuedCheck[] {
  const byKey = new Map<string, QueuedCheck>();
  for (const j of jobs) {
    const { user, group, queue } = j.spec;
    const max = limitsOf(cfg, user, group, queue, 'maxQueued');
    const labels = LABELS(user, group, queue);
    const entityKeys = usageKeys(keys, user, group, queue);
    for (const i of POLICY_ORDER) {
      const key = entityKeys[i];
      const m = max[i];
      if (m === undefined || m === Infinity) continue;
      const c = byKey.get(key);
      if (c) c.amount++;
      else byKey.set(key, { key, max: m, amount: 1, label: labels[i] });
    }
  }
  return [...byKey.values()];
}

/** A Usage holding only the entities of one job, from the five entities' counts. */
export function usageOf(user: string, group: string, queue: string, counts: Counts[]): Usage {
  const c = (i: number): Counts => counts[i] ?? zeroCounts();
  return {
    users: new Map([[user, c(0)]]),
    groups: new Map([[group, c(1)]]),
    queues: new Map([[queue, c(2)]]),
    queueUsers: new Map([[queue, new Map([[user, c(3)]])]]),
    total: c(4),
  };
}

/** The reason a start was refused, from the counts START_LUA returned (policy.ts's wording). */
export function refusalReason(cfg: QuotaConfig, rec: JobRecord, limited: number[], throttle: number | undefined): string {
  const counts: Counts[] = [];
  for (let i = 0; i < 5; i++) {
    const [queued, running, runningNcpus, runningMemMiB] = limited.slice(i * 4, i * 4 + 4);
    counts.push({ queued: queued ?? 0, running: running ?? 0, runningNcpus: runningNcpus ?? 0, runningMemMiB: runningMemMiB ?? 0, clones: 0 });
  }
  const s = rec.spec;
  const a = admit(cfg, usageOf(s.user, s.group, s.queue, counts), {
    user: s.user,
    group: s.group,
    queue: s.queue,
    ncpus: s.resources.ncpus,
    memMiB: s.resources.memMiB,
  });
  if (!a.ok) return a.reason;
  const arr = limited[20] ?? 0;
  if (throttle !== undefined && rec.arrayParent) return `JobArrayTaskLimit: ${arr} of %${throttle} tasks of ${rec.arrayParent} running`;
  return 'Resources: a limit changed while the job was looked at';
}

/** The QuotaError policy.ts would give for a max_queued refusal of JobStore.create. */
export function queuedError(check: QueuedCheck, held: number): QuotaError {
  return new QuotaError(`would exceed max_queued=${check.max} for ${check.label} (has ${held} queued or running, submitting ${check.amount})`, {
    limit: 'max_queued',
    max: check.max,
    entity: check.label,
    amount: check.amount,
    used: held,
  });
}

/** Reads the shared counts (any gcd on the Redis sees the same numbers). */
export class UsageStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {}

  /** The counts of one user/group/queue's five entities, as a Usage policy.ts can judge. */
  async read(user: string, group: string, queue: string): Promise<Usage> {
    const p = this.redis.pipeline();
    for (const k of usageKeys(this.keys, user, group, queue)) p.hmget(k, 'queued', 'running', 'ncpus', 'mem');
    const res = (await p.exec()) ?? [];
    const counts = res.map(([, v]) => {
      const [q, r, c, m] = ((v as Array<string | null>) ?? []).map((x) => Number(x ?? 0));
      return { queued: q ?? 0, running: r ?? 0, runningNcpus: c ?? 0, runningMemMiB: m ?? 0, clones: 0 };
    });
    return usageOf(user, group, queue, counts);
  }

  /**
   * The user's best queued job in this queue (highest -p, then oldest), when its -p is above
   * `priority`: it should take the user's fair-share turn instead (dispatcher.ts).
   */
  async betterOwn(queue: string, user: string, priority: number): Promise<string | undefined> {
    const [id, score] = await this.redis.zrange(`${this.keys.usage}:pend:${queue}:${user}`, 0, 0, 'WITHSCORES');
    if (id === undefined || score === undefined) return undefined;
    const band = Math.floor(Number(score) / 2 ** 33);
    return band < 1023 - priority ? id : undefined;
  }

  /** Array tasks running now (the %max throttle's count). */
  async arrayRunning(arrayId: string): Promise<number> {
    return Number((await this.redis.get(`${this.keys.usage}:arr:${arrayId}`)) ?? 0);
  }
}
