import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FakeDriver, type FakeDriverOptions } from '../../src/drivers/fake/fake-driver.js';
import { keysFor } from '../../src/queue/keys.js';
import { Scheduler, type SchedulerOptions } from '../../src/scheduler/scheduler.js';
import { redisOptions, startTestRedis, type TestRedis } from './env.js';

/** A started Scheduler on a real redis-server with a test-double driver for headnode hn1. */
export interface SchedulerFixture<D extends FakeDriver> {
  r: TestRedis;
  driver: D;
  sched: Scheduler;
  /** Where the driver delivers job output files (one folder per headnode). */
  deliverRoot: string;
}

export interface SchedulerFixtureOptions<D extends FakeDriver> {
  /** The test double to use (a subclass recording what it was asked); FakeDriver by default. */
  driver?: (o: FakeDriverOptions) => D;
  /** Folder name under the redis dir for delivered output; 'headnodes' by default. */
  deliverDir?: string;
  /** Scheduler options over the defaults (capacity 4 CPUs / 4 GiB, kill delay 300 ms, lock 4 s). */
  scheduler?: Partial<SchedulerOptions>;
}

/** The Scheduler options the integration tests share, for a given redis and driver. */
export function schedulerOptions(r: TestRedis, driver: FakeDriver, over: Partial<SchedulerOptions> = {}): SchedulerOptions {
  return {
    redis: r.client,
    connection: redisOptions(r.target),
    keys: keysFor('copper'),
    serverName: 'srv',
    driver,
    stateDir: r.dir,
    capacity: { ncpus: 4, memMiB: 4096 },
    killDelayMs: 300,
    lockDurationMs: 4000,
    ...over,
  };
}

/** Start redis-server, the test double and a Scheduler on them. */
export async function startSchedulerFixture<D extends FakeDriver>(
  o: SchedulerFixtureOptions<D> & { driver: (o: FakeDriverOptions) => D },
): Promise<SchedulerFixture<D>>;
export async function startSchedulerFixture(o?: Omit<SchedulerFixtureOptions<FakeDriver>, 'driver'>): Promise<SchedulerFixture<FakeDriver>>;
export async function startSchedulerFixture(o: SchedulerFixtureOptions<FakeDriver> = {}): Promise<SchedulerFixture<FakeDriver>> {
  const r = await startTestRedis();
  const deliverRoot = join(r.dir, o.deliverDir ?? 'headnodes');
  mkdirSync(deliverRoot);
  const driverOpts: FakeDriverOptions = { deliverRoot, headnodes: new Set(['hn1']) };
  const driver = o.driver ? o.driver(driverOpts) : new FakeDriver(driverOpts);
  const sched = new Scheduler(schedulerOptions(r, driver, o.scheduler));
  await sched.start();
  return { r, driver, sched, deliverRoot };
}

/**
 * Close the scheduler, the driver and redis-server, in that order. Takes the parts, not the
 * fixture, since tests may have replaced the scheduler with one of other options.
 */
export async function stopSchedulerFixture(f: { sched: Scheduler; driver: FakeDriver; r: TestRedis }): Promise<void> {
  await f.sched.close();
  await f.driver.close();
  await f.r.stop();
}
