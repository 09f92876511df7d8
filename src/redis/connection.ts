import { Redis, type RedisOptions } from 'ioredis';
import { UnavailableError, errorMessage } from '../errors.js';

/** Either a Unix socket (the embedded server) or a URL (an admin's own Redis). */
export interface RedisTarget {
  path?: string;
  url?: string;
  password?: string;
}

export function describeTarget(t: RedisTarget): string {
  if (t.path) return `unix:${t.path}`;
  return (t.url ?? '').replace(/\/\/[^@]*@/, '//***@');
}

/**
 * A connection for BullMQ: it needs maxRetriesPerRequest null on blocking connections.
 * Fails fast on the first connect so commands say "Redis unreachable" instead of hanging.
 */
export function redisOptions(t: RedisTarget): RedisOptions {
  const base: RedisOptions = { maxRetriesPerRequest: null, enableReadyCheck: true };
  if (t.path) return { ...base, path: t.path, password: t.password };
  const u = new URL(t.url ?? 'redis://127.0.0.1:6379');
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new UnavailableError(`GC_REDIS_URL must be redis:// or rediss://, got ${u.protocol}`);
  }
  return {
    ...base,
    host: u.hostname,
    port: Number(u.port || 6379),
    password: u.password ? decodeURIComponent(u.password) : t.password,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    tls: u.protocol === 'rediss:' ? {} : undefined,
  };
}

/**
 * `waitWhileDown`: gcd's own client. Once connected, a command issued while Redis is down or
 * restarting waits for it (reconnects for ever, then replays) instead of failing, so a job's
 * state write is not lost to a Redis restart. Without it (tools, tests), commands fail after
 * a couple of retries: a tool must say "Redis down", not hang.
 */
export async function connectRedis(t: RedisTarget, timeoutMs = 3000, o: { waitWhileDown?: boolean } = {}): Promise<Redis> {
  const client = new Redis({ ...redisOptions(t), maxRetriesPerRequest: 2, lazyConnect: true, connectTimeout: timeoutMs });
  let lastError = '';
  client.on('error', (e: Error) => {
    lastError = e.message;
  });
  try {
    await client.connect();
    await client.ping();
    if (o.waitWhileDown) client.options.maxRetriesPerRequest = null;
  } catch (e) {
    client.disconnect();
    throw new UnavailableError(`Redis unreachable at ${describeTarget(t)}: ${lastError || errorMessage(e)}`);
  }
  return client;
}

/** The same options typed for BullMQ (its own RedisOptions type mirrors ioredis'). */
export function bullConnection(t: RedisTarget): import('bullmq').ConnectionOptions {
  return redisOptions(t) as import('bullmq').ConnectionOptions;
}
