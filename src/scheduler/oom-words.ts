import type { CommandUsage, ExecResult } from '../drivers/driver.js';

const mib = (kib: number): string => `${Math.round(kib / 1024)} MiB`;

/**
 * An out-of-memory end in plain words, with the peak and the limit, instead of "killed by
 * signal 9"; undefined when the OOM killer did not touch the job. A clone's RAM is its
 * headnode's, so that is the limit and the way out is a bigger headnode.
 */
export function oomComment(result: ExecResult, usage: CommandUsage | undefined, memMiB: number): string | undefined {
  if (!usage || usage.oomKills === 0) return undefined;
  const peak = usage.memPeakKiB !== undefined ? `peak ${mib(usage.memPeakKiB)}` : 'peak not measured';
  const limit = memMiB > 0 ? `the clone's ${memMiB} MiB of RAM` : "the clone's RAM";
  const advice = 'give the headnode more memory (gc headnode create --mem) or make the job use less';
  if (result.signal === 9) return `killed: out of memory (${peak} of ${limit}); ${advice}`;
  const how = result.signal !== null ? `killed by signal ${result.signal}` : `exit ${result.exitCode}`;
  const n = usage.oomKills === 1 ? 'one of its processes' : `${usage.oomKills} of its processes`;
  return `Job run, ${how}: out of memory, the kernel killed ${n} (${peak} of ${limit}); ${advice}`;
}
