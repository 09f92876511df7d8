import type { JobRecord } from '../../queue/job.js';
import { formatWalltime } from '../../pbs/units.js';
import { defaultOutputPaths } from '../../scheduler/output-paths.js';

/** Which message: the job began running, ended, or was ended by the system. */
export type MailKind = 'begin' | 'end' | 'abort';

/** What an array's message adds: it covers every task. */
export interface ArraySummary {
  tasks: number;
  /** When its first task started (epoch ms). */
  begunAt?: number;
  /** Largest peak memory of its tasks, KiB. */
  peakMemKiB?: number;
}

export interface MailText {
  subject: string;
  text: string;
}

const HEADLINE: Record<MailKind, string> = {
  begin: 'Begun execution',
  end: 'Execution terminated',
  abort: 'Aborted by Copper',
};

/**
 * The message, in PBS's layout (`PBS Job Id:` lines then `name=value` facts) so that mail
 * filters written for PBS still match; what is not known yet is left out.
 */
export function composeMail(kind: MailKind, job: JobRecord, server: string, array?: ArraySummary): MailText {
  const s = job.spec;
  const lines = [
    `PBS Job Id: ${job.id}`,
    `Job Name:   ${s.name}`,
    `Owner:      ${s.user}@${s.submitHost}`,
    `Queue:      ${s.queue}`,
    `Server:     ${server}`,
    HEADLINE[kind],
  ];
  if (array) lines.push(`Job Array: ${array.tasks} tasks`);
  if (kind !== 'begin') {
    if (job.exitStatus !== undefined) lines.push(`Exit_status=${job.exitStatus}`);
    if (job.comment) lines.push(`comment=${job.comment}`);
    const start = array?.begunAt ?? job.startedAt;
    const asked = s.walltimeSec !== undefined ? formatWalltime(s.walltimeSec) : 'none';
    if (start !== undefined && job.endedAt !== undefined) {
      const used = Math.max(0, Math.round((job.endedAt - start) / 1000));
      lines.push(`resources_used.walltime=${formatWalltime(used)} (asked: ${asked})`);
    } else {
      lines.push(`resources_used.walltime=never ran (asked: ${asked})`);
    }
    const mem = array?.peakMemKiB ?? job.memKiB;
    if (mem !== undefined) lines.push(`resources_used.mem=${mem}kb`);
    if (job.cputSec !== undefined && !array) lines.push(`resources_used.cput=${formatWalltime(Math.round(job.cputSec))}`);
  }
  const out = outputPaths(job, array !== undefined);
  lines.push(`Output_Path=${out.out}`, `Error_Path=${out.err}`);
  return { subject: `PBS JOB ${job.id} ${s.name}: ${HEADLINE[kind].toLowerCase()}`, text: `${lines.join('\n')}\n` };
}

/** Where the output went (or goes): the delivered paths, else the defaults; an array's per task. */
function outputPaths(job: JobRecord, isArray: boolean): { out: string; err: string } {
  const s = job.spec;
  const dflt = defaultOutputPaths(job);
  // An array's tasks write `<name>.o<seq>.<index>` unless -o/-e named one file.
  const perTask = (asked: string | undefined, p: string): string => (isArray && (!asked || asked.endsWith('/')) ? `${p}.<index>` : p);
  let out = job.outputPath ?? perTask(s.stdoutPath, dflt.out);
  let err = job.errorPath ?? perTask(s.stderrPath, dflt.err);
  if (s.join === 'oe') err = out;
  if (s.join === 'eo') out = err;
  return { out: `${s.headnode}:${out}`, err: `${s.headnode}:${err}` };
}
