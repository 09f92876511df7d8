/**
 * Quota policy: pure decisions over a QuotaConfig and a Usage snapshot.
 *
 * - checkSubmit: at gcqsub time, resolves the queue and its defaults, then refuses (QuotaError)
 *   a job over a per-job limit (max_job_ncpus/mem/walltime) or a submission that would take an
 *   entity above max_queued. A job counts toward max_queued from submission until it finishes
 *   (queued, held, waiting, running, exiting), as in PBS.
 * - admit: at dispatch time, tells whether a queued job may start under max_running,
 *   max_running_ncpus and max_running_mem, with a Slurm-style reason when not.
 * - checkClone: max_clones for `gc clone`.
 *
 * Entities, checked in this order: the user (own value, else `defaults`: PBS u:PBS_GENERIC),
 * the group, the user inside the queue (`per_user`), the queue, the system (PBS o:PBS_ALL).
 * `UsageTracker` keeps the counts incrementally so that every decision is a handful of map
 * look-ups, whatever the number of users or jobs.
 */
import { QuotaError, UsageError } from '../errors.js';
import { formatLimit, suggest, type EntityLimits, type Limits, type QueueConfig, type QuotaConfig } from '../config/quotas.js';
import { formatSize, formatWalltime } from '../pbs/units.js';
import type { JobRecord, JobState } from '../queue/job.js';

/** PBS's name for the queue of a job that names none, when the configuration defines no queue. */
export const DEFAULT_QUEUE_NAME = 'workq';

// ----------------------------------------------------------------------- usage

/** What one entity holds now. */
export interface Counts {
  /** Jobs waiting: queued, held or waiting for their start time (not running). */
  queued: number;
  /** Jobs running or exiting (holding a clone). */
  running: number;
  runningNcpus: number;
  runningMemMiB: number;
  /** Live `gc clone` VMs (per user, per group and in total; not per queue). */
  clones: number;
}

/** A snapshot of what is queued and running; UsageTracker is one (and can copy itself). */
export interface Usage {
  readonly users: ReadonlyMap<string, Counts>;
  readonly groups: ReadonlyMap<string, Counts>;
  readonly queues: ReadonlyMap<string, Counts>;
  /** queue -> user -> counts, for `per_user` queue limits. */
  readonly queueUsers: ReadonlyMap<string, ReadonlyMap<string, Counts>>;
  readonly total: Counts;
}

const ZERO: Counts = Object.freeze({ queued: 0, running: 0, runningNcpus: 0, runningMemMiB: 0, clones: 0 });

export function zeroCounts(): Counts {
  return { ...ZERO };
}

/** The facts about a job the tracker needs (its resolved queue and size). */
export interface TrackedJob {
  user: string;
  group: string;
  queue: string;
  ncpus: number;
  /** MiB the job's clone holds while it runs. */
  memMiB: number;
}

export function trackedJob(rec: Pick<JobRecord, 'spec'>): TrackedJob {
  const s = rec.spec;
  return { user: s.user, group: s.group, queue: s.queue, ncpus: s.resources.ncpus, memMiB: s.resources.memMiB };
}

const WAITING: ReadonlySet<JobState> = new Set<JobState>(['Q', 'H', 'W']);
const RUNNING: ReadonlySet<JobState> = new Set<JobState>(['R', 'E']);

type Delta = Partial<Counts>;

/**
 * Usage kept up to date by the dispatcher, O(1) per event. Call, for each job (or each
 * subjob of an array):
 *   onQueued    when it is accepted (Q, H or W);
 *   onDequeued  when it leaves without having run (deleted, failed to start, or finished
 *               straight from the queue);
 *   onStarted   when it starts (its clone is being made);
 *   onRequeued  when a running job goes back to the queue (rerun after a lost gcd);
 *   onEnded     when a started job is finished and its clone destroyed.
 * Counts never go below 0 (an event reported twice cannot wedge a user). Entries that fall
 * back to all zeros are dropped, so the maps only hold entities that hold something.
 */
export class UsageTracker implements Usage {
  readonly users = new Map<string, Counts>();
  readonly groups = new Map<string, Counts>();
  readonly queues = new Map<string, Counts>();
  readonly queueUsers = new Map<string, Map<string, Counts>>();
  readonly total: Counts = zeroCounts();

