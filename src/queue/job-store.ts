import type { Redis } from 'ioredis';
import { UnknownJobError } from '../errors.js';
import type { JobRecord, JobSpec, JobState } from './job.js';
import type { Keys } from './keys.js';

/**
 * Job records in Redis, one hash per job: PBS state lives here, BullMQ only carries the
 * job through the run queue. State changes are compare-and-set (Lua) so that gcqdel and a
 * worker picking the same job cannot both win.
 */

const TRANSITION_LUA = `
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return -1 end
local allowed = cjson.decode(ARGV[1])
local ok = false
for _, s in ipairs(allowed) do if s == cur then ok = true end end
if not ok then return cur end
for i = 2, #ARGV, 2 do
  if ARGV[i+1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
return 1
`;

type Field = Exclude<keyof JobRecord, 'spec' | 'id' | 'depend' | 'array'>;

export type JobPatch = Partial<Pick<JobRecord, Field>>;

export type TransitionResult = { ok: true } | { ok: false; state: JobState | undefined };

function encode(patch: JobPatch): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(patch)) {
    out.push(k, v === undefined || v === null ? '' : String(v));
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
  const idx = num('arrayIndex');
  if (idx !== undefined) rec.arrayIndex = idx;
  return rec;
}

export class JobStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    readonly serverName: string,
  ) {
    redis.defineCommand('gcTransition', { numberOfKeys: 1, lua: TRANSITION_LUA });
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

  async takeDependents(parentId: string): Promise<string[]> {
    const key = this.keys.dependents(parentId);
    const [[, ids]] = (await this.redis.multi().smembers(key).del(key).exec()) as [[Error | null, string[]], unknown];
    return ids;
  }

  /** Write new records (one MULTI, so a batch is all there or not at all). */
  async create(records: JobRecord[]): Promise<void> {
    const m = this.redis.multi();
    for (const r of records) {
      const { id, spec, depend, array, ...rest } = r;
      const json: string[] = [];
      if (depend) json.push('depend', JSON.stringify(depend));
      if (array) json.push('array', JSON.stringify(array));
      m.hset(this.keys.job(id), 'spec', JSON.stringify(spec), ...json, ...encode(rest as JobPatch));
      m.zadd(this.keys.jobs, r.seq, id);
      if (r.arrayParent === undefined) m.zadd(this.keys.jobsTop, r.seq, id);
      if (r.snapshotId) m.hincrby(this.keys.snapshotRefs, r.snapshotId, 1);
    }
    await m.exec();
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
        if (!err && hash && hash.state) out.push(decode(part[j]!, hash));
      });
    }
    return out;
  }

  async update(id: string, patch: JobPatch): Promise<void> {
    await this.redis.hset(this.keys.job(id), ...encode(patch));
  }

  /** Apply `patch` only if the job's state is one of `from`. */
  async transition(id: string, from: JobState[], patch: JobPatch): Promise<TransitionResult> {
    const r = (await (this.redis as unknown as { gcTransition: (...a: string[]) => Promise<number | string> }).gcTransition(
      this.keys.job(id),
      JSON.stringify(from),
      ...encode(patch),
    )) as number | string;
    if (r === 1) return { ok: true };
    return { ok: false, state: r === -1 ? undefined : (r as JobState) };
  }

  async setArray(id: string, array: NonNullable<JobRecord['array']>): Promise<void> {
    await this.redis.hset(this.keys.job(id), 'array', JSON.stringify(array));
  }

  /** Replace a job's spec (gcqalter) only while its state is one of `from`. */
  async replaceIfState(id: string, from: JobState[], spec: JobSpec, patch: JobPatch): Promise<boolean> {
    const r = await this.transition(id, from, { ...patch, spec: JSON.stringify(spec) } as unknown as JobPatch);
    return r.ok;
  }

  async incrRunCount(id: string): Promise<number> {
    return this.redis.hincrby(this.keys.job(id), 'runCount', 1);
  }

  /** Point a job at another snapshot, moving its reference (the old one is released by the caller). */
  async moveSnapshotRef(id: string, to: string): Promise<void> {
    await this.redis.multi().hset(this.keys.job(id), 'snapshotId', to).hincrby(this.keys.snapshotRefs, to, 1).exec();
  }

  /** Drop one reference to a snapshot; true when it was the last and the snapshot may go. */
  async releaseSnapshotRef(snapshotId: string): Promise<boolean> {
    const left = await this.redis.hincrby(this.keys.snapshotRefs, snapshotId, -1);
    if (left <= 0) {
      await this.redis.hdel(this.keys.snapshotRefs, snapshotId);
      return true;
    }
    return false;
  }

  async snapshotRefs(): Promise<Map<string, number>> {
    const h = await this.redis.hgetall(this.keys.snapshotRefs);
    return new Map(Object.entries(h).map(([k, v]) => [k, Number(v)]));
  }

  /** Finished jobs are history: they expire after `ttlSec` and leave no key behind. */
  async expire(id: string, ttlSec: number): Promise<void> {
    await this.redis.expire(this.keys.job(id), ttlSec);
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
      await this.redis.multi().zrem(this.keys.jobs, ...part).zrem(this.keys.jobsTop, ...part).exec();
    }
    return gone.length;
  }
}
