import { errorMessage } from '../../errors.js';
import { exitCodeOf } from '../../api/error-map.js';
import type { Tool } from './tool.js';
import { parseArgs } from './args.js';

/** gcqdel ID...: remove queued jobs; stop running ones (their clones are destroyed). */
export const gcqdel: Tool = async (req, s) => {
  const p = await parseArgs('gcqdel', req.argv, (y) =>
    y.usage('gcqdel job_identifier...').positional('ids', { type: 'string' }).demandCommand(1, 'gcqdel: a job id is required'),
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const ids = p.args._.map(String);
  let stderr = '';
  let exitCode = 0;
  for (const id of ids) {
    try {
      await s.scheduler.delete(req.actor, id);
    } catch (e) {
      stderr += `gcqdel: ${errorMessage(e)}\n`;
      exitCode = exitCodeOf(e);
    }
  }
  return { stdout: '', stderr, exitCode };
};
