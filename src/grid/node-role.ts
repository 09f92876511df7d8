/**
 * `gcd --node` (and bin/gc-node): a compute host of the grid. It composes only what running
 * jobs needs: the Redis client (GC_REDIS_URL, the server's), the registry and heartbeat, the
 * job driver, the runner and dispatcher (a Scheduler that takes jobs but serves nobody). No
 * headnodes, no submitter use, no user API, no embedded Redis.
 */
import type { Redis } from 'ioredis';
import { join } from 'node:path';
import { ChannelServer } from '../api/channels.js';
import { QuotaWatcher } from '../config/quotas.js';
import type { Settings } from '../config/settings.js';
import type { CloneHandle, CloneOptions, Driver } from '../drivers/driver.js';
import { FakeDriver } from '../drivers/fake/fake-driver.js';
import { UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { keysFor } from '../queue/keys.js';
import { bullConnection, connectRedis } from '../redis/connection.js';
import { defaultCapacity } from '../scheduler/capacity.js';
import { Scheduler, type SchedulerOptions } from '../scheduler/scheduler.js';
import { detectAccel } from '../vm/accel.js';
import { GridParts } from './grid-parts.js';
import { openNodeStack, type NodeStack } from './node-stack.js';
import { nodeRedisUrl } from './node-redis-users.js';

/** The accelerator a host records in the registry. */
export function hostAccel(settings: Pick<Settings, 'accel' | 'driver'>): string {
  if (settings.driver === 'fake') return 'none';
  return settings.accel ?? detectAccel();
}

/**
 * TEST DOUBLE on a node (GC_DRIVER=fake): the fake driver with the snapshot taken on the
 * server accepted as present, as a shared snapshot folder would make it. Its commands run as
 * host processes of this node (in its network namespace, under the netns harness).
 */
class NodeFakeDriver extends FakeDriver {
  override async clone(o: CloneOptions): Promise<CloneHandle> {
    this.snapshots.add(o.snapshotId);
    return super.clone(o);
  }
}

interface NodeJobDriver {
  driver: Driver;
  /** Spread into the Scheduler's options (the node stack's: driver and dependentsElsewhere). */
  schedulerOptions: Partial<SchedulerOptions>;
  /** The node stack: control listener and snapshot cache (QEMU driver with GC_SERVER_URL). */
  stack?: NodeStack;
  close(): Promise<void>;
}

/**
 * The job driver of a node. With QEMU and a server to reach (GC_SERVER_URL), the node stack:
 * clones start from snapshots fetched over NBD into this host's cache, and their output, stage-out
 * and guest channels are relayed to the server. Without GC_SERVER_URL, the local QEMU backend
 * (a site whose snapshot folder is shared); GC_DRIVER=fake, the test double.
 */
async function nodeDriver(settings: Settings, channels: ChannelServer, quotas: QuotaWatcher, redis: Redis): Promise<NodeJobDriver> {
  if (settings.driver !== 'fake' && settings.serverUrl) {
    const stack = await openNodeStack(settings, redis, settings.nodeName);
    return { driver: stack.driver, schedulerOptions: stack.schedulerOptions, stack, close: () => stack.close() };
  }
  if (settings.driver === 'fake') {
    const d = new NodeFakeDriver({
      deliverRoot: join(settings.stateDir, 'fake-headnodes'),
      headnodes: new Set(),
      snapshotDir: join(settings.stateDir, 'fake-snapshots'),
    });
    return { driver: d, schedulerOptions: { driver: d }, close: () => d.close() };
  }
  const { qemuBackend } = await import('../server/qemu-backend.js');
  const b = await qemuBackend(settings, channels, () => quotas.current());
  return { driver: b.driver, schedulerOptions: { driver: b.driver }, close: () => b.close() };
}

export interface NodeGcd {
  scheduler: Scheduler;
  driver: Driver;
  close(): Promise<void>;
}

export async function composeNode(settings: Settings): Promise<NodeGcd> {
  if (!settings.redisUrl) {
    throw new UsageError(
      "gcd --node needs GC_REDIS_URL: the server's Redis (redis://HOST:PORT, in $GC_STATE_DIR/redis/node-url on the server) and GC_NODE_TOKEN",
    );
  }
  const cleanups: Array<() => Promise<void> | void> = [];
  const close = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) {
      await Promise.resolve()
        .then(c)
        .catch((e: unknown) => log.error('shutdown step failed', { error: errorMessage(e) }));
    }
  };
  try {
    // Its own ACL user, node-<name>, its password from GC_NODE_TOKEN (node-redis-users.ts).
    const target = { url: nodeRedisUrl(settings.redisUrl, settings.nodeName, settings.nodeToken) };
    const redis: Redis = await connectRedis(target);
    // A node outlives the server's restarts (its embedded Redis restarts with it): its runners'
    // transitions wait for Redis to come back rather than fail after two retries and strand the job.
    redis.options.maxRetriesPerRequest = null;
    cleanups.push(() => redis.disconnect());
    const channels = new ChannelServer(settings.stateDir, (_req, res) => res.destroy());
    cleanups.push(() => channels.closeAll());
    // Admission limits (max_running...) read the same quotas.yaml as the server: keep it alike on every host.
    const quotas = new QuotaWatcher({
      dir: settings.configDir,
      onReload: (c) => log.info('quota settings reloaded', { source: c.source }),
      onError: (e) => log.error(`quota settings not reloaded, previous ones stay: ${e.message}`),
    });
    const initial = quotas.start();
    cleanups.push(() => quotas.close());
    const d = await nodeDriver(settings, channels, quotas, redis);
    cleanups.push(() => d.close());
    const keys = keysFor(settings.keyPrefix);
    const capacity = defaultCapacity();
    let controlUrl: string | undefined;
    const grid = new GridParts({
      redis,
      keys,
      settings,
      role: 'node',
      runsJobs: true,
      capacity,
      accel: hostAccel(settings),
      controlUrl: () => controlUrl,
      cachedSnapshots: () => d.stack?.cache.cached() ?? [],
    });
    const scheduler = new Scheduler({
      redis,
      connection: bullConnection(target),
      keys,
      serverName: settings.serverName,
      driver: d.driver,
      stateDir: settings.stateDir,
      capacity,
      killDelayMs: settings.killDelayMs,
      guestDeadlineMs: settings.guestDeadlineMs,
      lockDurationMs: settings.lockDurationMs,
      historyTtlSec: initial.historyTtlSec,
      quotas: () => quotas.current(),
      host: grid.host,
      largestHost: () => grid.largestHost(),
      cron: false,
      ...d.schedulerOptions,
    });
    // Listening before the registry record is written: it carries the URL the server controls jobs at.
    if (d.stack) controlUrl = await d.stack.startControl(scheduler.localRunning());
    await grid.join(scheduler);
    cleanups.push(() => grid.close());
    await scheduler.start();
    cleanups.push(() => scheduler.close());
    await grid.started(scheduler);
    return { scheduler, driver: d.driver, close };
  } catch (e) {
    await close();
    throw e;
  }
}
