import { UsageError } from '../../errors.js';
import { pbsEnvironment } from '../../scheduler/job-env.js';
import type { Tool } from './tool.js';
import { lookJob, runningClone } from './running-job.js';

const USAGE = 'usage: gcqexec job_identifier [--] command [arg...]';

/** What gcqexec's argv asks for: the job and the command (empty: a shell). */
export interface ExecArgs {
  id: string;
  command: string[];
}

/**
 * `gcqexec ID [--] CMD ARG...`. Parsed by hand, not by yargs: everything after the id is the
 * command's own (`gcqexec 12 ls -l` must not take -l as gcqexec's).
 */
export function parseExecArgs(argv: readonly string[]): ExecArgs | 'help' {
  const a = [...argv];
  if (a[0] === '--help' || a[0] === '-h') return 'help';
  if (a[0] === '--') a.shift();
  const id = a.shift();
  if (id === undefined || id === '') throw new UsageError(`a job id is required\n${USAGE}`);
  if (id.startsWith('-')) throw new UsageError(`unknown option '${id}'\n${USAGE}`);
  if (a[0] === '--') a.shift();
  return { id, command: a };
}

/**
 * gcqexec ID -- CMD: run a command in a running job's clone, as the job's account, in its
 * working directory, with its environment; its stdout, stderr and exit status come back
 * (128+N when a signal N ended it). Owner or admin only. No stdin; an interactive shell
 * (`gcqexec ID` alone) needs a terminal channel this call has not.
 */
export const gcqexec: Tool = async (req, s) => {
  const parsed = parseExecArgs(req.argv);
  if (parsed === 'help') return { stdout: `${USAGE}\n`, stderr: '', exitCode: 0 };
  const driver = s.clones;
  if (!driver?.enter) throw new UsageError('this gcd\'s driver cannot enter running jobs');
  const job = await lookJob(s, req.actor, parsed.id);
  const cloneId = runningClone(job);
  if (parsed.command.length === 0) {
    throw new UsageError('an interactive shell in a job is not available yet: give a command, gcqexec ID -- CMD [ARG...]');
  }
  const r = await driver.enter(cloneId, {
    argv: parsed.command,
    cwd: job.spec.cwd,
    env: pbsEnvironment(job),
    user: job.spec.account ?? 'root',
  });
  const exitCode = r.signal !== null ? 128 + r.signal : (r.exitCode ?? 1); // as a shell reports it
  return { stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), exitCode };
};
