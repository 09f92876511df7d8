import { setting } from './config/settings.js';

/**
 * Named steps where the crash suite (test/integration/crash.test.ts) kills gcd: with
 * GC_TEST_CRASH_AT=<name>, the process SIGKILLs itself the first time it reaches that step,
 * as a power cut would, instead of relying on timing luck. Compiled in always; inert (one
 * string compare) unless the setting is given. The steps, in a job's order:
 */
export const CRASH_POINTS = [
  'submit:after-snapshot', // the headnode's snapshot exists, no record yet
  'submit:after-create', // records written and counted, not yet in BullMQ
  'dispatch:before-run', // capacity reserved in this gcd, the job still Q
  'dispatch:after-run', // the job R (counted running), no clone yet
  'run:after-clone', // the clone exists, the command not started
  'run:after-exec', // the command runs
  'deliver:before', // the job E, its output in the spool
  'deliver:before-F', // output delivered, clone destroyed, F not written
  'finish:after-F', // F written (settling), snapshot/array/dependents not settled
] as const;

export type CrashPoint = (typeof CRASH_POINTS)[number];

let armed: string | undefined | null = null;

export function crashPoint(name: CrashPoint): void {
  if (armed === null) armed = setting('testCrashAt');
  if (armed !== undefined && armed === name) process.kill(process.pid, 'SIGKILL');
}
