import type { Tool, ToolRequest, ToolResult, ToolServices } from './tool.js';
import { parseArgs } from './args.js';
import { forEachJobId } from './each-job.js';

/** Run `op` for each job id given; one stderr line per failure, PBS's status for the last. */
async function eachJob(tool: string, req: ToolRequest, op: (id: string) => Promise<void>): Promise<ToolResult> {
  const p = await parseArgs<{ h?: string }>(tool, req.argv, (y) =>
    y.usage(`${tool} [-h u] job_identifier...`).option('h', { type: 'string', describe: 'hold type (u only: user holds)' }),
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  if (p.args.h !== undefined && p.args.h !== 'u') {
    return { stdout: '', stderr: `${tool}: -h ${p.args.h}: only user holds (u) can be set or released by users\n`, exitCode: 2 };
  }
  const ids = p.args._.map(String);
  if (ids.length === 0) return { stdout: '', stderr: `${tool}: a job id is required\n`, exitCode: 2 };
  return forEachJobId(tool, ids, op);
}

/** gcqhold ID...: keep jobs from starting (state H) until gcqrls. */
export const gcqhold: Tool = (req, s: ToolServices) => eachJob('gcqhold', req, (id) => s.scheduler.hold(req.actor, id));

/** gcqrls ID...: release user holds. */
export const gcqrls: Tool = (req, s: ToolServices) => eachJob('gcqrls', req, (id) => s.scheduler.release(req.actor, id));
