import { findJobHistory, jobUsage, type JobUsage } from '../../accounting/job-history.js';
import { hms } from '../../accounting/record-format.js';
import { UsageError } from '../../errors.js';
import type { Tool } from './tool.js';
import { parseArgs } from './args.js';

const mib = (kib: number): string => `${(kib / 1024).toFixed(2)} MB`;

/** CPU efficiency = cput / (walltime x ncpus); memory efficiency = peak memory / requested memory. */
export function efficiencyReport(u: JobUsage): string {
  const lines = [`Job ID: ${u.id}`, `User/Group: ${u.user}/${u.group}`];
  const state = u.state === 'F' ? `${u.exitStatus === 0 ? 'COMPLETED' : 'FAILED'} (exit code ${u.exitStatus ?? 'none: it never ran'})` : `${u.state} (not finished: figures so far)`;
  lines.push(`State: ${state}`, `Cores: ${u.ncpus}`);
  if (u.walltimeSec === undefined) {
    lines.push('Efficiency: not available (the job never started)');
    return lines.join('\n') + '\n';
  }
  const coreWall = u.walltimeSec * u.ncpus;
  if (u.cputSec !== undefined) {
    const pct = coreWall > 0 ? (u.cputSec / coreWall) * 100 : 0;
    lines.push(`CPU Utilized: ${hms(u.cputSec)}`, `CPU Efficiency: ${pct.toFixed(2)}% of ${hms(coreWall)} core-walltime`);
  } else {
    lines.push('CPU Utilized: not measured', 'CPU Efficiency: not available');
  }
  lines.push(`Job Wall-clock time: ${hms(u.walltimeSec)}`);
  if (u.memKiB !== undefined) {
    lines.push(`Memory Utilized: ${mib(u.memKiB)}`);
    lines.push(u.memMiB > 0 ? `Memory Efficiency: ${((u.memKiB / (u.memMiB * 1024)) * 100).toFixed(2)}% of ${mib(u.memMiB * 1024)}` : 'Memory Efficiency: not available (no memory requested)');
  } else {
    lines.push('Memory Utilized: not measured', 'Memory Efficiency: not available');
  }
  if (u.comment) lines.push(`Comment: ${u.comment}`);
  return lines.join('\n') + '\n';
}

/** gcseff ID: Slurm's seff for a Copper job, from its record or, after it expired, its accounting. */
export const gcseff: Tool = async (req, s) => {
  const p = await parseArgs<{ _: Array<string | number> }>('gcseff', req.argv, (y) => y.usage('gcseff job_id').positional('id', { type: 'string' }));
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const ids = p.args._.map(String);
  if (ids.length !== 1) throw new UsageError('one job id is required: gcseff job_id');
  const h = await findJobHistory(s.scheduler.store, s.accounting, req.actor, ids[0]);
  const u = jobUsage(h);
  if (!u) throw new UsageError(`${h.id}: no usage recorded (it never ran)`);
  return { stdout: efficiencyReport(u), stderr: '', exitCode: 0 };
};
