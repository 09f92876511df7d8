import type { Redis } from 'ioredis';
import type { QuotaConfig } from '../config/quotas.js';
import type { Keys } from '../queue/keys.js';
import { baseShare, bullPriorityOf, type FairJob } from './fair-order.js';

/**
 * FairOrder's clock in Redis, so every gcd on it orders jobs on the same numbers (issue 14
 * item 2). Same rules as fair-order.ts; each step is one Lua script:
 *   <usage>:fair:vnow          the virtual time (the latest started job's tag);
 *   <usage>:fair:finish        zset user -> virtual finish of their last tagged job;
 *   <usage>:fair:split:<group> zset of the members who hold a split of the group's shares;
 *   <usage>:fair:groups        the groups that have such a zset.
 * Entries behind the clock are dropped as it moves (idle time earns nothing); the whole clock
 * is dropped when nothing is queued or running (usage-lua.ts gcFairReset), so no key outlives
 * the jobs. Numbers travel as text: Lua would truncate a number reply to an integer.
 */
const TAG_LUA = `
local vnow = tonumber(redis.call('GET', KEYS[1]) or '0')
local user, group = ARGV[1], ARGV[2]
local share = tonumber(ARGV[3])
local split = ARGV[4] == '1'
local cost = tonumber(ARGV[5])
if split then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', vnow)
  local members = redis.call('ZCOUNT', KEYS[3], '(' .. vnow, '+inf')
  if redis.call('ZSCORE', KEYS[3], user) then members = members - 1 end
  share = share / (members + 1)
end
if share < 1e-6 then share = 1e-6 end
local prev = tonumber(redis.call('ZSCORE', KEYS[2], user) or '0')
local vstart = math.max(vnow, prev)
local finish = vstart + cost / share
redis.call('ZADD', KEYS[2], finish, user)
if split then
  redis.call('ZADD', KEYS[3], finish, user)
  redis.call('SADD', KEYS[4], group)
end
return {tostring(vstart), tostring(vnow)}
`;

const DISPATCHED_LUA = `
local vnow = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = tonumber(ARGV[1])
if v > vnow then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', v)
end
return 1
`;

interface FairScripts {
  gcFairTag(
    vnow: string,
    finish: string,
    split: string,
    groups: string,
    user: string,
    group: string,
    share: string,
    isSplit: string,
    cost: string,
  ): Promise<[string, string]>;
  gcFairDispatched(vnow: string, finish: string, vstart: string): Promise<number>;
}

/** What RunQueue needs of a fair-share clock (FairOrder in memory, RedisFairOrder shared). */
export interface FairTagger {
  tag(job: FairJob): { vstart: number; bullPriority: number } | Promise<{ vstart: number; bullPriority: number }>;
  dispatched(vstart: number): void | Promise<void>;
}

export class RedisFairOrder implements FairTagger {
  private readonly scripts: FairScripts;
  constructor(
    redis: Redis,
    private readonly keys: Keys,
    private readonly config: () => QuotaConfig,
  ) {
    redis.defineCommand('gcFairTag', { numberOfKeys: 4, lua: TAG_LUA });
    redis.defineCommand('gcFairDispatched', { numberOfKeys: 2, lua: DISPATCHED_LUA });
    this.scripts = redis as unknown as FairScripts;
  }

  private key(k: string): string {
    return `${this.keys.usage}:fair:${k}`;
  }

  async tag(job: FairJob): Promise<{ vstart: number; bullPriority: number }> {
    const cfg = this.config();
    const b = baseShare(cfg, job.user, job.group);
    const [vs, vn] = await this.scripts.gcFairTag(
      this.key('vnow'),
      this.key('finish'),
      this.key(`split:${job.group}`),
      this.key('groups'),
      job.user,
      job.group,
      String(b.share),
      b.split ? '1' : '0',
      String(Math.max(1, job.ncpus)),
    );
    const vstart = Number(vs);
    return { vstart, bullPriority: bullPriorityOf(cfg, job, vstart, Number(vn)) };
  }

  async dispatched(vstart: number): Promise<void> {
    await this.scripts.gcFairDispatched(this.key('vnow'), this.key('finish'), String(vstart));
  }
}
