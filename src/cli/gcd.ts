import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { loadSettings, type Settings } from '../config/settings.js';
import { ApiServer } from '../api/server.js';
import { ChannelServer } from '../api/channels.js';
import { acquireLock } from '../daemon/lock.js';
import { createBackend } from '../daemon/backend.js';
import { CopperError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { keysFor } from '../queue/keys.js';
import { bullConnection, connectRedis, type RedisTarget } from '../redis/connection.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../redis/embedded.js';
import { defaultCapacity } from '../scheduler/capacity.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { parseArgs } from './tools/args.js';
import { QuotaWatcher } from '../config/quotas.js';
import { startObservers } from '../daemon/observers.js';

/**
 * gcd: owns Redis (unless GC_REDIS_URL), the scheduler, the headnodes and the API. One per
 * state folder. SIGTERM/SIGINT stop it cleanly: running jobs' clones are destroyed and the
 * jobs requeued (or ended, if -r n); headnodes keep running and are re-attached next start.
 */
export async function main(argv: string[]): Promise<number> {
  let settings: Settings;
  try {
    const p = await parseArgs<{ 'state-dir'?: string }>('gcd', argv, (y) =>
      y.usage('gcd [--state-dir DIR]: run the Copper daemon in the foreground').option('state-dir', { type: 'string', describe: 'state folder (GC_STATE_DIR)' }),
    );
    if (p.kind === 'help') {
      process.stdout.write(p.help + '\n');
      return 0;
    }
    const stateDir = p.args['state-dir'];
    settings = loadSettings(stateDir ? { ...process.env, GC_STATE_DIR: stateDir } : process.env);
  } catch (e) {
    process.stderr.write(`gcd: ${errorMessage(e)}\n`);
    return 2;
  }
  try {
    return await run(settings);
  } catch (e) {
    process.stderr.write(`gcd: ${errorMessage(e).split('\n')[0]}\n`);
    if (!(e instanceof CopperError)) log.error('gcd failed', { stack: (e as Error).stack });
    return e instanceof CopperError ? e.exitCode : 1;
  }
}

async function run(settings: Settings): Promise<number> {
  mkdirSync(settings.stateDir, { recursive: true, mode: 0o755 });
  const unlock = acquireLock(join(settings.stateDir, 'gcd.pid'), settings.stateDir);
  const cleanups: Array<() => Promise<void> | void> = [unlock];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) {
      const t0 = Date.now();
      await Promise.resolve(c()).catch((e) => log.error('shutdown step failed', { error: errorMessage(e) }));
      log.debug('shutdown step', { step: c.toString().slice(0, 60), ms: Date.now() - t0 });
    }
  };
  try {
    let target: RedisTarget;
    let embedded: EmbeddedRedis | undefined;
    if (settings.redisUrl) target = { url: settings.redisUrl };
    else {
      embedded = await startEmbeddedRedis(settings.stateDir);
      target = embedded.target;
      cleanups.push(() => embedded!.stop());
    }
    const redis: Redis = await connectRedis(target);
    cleanups.push(() => redis.disconnect());

    let api: ApiServer | undefined;
    const channels = new ChannelServer(settings.stateDir, (req, res, actor) => api!.handle(req, res, actor));
    cleanups.push(() => channels.closeAll());
    // Admin limits: a broken file at start stops gcd; later a broken edit keeps the old settings.
    const quotas = new QuotaWatcher({
      dir: settings.configDir,
      onReload: (c) => log.info('quota settings reloaded', { source: c.source }),
      onError: (e) => log.error(`quota settings not reloaded, previous ones stay: ${e.message}`),
    });
    const initial = quotas.start();
    cleanups.push(() => quotas.close());
    // One quota watcher for jobs and clusters: max_clones comes from the same file.
    const backend = await createBackend(settings, channels, () => quotas.current());
    cleanups.push(() => backend.close());

    const observers = startObservers(settings);
    const scheduler = new Scheduler({
      redis,
      connection: bullConnection(target),
      keys: keysFor(settings.keyPrefix),
      serverName: settings.serverName,
      driver: backend.driver,
      stateDir: settings.stateDir,
      capacity: defaultCapacity(),
      killDelayMs: Number(process.env.GC_KILL_DELAY_MS ?? 10_000),
      lockDurationMs: Number(process.env.GC_LOCK_MS ?? 30_000),
      historyTtlSec: initial.historyTtlSec,
      quotas: () => quotas.current(),
      lifecycle: observers.lifecycle,
    });
    api = new ApiServer({ scheduler, headnodes: backend.headnodes, serverName: settings.serverName, gc: backend.gc, ...observers.services });
    await scheduler.start();
    cleanups.push(() => scheduler.close());
    await observers.serveMetrics(scheduler);
    cleanups.push(() => observers.close());
    await api.listenAdmin(settings.socketPath);
    cleanups.push(() => api!.close());
    log.info('gcd ready', { stateDir: settings.stateDir, driver: backend.driver.name, redis: embedded ? 'embedded' : 'external', pid: process.pid });

    await new Promise<void>((resolve) => {
      const stop = (sig: string): void => {
        log.info('gcd stopping', { signal: sig });
        resolve();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    await cleanup();
    return 0;
  } catch (e) {
    await cleanup();
    throw e;
  }
}
