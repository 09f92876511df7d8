import type { Driver } from '../drivers/driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobStore } from '../queue/job-store.js';

/** A running job's usage sampler; stop() waits for a sample in flight. */
export interface UsageSampler {
  stop(): Promise<void>;
}

/**
 * While a job runs, write its clone's CPU time and peak memory into its record every
 * `everyMs`, so that gcqstat shows live resources_used (walltime needs no sample: it is
 * counted from the start). Reading /proc of the clone's QEMU costs the guest nothing.
 */
export function sampleUsage(driver: Driver, store: JobStore, jobId: string, cloneId: string, everyMs: number): UsageSampler {
  const usage = driver.usage?.bind(driver);
  if (!usage || everyMs <= 0) return { stop: async () => undefined };
  let inFlight: Promise<void> | undefined;
  let stopped = false;
  const sample = async (): Promise<void> => {
    const u = await usage(cloneId);
    // Not once stopped: the job's record may be finished (and expiring) by then.
    if (u && !stopped) await store.update(jobId, { cputSec: Math.round(u.cputSec * 100) / 100, memKiB: u.memKiB });
  };
  const timer = setInterval(() => {
    if (inFlight) return;
    inFlight = sample()
      .catch((e: unknown) => void log.debug('usage sample failed', { job: jobId, error: errorMessage(e) }))
      .finally(() => (inFlight = undefined));
  }, everyMs);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await inFlight;
    },
  };
}
