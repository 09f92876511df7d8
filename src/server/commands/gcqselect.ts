import { parseSelectCriteria, selectMatches } from '../../pbs/qselect.js';
import { ok, type Tool } from './tool.js';
import { parseArgs } from './args.js';

interface SelectArgs {
  u?: string;
  s?: string;
  N?: string;
  q?: string;
  A?: string;
  P?: string;
  h?: string;
  x?: boolean;
  _: Array<string | number>;
}

/** gcqselect [-u users] [-s states] [-N name] [-q queue] [-A acct] [-P proj] [-h holds] [-x]: ids, one per line. */
export const gcqselect: Tool = async (req, s) => {
  const p = await parseArgs<SelectArgs>('gcqselect', req.argv, (y) =>
    y
      .usage('gcqselect [-u user_list] [-s states] [-N name] [-q queue] [-A account] [-P project] [-h holds] [-x]')
      .option('u', { type: 'string', describe: 'owners, comma-separated' })
      .option('s', { type: 'string', describe: 'states, e.g. QR' })
      .option('N', { type: 'string', describe: 'job name' })
      .option('q', { type: 'string', describe: 'queue' })
      .option('A', { type: 'string', describe: 'account string (-A)' })
      .option('P', { type: 'string', describe: 'project (-P)' })
      .option('h', { type: 'string', describe: 'hold types: u, s, o, n (none)' })
      .option('x', { type: 'boolean', describe: 'include finished jobs' }),
  );
  if (p.kind === 'help') return ok(p.help + '\n');
  const c = parseSelectCriteria(p.args);
  const finished = p.args.x === true || c.states?.includes('F') === true;
  const jobs = await s.scheduler.list(req.actor, { includeFinished: finished });
  const ids = jobs.filter((j) => selectMatches(j, c)).map((j) => `${j.id}\n`);
  return ok(ids.join(''));
};