  /** Rebuilds usage from job records (after a gcd restart): Q/H/W count as queued, R/E as running. */
  static fromJobs(jobs: Iterable<Pick<JobRecord, 'spec' | 'state'>>): UsageTracker {
    const t = new UsageTracker();
    for (const rec of jobs) {
      const j = trackedJob(rec);
      if (WAITING.has(rec.state)) t.onQueued(j);
      else if (RUNNING.has(rec.state)) t.apply(j, { running: 1, runningNcpus: j.ncpus, runningMemMiB: j.memMiB });
    }
    return t;
  }

  onQueued(job: TrackedJob, count = 1): void {
    this.apply(job, { queued: count });
  }

  onDequeued(job: TrackedJob, count = 1): void {
    this.apply(job, { queued: -count });
  }

  onStarted(job: TrackedJob): void {
    this.apply(job, { queued: -1, running: 1, runningNcpus: job.ncpus, runningMemMiB: job.memMiB });
  }

  onRequeued(job: TrackedJob): void {
    this.apply(job, { queued: 1, running: -1, runningNcpus: -job.ncpus, runningMemMiB: -job.memMiB });
  }

  onEnded(job: TrackedJob): void {
    this.apply(job, { running: -1, runningNcpus: -job.ncpus, runningMemMiB: -job.memMiB });
  }

  onCloneCreated(user: string, group: string): void {
    this.applyClone(user, group, 1);
  }

  onCloneDestroyed(user: string, group: string): void {
    this.applyClone(user, group, -1);
  }

  /** A deep copy, safe to keep while the tracker moves on. */
  snapshot(): Usage {
    const copy = (m: ReadonlyMap<string, Counts>): Map<string, Counts> => new Map([...m].map(([k, v]) => [k, { ...v }]));
    return {
      users: copy(this.users),
      groups: copy(this.groups),
      queues: copy(this.queues),
      queueUsers: new Map([...this.queueUsers].map(([q, m]) => [q, copy(m)])),
      total: { ...this.total },
    };
  }

  private apply(job: TrackedJob, d: Delta): void {
    bump(this.users, job.user, d);
    bump(this.groups, job.group, d);
    bump(this.queues, job.queue, d);
    let qu = this.queueUsers.get(job.queue);
    if (!qu) this.queueUsers.set(job.queue, (qu = new Map()));
    bump(qu, job.user, d);
    if (qu.size === 0) this.queueUsers.delete(job.queue);
    add(this.total, d);
  }

  private applyClone(user: string, group: string, n: number): void {
    bump(this.users, user, { clones: n });
    bump(this.groups, group, { clones: n });
    add(this.total, { clones: n });
  }
}

function add(c: Counts, d: Delta): void {
  for (const k of Object.keys(d) as (keyof Counts)[]) c[k] = Math.max(0, c[k] + (d[k] as number));
}

function bump(m: Map<string, Counts>, key: string, d: Delta): void {
  let c = m.get(key);
  if (!c) m.set(key, (c = zeroCounts()));
  add(c, d);
  if (c.queued === 0 && c.running === 0 && c.runningNcpus === 0 && c.runningMemMiB === 0 && c.clones === 0) m.delete(key);
}

// -------------------------------------------------------------------- entities

type EntityKind = 'User' | 'Group' | 'QueueUser' | 'Queue' | 'System';

interface Entity {
  kind: EntityKind;
  /** How messages name it: `user alice`, `group physics`, `user alice in queue short`, `queue short`, `the system`. */
  label: string;
  /** How admission reasons name it: `alice`, `group physics`, `alice in queue short`, ... */
  who: string;
  get<K extends keyof Limits>(k: K): number | undefined;
  counts: Counts;
}

/** The user's own value for a limit, else the default user's (PBS: an individual limit overrides u:PBS_GENERIC). */
export function userLimit<K extends keyof EntityLimits>(cfg: QuotaConfig, user: string, key: K): EntityLimits[K] {
  const own = cfg.users.get(user)?.[key];
  return own !== undefined ? own : cfg.defaults[key];
}

