import type { Redis } from 'ioredis';
import { UnknownJobError } from '../errors.js';
import { END_REASONS, type EndReason, type JobRecord, type JobSpec, type JobState } from './job.js';
import { JobEvents } from './job-events.js';
import { JOB_TRANSITIONS, JobStateError, type JobEvent } from './job-states.js';
import type { Keys } from './keys.js';
import { ScriptCache, storedSpec } from './shared-script.js';
import { CREATE_LUA, MOVE_LUA, REBUILD_LUA, START_LUA, TRANSITION_IF_LUA, TRANSITION_LUA } from './usage-lua.js';

/**
 * Job records in Redis, one hash per job: PBS state lives here, BullMQ only carries the
 * job through the run queue. The state field is written only by transition(): a
 * compare-and-set (Lua) of one event of the table in job-states.ts, so gcqdel and a worker
 * picking the same job, or two runners after a BullMQ lock loss, cannot both win.
 */

/** Field writes that are not state changes, only to a record that still exists (never re-creates an expired one). */
const UPDATE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  if ARGV[i+1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
return 1
`;

/**
 * Drop a job's own snapshot reference once: the job's 'snapRef' field says it still holds it.
 * Returns 1 when that was the snapshot's last reference (the snapshot may go).
 */
const RELEASE_REF_LUA = `
if redis.call('HDEL', KEYS[1], 'snapRef') == 0 then return 0 end
local left = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) return 1 end
return 0
`;

/**
 * The `resnapshot` transition (compare-and-set on the state, as gcTransition) that also moves
 * the job's snapshot reference: +1 on the new snapshot, -1 on the old. Refused when the job no
 * longer holds a reference (snapRef) or names no snapshot. The 4th item is the old snapshot's
 * id when that was its last reference (it may go), else ''.
 */
const RESNAPSHOT_LUA = `
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local to = cjson.decode(ARGV[1])[cur]
local old = redis.call('HGET', KEYS[1], 'snapshotId')
if not to or not old or redis.call('HEXISTS', KEYS[1], 'snapRef') == 0 then return {0, cur} end
redis.call('HSET', KEYS[1], 'state', to, 'snapshotId', ARGV[2])
local last = ''
if old ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  local left = redis.call('HINCRBY', KEYS[2], old, -1)
  if left <= 0 then redis.call('HDEL', KEYS[2], old) last = old end
