/**
 * The node registry: every compute host (the server too, when it runs jobs) in Redis, so that
 * any gcd sees the grid's hosts, their state and their use. Records persist across restarts
 * (an admin's offline stays offline); liveness is the heartbeat key's TTL alone.
 *
 * State: `up` takes jobs; `offline` (gc node offline) and `draining` (gc node drain, which
 * turns offline by itself once the host runs nothing) take no new jobs but finish theirs;
 * `down`: the heartbeat lapsed and the failure monitor settled its jobs. The admin's choice is
 * kept apart (`adminState`), so a host that comes back after being down returns to it.
 */
import type { Redis } from 'ioredis';
import { NotFoundError } from '../errors.js';
import type { Keys } from '../queue/keys.js';
import type { CapacityLimits } from '../scheduler/capacity.js';

export type NodeState = 'up' | 'down' | 'offline' | 'draining';
export type AdminState = 'up' | 'offline' | 'draining';
export type NodeRole = 'server' | 'node';

/** What a host says of itself when it (re)joins. */
export interface NodeInfo {
  name: string;
  role: NodeRole;
  ncpus: number;
  memMiB: number;
  tmpfsMiB: number;
  accel: string;
  version: string;
  /** grid-relay's job-control address of this host, if it serves one. */
  controlUrl?: string;
}

/** What a host reports on every heartbeat. */
export interface NodeUsage {
  usedNcpus: number;
  usedMemMiB: number;
  jobs: string[];
  /** Snapshots in this host's cache (placement prefers a host holding the job's). */
  cachedSnapshots?: string[];
}

export interface NodeRecord extends NodeInfo, NodeUsage {
  state: NodeState;
  adminState: AdminState;
  comment: string;
  /** Snapshot ids held in this host's cache (written by the snapshot cache, grid-snapshots). */
  cachedSnapshots: string[];
  startedAt: number;
  heartbeatAt: number;
  /** When the failure monitor marked it down. */
  downAt?: number;
  /** Its heartbeat key exists now. */
  alive: boolean;
}

/** KEYS: record, alive, nodes set. ARGV: name, deadMs, then field/value pairs. Keeps the admin's state. */
const REGISTER_LUA = `
local admin = redis.call('HGET', KEYS[1], 'adminState')
if not admin or admin == '' then admin = 'up' end
redis.call('HSET', KEYS[1], 'adminState', admin, 'state', admin)
redis.call('HDEL', KEYS[1], 'downAt')
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return admin
`;

/**
 * KEYS: record, alive. ARGV: deadMs, now, usedNcpus, usedMemMiB, jobs (comma list).
 * Returns the host's state; 'down' means it was declared dead meanwhile: the beat writes
 * nothing and the host must drop its runs and register again. A draining host with no job
 * becomes offline here.
 */
const BEAT_LUA = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state == 'down' then return 'down' end
redis.call('HSET', KEYS[1], 'usedNcpus', ARGV[3], 'usedMemMiB', ARGV[4], 'jobs', ARGV[5], 'heartbeatAt', ARGV[2], 'cachedSnapshots', ARGV[6])
if state == 'draining' and ARGV[5] == '' then
  redis.call('HSET', KEYS[1], 'state', 'offline', 'adminState', 'offline')
  state = 'offline'
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return state
`;

/** KEYS: record, alive. ARGV: now. 1 when this call marked the host down (once per death). */
const MARK_DOWN_LUA = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'down' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'down', 'downAt', ARGV[1], 'usedNcpus', '0', 'usedMemMiB', '0', 'jobs', '')
return 1
`;

/**
 * KEYS: record. ARGV: adminState, comment ('-' keeps it). The shown state follows unless the
 * host is down (it shows the admin's choice once it is back).
 */
