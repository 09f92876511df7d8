/**
 * How many live clones a user may hold: the admin quota file's `max_clones` (user, group,
 * system: scheduler/policy.ts checkClone) when gcd has one, and gcd's own per-user limit
 * (GC_MAX_CLONES, default 8) wherever the file sets no user limit. A batch is checked whole:
 * `gc clone 3` with room for 2 creates none.
 */
import type { QuotaConfig } from '../config/quotas.js';
import { settings } from '../config/settings.js';
import { QuotaError } from '../errors.js';
import { checkClone, userLimit, UsageTracker } from '../scheduler/policy.js';

export interface CloneHolder {
  user: string;
  group: string;
}

export interface CloneQuota {
  /** The admin quota file, when gcd reads one. */
  config?: QuotaConfig;
  /** Per-user limit where the file sets none for the user (GC_MAX_CLONES). */
  maxPerUser: number;
}

/** GC_MAX_CLONES, a whole number >= 0. */
export function maxClonesSetting(env: NodeJS.ProcessEnv = process.env): number {
  return settings(env).maxClones;
}

/** Live clones per user, group and in total, from who holds each one. */
export function cloneUsage(holders: Iterable<CloneHolder>): UsageTracker {
  const t = new UsageTracker();
  for (const h of holders) t.onCloneCreated(h.user, h.group);
  return t;
}

/**
 * Throws QuotaError (one line, naming the limit) when `n` more clones for `who` would go over
 * a limit; creates nothing itself.
 */
export function checkCloneBatch(quota: CloneQuota, holders: Iterable<CloneHolder>, who: CloneHolder, n: number): void {
  const usage = cloneUsage(holders);
  const liveUser = usage.users.get(who.user)?.clones ?? 0;
  const refuse = (max: number, entity: string, source: string, live: number): never => {
    throw new QuotaError(
      `gc clone ${n}: refused, none created: max_clones=${max} for ${entity} (${source}) (${live} live clone${live === 1 ? '' : 's'}, ${n} more asked)`,
      { limit: 'max_clones', max, entity, amount: n, used: live, source },
    );
  };
  const cfg = quota.config;
  const fileUserLimit = cfg ? userLimit(cfg, who.user, 'maxClones') : undefined;
  if (fileUserLimit === undefined && liveUser + n > quota.maxPerUser) {
    refuse(quota.maxPerUser, `user ${who.user}`, 'gcd setting GC_MAX_CLONES', liveUser);
  }
  if (!cfg) return;
  const live = { user: liveUser, group: usage.groups.get(who.group)?.clones ?? 0, system: usage.total.clones };
  // The policy's own decision, clone by clone over a copy of the usage.
  for (let i = 0; i < n; i++) {
    try {
      checkClone(cfg, usage, who);
    } catch (err) {
      if (!(err instanceof QuotaError)) throw err;
      // checkClone says which limit (its fields); the count is the live one, before this batch.
      const which = err.fields.entity ?? `user ${who.user}`;
      const count = which.startsWith('user') ? live.user : which.startsWith('group') ? live.group : live.system;
      refuse(Number(err.fields.max), which, cfg.source, count);
    }
    usage.onCloneCreated(who.user, who.group);
  }
}