end
return {1, cur, redis.call('HGETALL', KEYS[1]), last}
`;

type Field = Exclude<keyof JobRecord, 'spec' | 'id' | 'depend' | 'array'>;

export type JobPatch = Partial<Pick<JobRecord, Field>>;
/** Fields a transition or an update may write; the state comes from the transition table only. */
export type FieldPatch = Omit<JobPatch, 'state'>;

export type TransitionResult = { ok: true; from: JobState; to: JobState; record: JobRecord } | { ok: false; from: JobState | undefined; error: JobStateError };

interface StoreScripts {
  gcTransition(key: string, usage: string, map: string, ...fields: string[]): Promise<[number, string, string[]?]>;
  gcStart(key: string, usage: string, map: string, limits: string, throttle: string, ...fields: string[]): Promise<[number, string, ...unknown[]]>;
  gcCreate(usage: string, jobs: string, jobsTop: string, refs: string, checks: string, records: string): Promise<[number, number?, number?]>;
  gcMove(usage: string, map: string, checks: string, jobs: string): Promise<[number, ...unknown[]]>;
  gcRebuildUsage(usage: string, jobs: string, jobKeyPrefix: string): Promise<number>;
  gcTransitionIf(key: string, usage: string, map: string, field: string, value: string, ...fields: string[]): Promise<[number, string, string[]?]>;
  gcUpdate(key: string, ...fields: string[]): Promise<number>;
  gcReleaseRef(jobKey: string, refsKey: string, snapshotId: string): Promise<number>;
  gcResnapshot(jobKey: string, refsKey: string, map: string, snapshotId: string): Promise<[number, string, string[]?, string?]>;
}

function encode(patch: JobPatch): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(patch)) {
    out.push(k, v === undefined || v === null || v === false ? '' : v === true ? '1' : String(v));
  }
  return out;
}

function decode(id: string, h: Record<string, string>): JobRecord {
  const num = (k: string): number | undefined => (h[k] === undefined || h[k] === '' ? undefined : Number(h[k]));
  const rec: JobRecord = {
    id,
    seq: Number(h.seq),
    spec: JSON.parse(h.spec ?? '{}') as JobSpec,
    state: (h.state ?? 'F') as JobState,
    queuedAt: Number(h.queuedAt),
    runCount: Number(h.runCount ?? 0),
  };
  if (h.comment) rec.comment = h.comment;
  if (h.snapshotId) rec.snapshotId = h.snapshotId;
  if (h.outputPath) rec.outputPath = h.outputPath;
  if (h.errorPath) rec.errorPath = h.errorPath;
  if (h.cloneId) rec.cloneId = h.cloneId;
  if (h.execHost) rec.execHost = h.execHost;
  const started = num('startedAt');
  if (started !== undefined) rec.startedAt = started;
  const ended = num('endedAt');
  if (ended !== undefined) rec.endedAt = ended;
  const exit = num('exitStatus');
  if (exit !== undefined) rec.exitStatus = exit;
  const cput = num('cputSec');
  if (cput !== undefined) rec.cputSec = cput;
  const mem = num('memKiB');
  if (mem !== undefined) rec.memKiB = mem;
  const begin = num('beginAt');
  if (begin !== undefined) rec.beginAt = begin;
  if (h.holds) rec.holds = h.holds;
  if (h.depend) rec.depend = JSON.parse(h.depend) as JobRecord['depend'];
  if (h.array) rec.array = JSON.parse(h.array) as JobRecord['array'];
  if (h.arrayParent) rec.arrayParent = h.arrayParent;
  if (h.scriptOf) rec.scriptOf = h.scriptOf;
  const idx = num('arrayIndex');
  if (idx !== undefined) rec.arrayIndex = idx;
  if (h.settling === '1') rec.settling = true;
  if (h.endReason && (END_REASONS as readonly string[]).includes(h.endReason)) rec.endReason = h.endReason as EndReason;
  if (h.mailError) rec.mailError = h.mailError;
  return rec;
}

function pairsOf(flat: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

/** What a job is counted as (usage-lua.ts): user, group, queue, ncpus, MiB, its array's id, -p, seq, id. */
export function acctOf(id: string, spec: JobSpec): string {
  const parent = /\[\d+\]/.test(id) ? id.replace(/\[\d+\]/, '[]') : '';
  const seq = Number(/^\d+/.exec(id)?.[0] ?? 0);
  return JSON.stringify([spec.user, spec.group, spec.queue, spec.resources.ncpus, spec.resources.memMiB, parent, spec.priority, seq, id]);
}

/** One max_queued check for JobStore.create: the entity's count key, its limit, what the batch adds. */
export interface QueuedCheck {
  key: string;
  max: number;
  amount: number;
  /** For the message: `user alice`, `queue short`... */
  label: string;
}

/** A submission refused by create()'s atomic max_queued check. */
export class QueuedLimitError extends Error {
  constructor(
    readonly check: QueuedCheck,
    readonly held: number,
  ) {
    super(`would exceed max_queued=${check.max} for ${check.label} (has ${held} queued or running, submitting ${check.amount})`);
    this.name = 'QueuedLimitError';
  }
}

/** One job of JobStore.move: the spec it was read with, and the spec it gets. */
export interface QueueMove {
  id: string;
  was: JobSpec;
  spec: JobSpec;
}

/** JobStore.move: all moved, or why none was. */
export type MoveResult =
  | { ok: true; records: JobRecord[] }
  | { ok: false; why: 'state'; id: string; state: JobState | undefined }
  | { ok: false; why: 'changed'; id: string }
  | { ok: false; why: 'limit'; error: QueuedLimitError };

/** Running limits of one entity, for JobStore.start (undefined or Infinity: none). */
export interface RunLimits {
  maxRunning?: number;
  maxNcpus?: number;
  maxMem?: number;
}

/**
 * start(): won (R), not runnable (another runner has it, or it left the queue), or held back by a
 * limit: `limited` holds queued, running, ncpus, mem of each entity then the array's running tasks.
 */
export type StartResult =
  | { ok: true; from: JobState; to: JobState; record: JobRecord }
  | { ok: false; from: JobState | undefined; error: JobStateError; limited?: undefined }
  | { ok: false; from: JobState | undefined; limited: number[]; error?: undefined };

function pairs(flat: string[]): Record<string, string> {
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i]] = flat[i + 1]!;
  return h;
}

export class JobStore {
  /** Every successful transition, after its write (see JobEvents). */
  readonly events = new JobEvents();
  private readonly scripts: StoreScripts;
  private readonly sharedScripts = new ScriptCache();

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    readonly serverName: string,
  ) {
    redis.defineCommand('gcTransition', { numberOfKeys: 2, lua: TRANSITION_LUA });
    redis.defineCommand('gcStart', { numberOfKeys: 2, lua: START_LUA });
    redis.defineCommand('gcCreate', { numberOfKeys: 4, lua: CREATE_LUA });
    redis.defineCommand('gcMove', { numberOfKeys: 1, lua: MOVE_LUA });
    redis.defineCommand('gcRebuildUsage', { numberOfKeys: 2, lua: REBUILD_LUA });
    redis.defineCommand('gcTransitionIf', { numberOfKeys: 2, lua: TRANSITION_IF_LUA });
    redis.defineCommand('gcUpdate', { numberOfKeys: 1, lua: UPDATE_LUA });
    redis.defineCommand('gcReleaseRef', { numberOfKeys: 2, lua: RELEASE_REF_LUA });
    redis.defineCommand('gcResnapshot', { numberOfKeys: 2, lua: RESNAPSHOT_LUA });
    this.scripts = redis as unknown as StoreScripts;
  }

  async nextSeqs(count: number): Promise<number> {
    const last = await this.redis.incrby(this.keys.seq, count);
    return last - count + 1;
  }

  idFor(seq: number): string {
    return `${seq}.${this.serverName}`;
  }

  /** Accepts `123`, `123.server`, `123[]`, `123[7].server` (any server part of ours). */
  parseId(text: string): string {
    const m = /^(\d+)(\[\d*\])?(?:\.(.+))?$/.exec(text.trim());
    if (!m || (m[3] !== undefined && m[3] !== this.serverName)) throw new UnknownJobError(text);
    return `${m[1]}${m[2] ?? ''}.${this.serverName}`;
  }

  /** Children waiting on `parentId` (-W depend), so its end can release or cancel them. */
  async addDependents(parentIds: string[], childId: string): Promise<void> {
    const m = this.redis.multi();
    for (const p of parentIds) m.sadd(this.keys.dependents(p), childId);
    await m.exec();
  }

  /**
   * Write new records in one atomic step (all there or none), counted as queued (usage-lua.ts),
   * after checking `checks` (max_queued: entity key, limit, jobs this batch adds to it). Throws
   * QueuedLimitError naming the first entity over its limit; then nothing is written.
   */
  async create(records: JobRecord[], checks: QueuedCheck[] = []): Promise<void> {
    const batch = new Map(records.map((r) => [r.id, r]));
    const out = records.map((r) => {
      const { id, spec: full, depend, array, ...rest } = r;
      // An array task shares its array's script rather than storing a copy (shared-script.ts).
      const { spec, scriptOf } = storedSpec(r, batch);
      if (scriptOf !== undefined) rest.scriptOf = scriptOf;
      const f: string[] = ['spec', JSON.stringify(spec)];
      if (depend) f.push('depend', JSON.stringify(depend));
      if (array) f.push('array', JSON.stringify(array));
      else f.push('acct', acctOf(id, full));
      for (const [k, v] of pairsOf(encode(rest))) if (v !== '') f.push(k, v);
      return { k: this.keys.job(id), id, seq: r.seq, top: r.arrayParent === undefined, snap: r.snapshotId ?? '', f };
    });
    const [ok, index, held] = await this.scripts.gcCreate(
      this.keys.usage,
      this.keys.jobs,
      this.keys.jobsTop,
      this.keys.snapshotRefs,
      JSON.stringify(checks.map((c) => [c.key, c.max, c.amount])),
      JSON.stringify(out),
    );
    if (ok !== 1) throw new QueuedLimitError(checks[(index ?? 1) - 1], held ?? 0);
  }

  /**
   * gcqmove: every job of `moves` goes to its new spec's queue in one atomic step (usage-lua.ts
   * MOVE_LUA), or none does: each must still be movable and hold the spec it was read with,
   * and `checks` (max_queued of the destination entities, with the moved jobs as the amount)
   * must hold. An array's record (no acct) moves without being counted.
   */
  async move(moves: QueueMove[], checks: QueuedCheck[], patch: FieldPatch = {}): Promise<MoveResult> {
    const jobs = moves.map((m) => ({
      k: this.keys.job(m.id),
      was: JSON.stringify(m.was),
      f: [...encode(patch), 'spec', JSON.stringify(m.spec), 'acct', acctOf(m.id, m.spec)],
    }));
    const [ok, ...rest] = await this.scripts.gcMove(
      this.keys.usage,
      JSON.stringify(JOB_TRANSITIONS.move),
      JSON.stringify(checks.map((c) => [c.key, c.max, c.amount])),
      JSON.stringify(jobs),
    );
    if (ok === 2) return { ok: false, why: 'limit', error: new QueuedLimitError(checks[Number(rest[0]) - 1], Number(rest[1])) };
    if (ok === 0) return { ok: false, why: 'state', id: moves[Number(rest[0]) - 1].id, state: rest[1] === '' ? undefined : (rest[1] as JobState) };
    if (ok === 3) return { ok: false, why: 'changed', id: moves[Number(rest[0]) - 1].id };
    const records = moves.map((m, i) => decode(m.id, pairs(rest[i] as string[])));
    moves.forEach((m, i) => {
      const record = records[i];
      this.events.emit({ jobId: m.id, event: 'move', from: record.state, to: record.state, record });
    });
    return { ok: true, records };
  }

  /**
   * The dispatcher's admit + reserve + run in one step (usage-lua.ts START_LUA): the job goes
   * Q/W -> R only if every running limit still holds with it counted, across every gcd on this
   * Redis. `limits` per entity in usageKeys order; `throttle` the array's %max.
   */
  async start(id: string, limits: RunLimits[], throttle: number | undefined, patch: FieldPatch = {}): Promise<StartResult> {
    const lim = JSON.stringify(limits.map((l) => [l.maxRunning, l.maxNcpus, l.maxMem].map((v) => (v === undefined || v === Infinity ? -1 : v))));
    const res = await this.scripts.gcStart(
      this.keys.job(id),
      this.keys.usage,
      JSON.stringify(JOB_TRANSITIONS.run),
      lim,
      String(throttle ?? -1),
      ...encode(patch),
    );
    const [ok, cur] = res;
    const from = cur === '' ? undefined : (cur as JobState);
    if (ok === 2) return { ok: false, from, limited: (res.slice(2) as Array<number | string>).map(Number) };
    if (ok !== 1 || from === undefined) return { ok: false, from, error: new JobStateError(id, from, 'run') };
    const record = decode(id, pairs((res[2] as string[] | undefined) ?? []));
    this.events.emit({ jobId: id, event: 'run', from, to: record.state, record });
    return { ok: true, from, to: record.state, record };
  }

  /** Recount every usage count from the job records (gcd start); returns the records looked at. */
  async rebuildUsage(): Promise<number> {
    // Records written before counts were kept in Redis have no acct (or an older one): write it first.
    const p = this.redis.pipeline();
    let n = 0;
    for (const j of await this.list()) {
      if (j.array || j.state === 'F') continue;
      p.hset(this.keys.job(j.id), 'acct', acctOf(j.id, j.spec));
      n++;
    }
    if (n) await p.exec();
    return this.scripts.gcRebuildUsage(this.keys.usage, this.keys.jobs, this.keys.job(''));
  }

  async get(id: string): Promise<JobRecord> {
    const h = await this.redis.hgetall(this.keys.job(id));
    if (!h.state) throw new UnknownJobError(id);
    return decode(id, h);
  }

  async tryGet(id: string): Promise<JobRecord | undefined> {
    const h = await this.redis.hgetall(this.keys.job(id));
    return h.state ? decode(id, h) : undefined;
  }

  /** Jobs in sequence order (array tasks only with `tasks`); pipelined in chunks. */
  async list(opts: { tasks?: boolean } = { tasks: true }): Promise<JobRecord[]> {
    const ids = await this.redis.zrange(opts.tasks === false ? this.keys.jobsTop : this.keys.jobs, 0, -1);
    const out: JobRecord[] = [];
    const chunk = 5000;
    for (let i = 0; i < ids.length; i += chunk) {
      const part = ids.slice(i, i + chunk);
      const p = this.redis.pipeline();
      for (const id of part) p.hgetall(this.keys.job(id));
      const res = (await p.exec()) ?? [];
      res.forEach(([err, h], j) => {
        const hash = h as Record<string, string>;
        if (!err && hash && hash.state) out.push(decode(part[j], hash));
      });
    }
    return out;
  }

  /** Write fields that are not the state (comment, usage, output paths) of a record that exists. */
  async update(id: string, patch: FieldPatch): Promise<void> {
    const fields = encode(patch);
    if (fields.length) await this.scripts.gcUpdate(this.keys.job(id), ...fields);
  }

  /**
   * Apply `event` (job-states.ts) with compare-and-set: the state becomes the table's to-state
   * and `patch` is written only if the current state is one of the event's from-states.
   * On success JobEvents hears of it. A refusal returns the current state and a JobStateError
   * for callers to throw where a refusal is an error rather than a lost race.
   */
  async transition(id: string, event: JobEvent, patch: FieldPatch = {}, spec?: JobSpec): Promise<TransitionResult> {
    const fields = encode(patch);
    if (spec) fields.push('spec', JSON.stringify(spec));
    if (spec) fields.push('acct', acctOf(id, spec));
    const [ok, cur, flat] = await this.scripts.gcTransition(this.keys.job(id), this.keys.usage, JSON.stringify(JOB_TRANSITIONS[event]), ...fields);
    const from = cur === '' ? undefined : (cur as JobState);
    if (ok !== 1 || from === undefined) return { ok: false, from, error: new JobStateError(id, from, event) };
    const record = decode(id, pairs(flat ?? []));
    const t = { jobId: id, event, from, to: record.state, record };
    this.events.emit(t);
    return { ok: true, from, to: record.state, record };
  }

  /**
   * transition() with a new spec, written only if the record still holds `was` (the spec it was
   * read with): a gcqalter cannot write back a spec a concurrent gcqmove or gcqalter has changed
   * meanwhile (which would undo the other, queue and counts included). A refusal has the same
   * shape as transition()'s; the caller reads the record again to tell the two apart.
   */
  async transitionSpec(id: string, event: JobEvent, patch: FieldPatch, was: JobSpec, spec: JobSpec): Promise<TransitionResult> {
    const fields = [...encode(patch), 'spec', JSON.stringify(spec), 'acct', acctOf(id, spec)];
    return this.transitionIf(id, event, 'spec', JSON.stringify(was), fields);
  }

  /** The script a job runs: its own, or its array's (stored once; shared-script.ts). */
  async scriptOf(job: JobRecord): Promise<string | undefined> {
    if (job.spec.script !== undefined || job.scriptOf === undefined) return job.spec.script;
    const cached = this.sharedScripts.get(job.scriptOf);
    if (cached !== undefined) return cached;
    const text = await this.redis.hget(this.keys.job(job.scriptOf), 'spec');
    const script = text ? (JSON.parse(text) as JobSpec).script : undefined;
    if (script === undefined) throw new UnknownJobError(`${job.scriptOf} (the script of ${job.id})`);
    this.sharedScripts.set(job.scriptOf, script);
    return script;
  }

  /**
   * transition() of a job that runs on a host: refused (as a lost race) unless the record still
   * names `execHost` as its host. A job without a host is guarded by nothing (single-host records).
   */
  async transitionOnHost(id: string, execHost: string | undefined, event: JobEvent, patch: FieldPatch = {}): Promise<TransitionResult> {
    if (execHost === undefined) return this.transition(id, event, patch);
    return this.transitionIf(id, event, 'execHost', execHost, encode(patch));
  }

  /** The compare-and-set transition guarded by one more field holding `expected` (one Lua step). */
  private async transitionIf(id: string, event: JobEvent, field: string, expected: string, fields: string[]): Promise<TransitionResult> {
    const [ok, cur, flat] = await this.scripts.gcTransitionIf(
      this.keys.job(id),
      this.keys.usage,
      JSON.stringify(JOB_TRANSITIONS[event]),
      field,
      expected,
      ...fields,
    );
    const from = cur === '' ? undefined : (cur as JobState);
    if (ok !== 1 || from === undefined) return { ok: false, from, error: new JobStateError(id, from, event) };
    const record = decode(id, pairs(flat ?? []));
    this.events.emit({ jobId: id, event, from, to: record.state, record });
    return { ok: true, from, to: record.state, record };
  }

  async setArray(id: string, array: NonNullable<JobRecord['array']>): Promise<void> {
    await this.redis.hset(this.keys.job(id), 'array', JSON.stringify(array));
  }

  async incrRunCount(id: string): Promise<number> {
    return this.redis.hincrby(this.keys.job(id), 'runCount', 1);
  }

  /**
   * The `resnapshot` transition: a held job now runs in snapshot `to`, its reference moved with
   * it in the same compare-and-set. `lastRefOf` names the old snapshot when no job needs it any
   * more (the caller releases it).
   */
  async resnapshot(id: string, to: string): Promise<TransitionResult & { lastRefOf?: string }> {
    const [ok, cur, flat, last] = await this.scripts.gcResnapshot(this.keys.job(id), this.keys.snapshotRefs, JSON.stringify(JOB_TRANSITIONS.resnapshot), to);
    const from = cur === '' ? undefined : (cur as JobState);
    if (ok !== 1 || from === undefined) return { ok: false, from, error: new JobStateError(id, from, 'resnapshot') };
    const record = decode(id, pairs(flat ?? []));
    this.events.emit({ jobId: id, event: 'resnapshot', from, to: record.state, record });
    return { ok: true, from, to: record.state, record, ...(last ? { lastRefOf: last } : {}) };
  }

  /**
   * Drop job `id`'s reference to its snapshot, at most once however often it is called; true
   * when it was the last and the snapshot may go.
   */
  async releaseSnapshotRef(id: string, snapshotId: string): Promise<boolean> {
    return (await this.scripts.gcReleaseRef(this.keys.job(id), this.keys.snapshotRefs, snapshotId)) === 1;
  }

  /** Jobs whose -W depend names `parentId`; forgetDependents once each has been reviewed. */
  async dependentsOf(parentId: string): Promise<string[]> {
    return this.redis.smembers(this.keys.dependents(parentId));
  }

  async forgetDependents(parentId: string): Promise<void> {
    await this.redis.del(this.keys.dependents(parentId));
  }

  async snapshotRefs(): Promise<Map<string, number>> {
    const h = await this.redis.hgetall(this.keys.snapshotRefs);
    return new Map(Object.entries(h).map(([k, v]) => [k, Number(v)]));
  }

  /** Finished jobs are history: they expire after `ttlSec` and leave no key behind. */
  async expire(id: string, ttlSec: number): Promise<void> {
    await this.redis.expire(this.keys.job(id), ttlSec);
  }

  /**
   * gcqdel -x: forget a finished, settled job at once (its record and index entries), as its
   * history expiry would later. False when it is not (or no longer) a settled F record.
   */
  async purge(id: string): Promise<boolean> {
    const j = await this.tryGet(id);
    if (!j || j.state !== 'F' || j.settling) return false;
    await this.redis.multi().del(this.keys.job(id)).zrem(this.keys.jobs, id).zrem(this.keys.jobsTop, id).exec();
    return true;
  }

  /** Remove index entries whose record has expired. */
  async pruneIndex(): Promise<number> {
    const ids = await this.redis.zrange(this.keys.jobs, 0, -1);
    const p = this.redis.pipeline();
    for (const id of ids) p.exists(this.keys.job(id));
    const res = (await p.exec()) ?? [];
    const gone = ids.filter((_, i) => res[i]?.[1] === 0);
    for (let i = 0; i < gone.length; i += 1000) {
      const part = gone.slice(i, i + 1000);
      await this.redis
        .multi()
        .zrem(this.keys.jobs, ...part)
        .zrem(this.keys.jobsTop, ...part)
        .exec();
    }
    return gone.length;
  }
}