const SET_ADMIN_LUA = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
redis.call('HSET', KEYS[1], 'adminState', ARGV[1])
if state ~= 'down' then redis.call('HSET', KEYS[1], 'state', ARGV[1]) end
if ARGV[2] ~= '-' then redis.call('HSET', KEYS[1], 'comment', ARGV[2]) end
return 1
`;

interface RegistryScripts {
  gcNodeRegister(rec: string, alive: string, set: string, name: string, deadMs: number, ...fields: string[]): Promise<string>;
  gcNodeBeat(rec: string, alive: string, deadMs: number, now: number, ncpus: number, mem: number, jobs: string, cached: string): Promise<string>;
  gcNodeMarkDown(rec: string, alive: string, now: number): Promise<number>;
  gcNodeSetAdmin(rec: string, admin: AdminState, comment: string): Promise<number>;
}

/** An unknown host named to `gc node`. */
export class UnknownNodeError extends NotFoundError {
  constructor(readonly node: string) {
    super(`unknown node ${node} (gc nodes lists them)`);
  }
}

const STATES: readonly NodeState[] = ['up', 'down', 'offline', 'draining'];

function list(s: string | undefined): string[] {
  return (s ?? '').split(',').filter(Boolean);
}

function decode(name: string, h: Record<string, string>, alive: boolean): NodeRecord {
  const n = (k: string): number => Number(h[k] ?? 0) || 0;
  const state = (STATES as readonly string[]).includes(h.state ?? '') ? (h.state as NodeState) : 'down';
  const admin = h.adminState === 'offline' || h.adminState === 'draining' ? h.adminState : 'up';
  const rec: NodeRecord = {
    name,
    role: h.role === 'server' ? 'server' : 'node',
    ncpus: n('ncpus'),
    memMiB: n('memMiB'),
    tmpfsMiB: n('tmpfsMiB'),
    accel: h.accel ?? '',
    version: h.version ?? '',
    state,
    adminState: admin,
    comment: h.comment ?? '',
    usedNcpus: n('usedNcpus'),
    usedMemMiB: n('usedMemMiB'),
    jobs: list(h.jobs),
    cachedSnapshots: list(h.cachedSnapshots),
    startedAt: n('startedAt'),
    heartbeatAt: n('heartbeatAt'),
    alive,
  };
  if (h.controlUrl) rec.controlUrl = h.controlUrl;
  if (h.downAt) rec.downAt = n('downAt');
  return rec;
}

export class NodeRegistry {
  private readonly scripts: RegistryScripts;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    /** The heartbeat key's TTL: a host silent this long is dead. */
    readonly deadMs: number,
  ) {
    redis.defineCommand('gcNodeRegister', { numberOfKeys: 3, lua: REGISTER_LUA });
    redis.defineCommand('gcNodeBeat', { numberOfKeys: 2, lua: BEAT_LUA });
    redis.defineCommand('gcNodeMarkDown', { numberOfKeys: 2, lua: MARK_DOWN_LUA });
    redis.defineCommand('gcNodeSetAdmin', { numberOfKeys: 1, lua: SET_ADMIN_LUA });
    this.scripts = redis as unknown as RegistryScripts;
  }

  /** Join (or rejoin) the grid: returns the admin's state the host comes back to. */
  async register(info: NodeInfo): Promise<AdminState> {
    const now = Date.now();
    const fields: string[] = [
      'name',
      info.name,
      'role',
      info.role,
      'ncpus',
      String(info.ncpus),
      'memMiB',
      String(info.memMiB),
      'tmpfsMiB',
      String(info.tmpfsMiB),
      'accel',
      info.accel,
      'version',
      info.version,
      'controlUrl',
      info.controlUrl ?? '',
      'startedAt',
      String(now),
      'heartbeatAt',
      String(now),
      'usedNcpus',
      '0',
      'usedMemMiB',
      '0',
      'jobs',
      '',
    ];
    const k = this.keys;
    const admin = await this.scripts.gcNodeRegister(k.node(info.name), k.nodeAlive(info.name), k.nodes, info.name, this.deadMs, ...fields);
    return admin === 'offline' || admin === 'draining' ? admin : 'up';
  }

  /** Renew the heartbeat with the host's use; returns its state ('down': it was declared dead, rejoin). */
  async beat(name: string, u: NodeUsage): Promise<NodeState | 'gone'> {
    const r = await this.scripts.gcNodeBeat(
      this.keys.node(name),
      this.keys.nodeAlive(name),
      this.deadMs,
      Date.now(),
      u.usedNcpus,
      u.usedMemMiB,
      u.jobs.join(','),
      (u.cachedSnapshots ?? []).join(','),
    );
    return r === 'gone' ? 'gone' : (r as NodeState);
  }

  /** Mark a host down if its heartbeat lapsed; true only for the one call that did it. */
  async markDownIfLapsed(name: string): Promise<boolean> {
    return (await this.scripts.gcNodeMarkDown(this.keys.node(name), this.keys.nodeAlive(name), Date.now())) === 1;
  }

  /** gc node offline|online|drain: `comment` undefined keeps the present one. */
  async setAdminState(name: string, admin: AdminState, comment: string | undefined): Promise<NodeRecord> {
    const ok = await this.scripts.gcNodeSetAdmin(this.keys.node(name), admin, comment ?? '-');
    if (ok !== 1) throw new UnknownNodeError(name);
    const rec = await this.get(name);
    if (!rec) throw new UnknownNodeError(name);
    return rec;
  }

  /** A host's state as written now (one HGET: the dispatcher asks before each job it takes). */
  async stateOf(name: string): Promise<NodeState | undefined> {
    const s = await this.redis.hget(this.keys.node(name), 'state');
    return s && (STATES as readonly string[]).includes(s) ? (s as NodeState) : undefined;
  }

  async get(name: string): Promise<NodeRecord | undefined> {
    const [h, alive] = await Promise.all([this.redis.hgetall(this.keys.node(name)), this.redis.exists(this.keys.nodeAlive(name))]);
    return h.state ? decode(name, h, alive === 1) : undefined;
  }

  /** Every registered host, by name. */
  async list(): Promise<NodeRecord[]> {
    const names = (await this.redis.smembers(this.keys.nodes)).sort();
    if (names.length === 0) return [];
    const p = this.redis.pipeline();
    for (const n of names) p.hgetall(this.keys.node(n)).exists(this.keys.nodeAlive(n));
    const res = (await p.exec()) ?? [];
    const out: NodeRecord[] = [];
    names.forEach((n, i) => {
      const h = res[2 * i]?.[1] as Record<string, string> | undefined;
      const alive = res[2 * i + 1]?.[1] === 1;
      if (h?.state) out.push(decode(n, h, alive));
    });
    return out;
  }

  /** A host stopping: its heartbeat goes at once, so the monitor need not wait for the TTL. */
  async leave(name: string): Promise<void> {
    await this.redis.del(this.keys.nodeAlive(name));
  }

  /**
   * gc node delete: forget a host that is down for good. Refused while it is alive (it would
   * register again at its next start anyway).
   */
  async forget(name: string): Promise<void> {
    const rec = await this.get(name);
    if (!rec) throw new UnknownNodeError(name);
    if (rec.alive) throw new NotFoundError(`node ${name} is alive: stop its gcd first`);
    await this.redis.multi().del(this.keys.node(name)).srem(this.keys.nodes, name).exec();
  }
}

/**
 * The largest host now: per resource, the most any live host offers (PBS refuses a job above
 * it). Live = heartbeating, whatever its admin state: an offline host is coming back, and a
 * job it alone could run waits for it rather than being refused. Undefined with no live host.
 */
export function largestHost(nodes: readonly NodeRecord[]): CapacityLimits | undefined {
  const live = nodes.filter((n) => n.alive && n.state !== 'down');
  if (live.length === 0) return undefined;
  return { ncpus: Math.max(...live.map((n) => n.ncpus)), memMiB: Math.max(...live.map((n) => n.memMiB)) };
}
