import { UsageError } from '../../errors.js';
import { parseSignal } from '../../drivers/signals.js';
import type { JobSignal } from '../../scheduler/running-ops.js';
import type { Tool, ToolResult } from './tool.js';
import { parseArgs } from './args.js';
import { forEachJobId } from './each-job.js';

/** Run `op` for each id; one stderr line per failure, the status of the last failure (PBS's habit). */
async function forEachId(tool: string, ids: string[], op: (id: string) => Promise<void>): Promise<ToolResult> {
  if (ids.length === 0) throw new UsageError('a job id is required');
  return forEachJobId(tool, ids, op);
}

/**
 * gcqsig [-s SIG|suspend|resume] ID...: a signal to the job's process group in its clone
 * (default SIGTERM, as qsig); suspend pauses the clone's VM and its walltime clock (state S),
 * resume lets both run on.
 */
export const gcqsig: Tool = async (req, s) => {
  const p = await parseArgs<{ s?: string }>('gcqsig', req.argv, (y) =>
    y
      .usage('gcqsig [-s signal|suspend|resume] job_identifier...')
      .option('s', { type: 'string', describe: 'signal name or number (default TERM), suspend or resume' }),
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const word = p.args.s ?? 'TERM';
  const sig: JobSignal = word === 'suspend' || word === 'resume' ? word : parseSignal(word);
  return forEachId('gcqsig', p.args._.map(String), (id) => s.scheduler.signal(req.actor, id, sig));
};

/** gcqrerun ID...: stop a running job and queue it to run again from the same snapshot. */
export const gcqrerun: Tool = async (req, s) => {
  const p = await parseArgs('gcqrerun', req.argv, (y) => y.usage('gcqrerun job_identifier...'));
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  return forEachId('gcqrerun', p.args._.map(String), (id) => s.scheduler.rerun(req.actor, id));
};

/** gcqmove DESTINATION ID...: move jobs that have not started to another queue (its limits apply). */
export const gcqmove: Tool = async (req, s) => {
  const p = await parseArgs('gcqmove', req.argv, (y) => y.usage('gcqmove destination job_identifier...'));
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const [dest, ...ids] = p.args._.map(String);
  if (dest === undefined || ids.length === 0) throw new UsageError('usage: gcqmove destination job_identifier...');
  // PBS destinations may be queue@server: only this server's queues exist here.
  const [queue, server] = dest.split('@');
  if (!queue || (server !== undefined && server !== s.serverName))
    throw new UsageError(`destination '${dest}': give a queue of this server (queue or queue@${s.serverName})`);
  return forEachId('gcqmove', ids, async (id) => void (await s.scheduler.move(req.actor, id, queue)));
};
