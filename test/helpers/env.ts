import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { bullConnection as redisOptions, connectRedis, type RedisTarget } from '../../src/redis/connection.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded.js';

/** A real redis-server in a fresh state folder, for one test file. */
export interface TestRedis {
  dir: string;
  server: EmbeddedRedis;
  target: RedisTarget;
  client: Redis;
  stop(): Promise<void>;
}

export async function startTestRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'copper-test-'));
  const server = await startEmbeddedRedis(dir);
  const client = await connectRedis(server.target);
  return {
    dir,
    server,
    target: server.target,
    client,
    async stop() {
      client.disconnect();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export { redisOptions };
