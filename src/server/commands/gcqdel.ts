import { setTimeout as sleep } from 'node:timers/promises';
import { UsageError, errorMessage } from '../../errors.js';
import { exitCodeOf } from '../../api/error-map.js';
import type { Tool } from './tool.js';
import { parseArgs } from './args.js';

/** How long gcqdel -x waits for a running job to end before giving up on purging its history. */
const PURGE_WAIT_MS = 60_000;

/**
 * gcqdel [-x] [-W force] ID...: remove queued jobs; stop running ones (their clones are
 * destroyed). -x: finished jobs' history goes too (a job deleted now is forgotten once it
 * has ended). -W force: a running job's clone is destroyed at once, without SIGTERM or
 * waiting for it to answer.
 */
export const gcqdel: Tool = async (req, s) => {
  // PBS writes -Wforce as one word too.
  const argv = req.argv.flatMap((a) => (/^-W.+/.test(a) ? ['-W', a.slice(2)] : [a]));
  const p = await parseArgs<{ x?: boolean; W?: string }>('gcqdel', argv, (y) =>
    y
      .usage('gcqdel [-x] [-W force] job_identifier...')
      .option('x', { type: 'boolean', describe: 'also delete finished jobs and their history' })
      .option('W', { type: 'string', describe: 'force: destroy a running job\'s clone at once' }),
    true,
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const a = p.args;
  if (a.W !== undefined && a.W !== 'force') throw new UsageError(`-W ${a.W}: only -W force is supported`);
  const ids = a._.map(String);
  if (ids.length === 0) throw new UsageError('a job id is required');
  const opts = { force: a.W === 'force', purge: a.x === true };
  let stderr = '';
  let exitCode = 0;
  for (const id of ids) {
    try {
      const before = opts.purge ? await s.scheduler.get(req.actor, id).catch(() => undefined) : undefined;
      await s.scheduler.delete(req.actor, id, opts);
      if (before && before.state !== 'F') {
        // Deleted now, finished shortly (a running job after its kill delay): then forget it.
        const ac = new AbortController();
        const done = await Promise.race([s.scheduler.waitFor(before.id), sleep(PURGE_WAIT_MS, undefined, { signal: ac.signal, ref: false }).catch(() => undefined)]);
        ac.abort();
        // F is written a moment before its settling ends: retry the purge briefly.
        for (let i = 0; done && i < 50; i++) {
          try {
            await s.scheduler.delete(req.actor, id, { purge: true });
            break;
          } catch (e) {
            if (i === 49) throw e;
            await sleep(100);
          }
        }
        if (!done) stderr += `gcqdel: ${before.id} is still ending; its history stays until it has (gcqdel -x ${before.id} again later)\n`;
      }
    } catch (e) {
      stderr += `gcqdel: ${errorMessage(e)}\n`;
      exitCode = exitCodeOf(e);
    }
  }
  return { stdout: '', stderr, exitCode };
};