function entities(cfg: QuotaConfig, usage: Usage, user: string, group: string, queue: QueueConfig | undefined): Entity[] {
  const out: Entity[] = [
    { kind: 'User', label: `user ${user}`, who: user, get: (k) => userLimit(cfg, user, k), counts: usage.users.get(user) ?? ZERO },
  ];
  const g = cfg.groups.get(group);
  if (g) out.push({ kind: 'Group', label: `group ${group}`, who: `group ${group}`, get: (k) => g[k], counts: usage.groups.get(group) ?? ZERO });
  if (queue) {
    const q = queue;
    out.push({
      kind: 'QueueUser',
      label: `user ${user} in queue ${q.name}`,
      who: `${user} in queue ${q.name}`,
      get: (k) => q.perUser[k],
      counts: usage.queueUsers.get(q.name)?.get(user) ?? ZERO,
    });
    out.push({ kind: 'Queue', label: `queue ${q.name}`, who: `queue ${q.name}`, get: (k) => q[k], counts: usage.queues.get(q.name) ?? ZERO });
  }
  out.push({ kind: 'System', label: 'the system', who: 'the system', get: (k) => cfg.system[k], counts: usage.total });
  return out;
}

// ---------------------------------------------------------------------- submit

export interface SubmitRequest {
  user: string;
  group: string;
  /** -q; undefined or empty: the configured default_queue. */
  queue?: string;
  /** undefined: the queue's default_ncpus, else 1. */
  ncpus?: number;
  /** MiB; undefined or 0: not known yet (the headnode's RAM), per-job memory limits are not checked. */
  memMiB?: number;
  /** undefined: the queue's default_walltime, else the smallest max_job_walltime that applies, else none. */
  walltimeSec?: number;
}

export interface ResolvedJob {
  queue: string;
  ncpus: number;
  memMiB: number;
  /** undefined: no walltime (no default and no maximum apply). */
  walltimeSec?: number;
}

/** The queue a job goes to: its -q, else default_queue; undefined when no queue is configured. */
export function resolveQueue(cfg: QuotaConfig, name: string | undefined): QueueConfig | undefined {
  if (cfg.queues.size === 0) return undefined;
  const wanted = name || cfg.defaultQueue || DEFAULT_QUEUE_NAME;
  const q = cfg.queues.get(wanted);
  if (q) return q;
  const names = [...cfg.queues.keys()];
  const guess = suggest(wanted, names);
  throw new UsageError(`Unknown queue "${wanted}"; ${guess !== undefined ? `did you mean "${guess}"?` : `queues: ${names.join(', ')}`}`);
}

/**
 * Checks a submission of `count` jobs of this size (an array of N subjobs: count N) and
 * returns the job's resolved queue, ncpus, mem and walltime. Throws UsageError for an unknown
 * queue, QuotaError for a disabled queue, a per-job limit or max_queued.
 */
export function checkSubmit(cfg: QuotaConfig, usage: Usage, job: SubmitRequest, count = 1): ResolvedJob {
  const q = resolveQueue(cfg, job.queue);
  if (q && !q.enabled) throw new QuotaError(`queue ${q.name} is disabled (enabled: false) and accepts no new jobs`, { limit: 'enabled', entity: `queue ${q.name}` });
  const ents = entities(cfg, usage, job.user, job.group, q);
  const ncpus = job.ncpus ?? q?.defaultNcpus ?? 1;
  const memMiB = job.memMiB ?? 0;
  let walltimeSec = job.walltimeSec ?? q?.defaultWalltimeSec;
  if (walltimeSec === undefined) {
    // No walltime asked and no default: the job gets the most it may have (PBS would refuse
    // an unlimited job under resources_max.walltime).
    const maxima = ents.map((e) => e.get('maxJobWalltimeSec')).filter((v): v is number => v !== undefined && v !== Infinity);
    if (maxima.length > 0) walltimeSec = Math.min(...maxima);
  }
  for (const e of ents) {
    const maxCpus = e.get('maxJobNcpus');
    if (maxCpus !== undefined && ncpus > maxCpus) {
      throw new QuotaError(`ncpus=${ncpus} exceeds max_job_ncpus=${maxCpus} for ${e.label}`, { limit: 'max_job_ncpus', max: maxCpus, entity: e.label, amount: ncpus });
    }
    const maxMem = e.get('maxJobMemMiB');
    if (maxMem !== undefined && memMiB > maxMem) {
      throw new QuotaError(`mem=${formatSize(memMiB)} exceeds max_job_mem=${formatLimit('size', maxMem)} for ${e.label}`, { limit: 'max_job_mem', max: maxMem, entity: e.label, amount: memMiB });
    }
    const maxWall = e.get('maxJobWalltimeSec');
    if (maxWall !== undefined && walltimeSec !== undefined && walltimeSec > maxWall) {
      throw new QuotaError(`walltime=${formatWalltime(walltimeSec)} exceeds max_job_walltime=${formatLimit('duration', maxWall)} for ${e.label}`, {
        limit: 'max_job_walltime', max: maxWall, entity: e.label, amount: walltimeSec,
      });
    }
  }
  for (const e of ents) {
    const max = e.get('maxQueued');
    const held = e.counts.queued + e.counts.running;
    if (max !== undefined && held + count > max) {
      throw new QuotaError(`would exceed max_queued=${max} for ${e.label} (has ${held} queued or running, submitting ${count})`, {
        limit: 'max_queued', max, entity: e.label, amount: count, used: held,
      });
    }
  }
  return { queue: q?.name ?? (job.queue || DEFAULT_QUEUE_NAME), ncpus, memMiB, ...(walltimeSec !== undefined ? { walltimeSec } : {}) };
}

