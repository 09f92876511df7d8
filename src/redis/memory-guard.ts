/**
 * Redis's maxmemory, seen from the submit path (issue 13 item 10). Redis runs `noeviction`
 * with a maxmemory: past it every write is refused with an `OOM ...` reply. A submission is
 * refused before that point (at 90%), so the room left lets queued and running jobs still
 * change state and end; a write refused anyway becomes one line, not a stack.
 */
import type { Redis } from 'ioredis';
import { UnavailableError } from '../errors.js';

export class RedisFullError extends UnavailableError {
  constructor(
    readonly usedBytes: number,
    readonly maxBytes: number,
  ) {
    super(
      maxBytes > 0
        ? `job store full: Redis uses ${mib(usedBytes)} of its maxmemory ${mib(maxBytes)} (submissions stop at 90%); nothing was queued, try again when jobs have ended`
        : 'job store full: Redis refused the write (maxmemory reached); nothing was queued',
    );
  }
}

/** Share of maxmemory above which submissions are refused. */
export const SUBMIT_FILL_LIMIT = 0.9;

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** used_memory and maxmemory (0: none) from INFO memory. */
export async function redisMemory(redis: Redis): Promise<{ used: number; max: number }> {
  const text = await redis.info('memory');
  const field = (k: string): number => Number(new RegExp(`^${k}:(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { used: field('used_memory'), max: field('maxmemory') };
}

/** Refuse a submission while Redis is above SUBMIT_FILL_LIMIT of its maxmemory. */
export async function checkRedisRoom(redis: Redis): Promise<void> {
  const { used, max } = await redisMemory(redis);
  if (max > 0 && used > max * SUBMIT_FILL_LIMIT) throw new RedisFullError(used, max);
}

/** A Redis OOM reply (in a MULTI it comes back as EXECABORT with the OOM reason). */
export function isRedisOom(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (/^OOM /.test(err.message) || /EXECABORT[\s\S]*OOM/.test(err.message)) return true;
  // ioredis's EXECABORT error lists the replies refused while queuing.
  const previous: unknown = (err as Error & { previousErrors?: unknown }).previousErrors;
  return Array.isArray(previous) && previous.some((e) => e instanceof Error && /^OOM /.test(e.message));
}
