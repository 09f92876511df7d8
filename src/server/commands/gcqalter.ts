import { UsageError } from '../../errors.js';
import { parsePbsDateTime, parseWalltime } from '../../pbs/units.js';
import { parsePriority, validateJobName } from '../../pbs/option-values.js';
import type { JobChanges } from '../../scheduler/job-control.js';
import type { Tool } from './tool.js';
import { parseArgs } from './args.js';

interface AlterArgs {
  N?: string;
  p?: string;
  l?: string[];
  h?: string;
  a?: string;
  throttle?: number;
  q?: string;
}

/**
 * gcqalter [-N name] [-p prio] [-l walltime=T] [-h u|n] [-a time] [-q queue] [--throttle N] ID...:
 * change jobs that have not started (an array's throttle at any time); -q moves them as gcqmove.
 */
export const gcqalter: Tool = async (req, s) => {
  const p = await parseArgs<AlterArgs>('gcqalter', req.argv, (y) =>
    y
      .usage('gcqalter [-N name] [-p priority] [-l walltime=HH:MM:SS] [-h u|n] [-a [[CC]YY]MMDDhhmm[.SS]] [-q queue] [--throttle N] job_identifier...')
      .option('q', { type: 'string', describe: 'move to this queue (its limits apply)' })
      .option('N', { type: 'string' })
      .option('p', { type: 'string' })
      .option('l', { type: 'string', array: true })
      .option('h', { type: 'string' })
      .option('a', { type: 'string' })
      .option('throttle', { type: 'number', describe: 'array jobs: most tasks running at once (0: no limit)' }),
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const a = p.args;
  const c: JobChanges = {};
  if (a.N !== undefined) c.name = validateJobName(a.N);
  if (a.p !== undefined) c.priority = parsePriority(a.p);
  for (const item of a.l ?? []) {
    for (const kv of item.split(',')) {
      const [k, v] = kv.split('=');
      if (k !== 'walltime' || v === undefined) throw new UsageError(`-l ${kv}: gcqalter changes walltime only`);
      c.walltimeSec = parseWalltime(v);
    }
  }
  if (a.h !== undefined) {
    if (a.h !== 'u' && a.h !== 'n') throw new UsageError(`-h ${a.h}: use u (hold) or n (release)`);
    c.hold = a.h === 'u' ? 'u' : '';
  }
  if (a.a !== undefined) c.beginAt = parsePbsDateTime(a.a, Date.now());
  if (a.throttle !== undefined) {
    if (!Number.isInteger(a.throttle) || a.throttle < 0) throw new UsageError(`--throttle ${a.throttle}: a whole number >= 0`);
    c.throttle = a.throttle;
  }
  const ids = a._.map(String);
  if (ids.length === 0) throw new UsageError('a job id is required');
  if (Object.keys(c).length === 0 && a.q === undefined) throw new UsageError('nothing to change: give -N, -p, -l walltime=, -h, -a, -q or --throttle');
  for (const id of ids) {
    if (a.q !== undefined) await s.scheduler.move(req.actor, id, a.q);
    if (Object.keys(c).length) await s.scheduler.alter(req.actor, id, c);
  }
  return { stdout: '', stderr: '', exitCode: 0 };
};