// ----------------------------------------------------------------------- admit

export interface AdmitJob {
  user: string;
  group: string;
  queue: string;
  ncpus: number;
  memMiB: number;
}

export type Admission =
  | { ok: true }
  | {
      ok: false;
      /** Slurm-style code: UserMaxRun, GroupMaxCpus, QueueUserMaxMem, QueueStopped, ... */
      code: string;
      /** `<code>: <human tail>`, for the job's comment (gcqstat -s). */
      reason: string;
      /** True when the job would not fit even if the entity ran nothing (it waits for a config change). */
      permanent: boolean;
    };

function refuse(code: string, tail: string, permanent: boolean): Admission {
  return { ok: false, code, reason: `${code}: ${tail}`, permanent };
}

/**
 * May this queued job start now? Checks the queue's `started` flag, then max_running,
 * max_running_ncpus and max_running_mem of the user, group, user-in-queue, queue and system.
 * A queue that is not configured (or no queues at all) adds no limit.
 */
export function admit(cfg: QuotaConfig, usage: Usage, job: AdmitJob): Admission {
  const q = cfg.queues.get(job.queue);
  if (q && !q.started) return refuse('QueueStopped', `queue ${q.name} is not started (started: false)`, false);
  for (const e of entities(cfg, usage, job.user, job.group, q)) {
    const c = e.counts;
    const maxRun = e.get('maxRunning');
    if (maxRun !== undefined && c.running + 1 > maxRun) {
      return refuse(`${e.kind}MaxRun`, `${e.who} has ${c.running} of max_running=${maxRun}`, maxRun === 0);
    }
    const maxCpus = e.get('maxRunningNcpus');
    if (maxCpus !== undefined && c.runningNcpus + job.ncpus > maxCpus) {
      return refuse(`${e.kind}MaxCpus`, `${e.who} uses ${c.runningNcpus} of max_running_ncpus=${maxCpus} cpus, job asks ${job.ncpus}`, job.ncpus > maxCpus);
    }
    const maxMem = e.get('maxRunningMemMiB');
    if (maxMem !== undefined && c.runningMemMiB + job.memMiB > maxMem) {
      return refuse(
        `${e.kind}MaxMem`,
        `${e.who} uses ${formatSize(c.runningMemMiB)} of max_running_mem=${formatLimit('size', maxMem)}, job needs ${formatSize(job.memMiB)}`,
        job.memMiB > maxMem,
      );
    }
  }
  return { ok: true };
}

// ---------------------------------------------------------------------- clones

/** Throws QuotaError when one more live `gc clone` VM would exceed max_clones of the user, group or system. */
export function checkClone(cfg: QuotaConfig, usage: Usage, who: { user: string; group: string }): void {
  const checks: [string, number | undefined, number][] = [
    [`user ${who.user}`, userLimit(cfg, who.user, 'maxClones'), usage.users.get(who.user)?.clones ?? 0],
    [`group ${who.group}`, cfg.groups.get(who.group)?.maxClones, usage.groups.get(who.group)?.clones ?? 0],
    ['the system', cfg.system.maxClones, usage.total.clones],
  ];
  for (const [label, max, live] of checks) {
    if (max !== undefined && live + 1 > max) {
      throw new QuotaError(`would exceed max_clones=${max} for ${label} (${live} live clone${live === 1 ? '' : 's'})`, {
        limit: 'max_clones', max, entity: label, amount: 1, used: live, source: cfg.source,
      });
    }
  }
}
