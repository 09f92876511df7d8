import type { Redis } from 'ioredis';
import type { Driver } from '../src/drivers/driver.js';
import { keysFor } from '../src/queue/keys.js';
import { bullConnection, connectRedis } from '../src/redis/connection.js';
import { startEmbeddedRedis } from '../src/redis/embedded.js';
import type { SchedulerOptions } from '../src/scheduler/scheduler.js';

/** The Scheduler options a benchmark's redis-server decides; the bench adds capacity and the rest. */
export type BenchSchedulerBase = Pick<SchedulerOptions, 'redis' | 'connection' | 'keys' | 'serverName' | 'driver' | 'stateDir'>;

/** An embedded redis-server started for one benchmark. */
export interface BenchRedis {
  redis: Redis;
  base(o: { prefix: string; serverName: string; driver: Driver; stateDir: string }): BenchSchedulerBase;
  /** Disconnect and stop the server (its files stay in the folder the bench gave). */
  stop(): Promise<void>;
}

export async function startBenchRedis(dir: string): Promise<BenchRedis> {
  const server = await startEmbeddedRedis(dir);
  const redis = await connectRedis(server.target);
  return {
    redis,
    base: (o) => ({
      redis,
      connection: bullConnection(server.target),
      keys: keysFor(o.prefix),
      serverName: o.serverName,
      driver: o.driver,
      stateDir: o.stateDir,
    }),
    async stop(): Promise<void> {
      redis.disconnect();
      await server.stop();
    },
  };
}
