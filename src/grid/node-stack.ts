/**
 * Everything a compute node (`gcd --node`) runs jobs with, in one call: the relay to the
 * server's node API (clones' guest channels, output, stage-out archives), the snapshot cache
 * (snapshots fetched over NBD from the server's exporter), the local QEMU driver that runs the
 * clones, and the NodeDriver that joins them. The node's composition does:
 *
 *   const stack = await openNodeStack(settings, redis, nodeName);
 *   const scheduler = new Scheduler({ ...usual options, ...stack.schedulerOptions });
 *   await scheduler.start();
 *   const controlUrl = await stack.startControl(scheduler.localRunning()); // -> registry record
 *   // registry record's cachedSnapshots: stack.cache.cached()
 *   ... on the way down: await scheduler.close(); await stack.close();
 *
 * Needs GC_SERVER_URL, GC_NODE_TOKEN and GC_NODE_CONTROL_ADDR (UsageError naming the one
 * missing). A node has no headnodes: snapshots, and the fresh snapshot an afterok dependent
 * runs in, are taken on the server (schedulerOptions.dependentsElsewhere asks it).
 */
import type { Redis } from 'ioredis';
import type { Settings } from '../config/settings.js';
import type { Driver } from '../drivers/driver.js';
import { QemuDriver } from '../drivers/qemu/qemu-driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord } from '../queue/job.js';
import { keysFor } from '../queue/keys.js';
import type { LiveJobs } from '../scheduler/live-jobs.js';
import type { StopReason } from '../scheduler/runner.js';
import { applyGuestEgress } from '../vm/guest-egress.js';
import type { RunningVm, RunningVms } from '../vm/snapshots/types.js';
import { sweepVmCgroups } from '../vm/vm-cgroup.js';
import { NoHeadnodesError, type NodeDriver } from './node-driver.js';
import { nodeRelay, type NodeRelay } from './node-relay.js';
import type { RelayChannels } from './relay-channels.js';
import type { SnapshotCache } from './snapshot-cache.js';
import { openSnapshotCache } from './snapshot-transfer.js';

export type NodeStackSettings = Pick<
  Settings,
  'stateDir' | 'ramDir' | 'keyPrefix' | 'nbdAddr' | 'serverUrl' | 'nodeToken' | 'nodeControlAddr' | 'maxOutputMiB' | 'vmGid' | 'guestAllow' | 'snapshotRam'
>;

export interface NodeStackOptions {
  /** The driver that runs clones here; default the QemuDriver (tests: the test double). */
  inner?: (channels: RelayChannels) => Driver;
  /** Tries of the server's review of a finished job's dependents before they are reviewed here. */
  dependentsTries?: number;
}

export interface NodeStack {
  driver: NodeDriver;
  cache: SnapshotCache;
  relay: NodeRelay;
  /** Spread into the node's `new Scheduler({...})`. */
  schedulerOptions: { driver: Driver; dependentsElsewhere: (job: JobRecord) => Promise<boolean> };
  /** Listen on GC_NODE_CONTROL_ADDR for the server's job control; the URL for the registry (controlUrl). */
  startControl(running: { live: LiveJobs; cancel: (id: string, reason: StopReason) => boolean }): Promise<string>;
  /** Control listener, channels, driver; then the cache is emptied (run after the scheduler's close). */
  close(): Promise<void>;
}

/** Snapshots are the server's: a node's QEMU driver has no headnode to take one of. */
function noHeadnodes(node: string): RunningVms {
  return {
    withRunning<T>(_name: string, _fn: (h: RunningVm) => Promise<T>): Promise<T> {
      return Promise.reject(new NoHeadnodesError(node));
    },
  };
}

export async function openNodeStack(settings: NodeStackSettings, redis: Redis, nodeName: string, opts: NodeStackOptions = {}): Promise<NodeStack> {
  const relay = nodeRelay(settings, nodeName); // UsageError when GC_SERVER_URL / GC_NODE_TOKEN are missing
  const token = settings.nodeToken ?? '';
  let inner: Driver;
  if (opts.inner) inner = opts.inner(relay.channels);
  else {
    // Confinement as on the server (docs/security.md): the guests' egress filter, leftover cgroups.
    await applyGuestEgress(settings.vmGid, settings.guestAllow);
    await sweepVmCgroups(settings.stateDir);
    inner = new QemuDriver({
      settings,
      channels: relay.channels,
      headnodes: noHeadnodes(nodeName),
      snapshotRam: settings.snapshotRam,
      maxOutputBytes: settings.maxOutputMiB * 1024 * 1024,
    });
  }
  let cache: SnapshotCache;
  try {
    cache = await openSnapshotCache({ settings, redis, nodeName, nodeToken: token });
  } catch (e) {
    await inner.close().catch(() => undefined);
    await relay.close().catch(() => undefined);
    throw e;
  }
  const driver = relay.driver(inner, cache);
  const keys = keysFor(settings.keyPrefix);
  const tries = Math.max(1, opts.dependentsTries ?? 5);

  /** The server reviews the dependents of a job that ended here; false when it could not. */
  const dependentsElsewhere = async (job: JobRecord): Promise<boolean> => {
    if ((await redis.scard(keys.dependents(job.id))) === 0) return true;
    for (let i = 1; ; i++) {
      try {
        await relay.client.reviewDependents(job.id);
        return true;
      } catch (e) {
        if (i >= tries) {
          log.error('the server did not review the dependents of a job that ended here; reviewed on this node', { job: job.id, error: errorMessage(e) });
          return false;
        }
        await new Promise((r) => setTimeout(r, 200 * 2 ** i));
      }
    }
  };

  return {
    driver,
    cache,
    relay,
    schedulerOptions: { driver, dependentsElsewhere },
    startControl: (running) => relay.startControl(running, driver),
    async close() {
      await relay.close().catch((e: unknown) => log.warn('node relay close failed', { error: errorMessage(e) }));
      await driver.close().catch((e: unknown) => log.warn('node driver close failed', { error: errorMessage(e) }));
      // The scheduler closed first: no clone holds a cached snapshot any more.
      await cache.sweep().catch((e: unknown) => log.warn('snapshot cache sweep failed', { error: errorMessage(e) }));
    },
  };
}
