import { findJobHistory } from '../../accounting/job-history.js';
import { accountingTime, cloneOf } from '../../accounting/record-format.js';
import { UsageError } from '../../errors.js';
import type { JobRecord } from '../../queue/job.js';
import type { Tool } from './tool.js';
import { parseArgs } from './args.js';

interface Event {
  at: number;
  source: 'S' | 'A';
  text: string;
}

/** What the Redis record says happened (PBS tracejob's server-log lines). */
function recordEvents(r: JobRecord, now: number): Event[] {
  const out: Event[] = [
    {
      at: r.queuedAt,
      source: 'S',
      text: `Job Queued at request of ${r.spec.user}@${r.spec.submitHost}, owner = ${r.spec.user}, job name = ${r.spec.name}, queue = ${r.spec.queue}`,
    },
  ];
  if (r.startedAt !== undefined)
    out.push({
      at: r.startedAt,
      source: 'S',
      text: `Job Run (run ${r.runCount}) in clone ${cloneOf(r)}${r.execHost ? ` on ${r.execHost}` : ''}, ncpus=${r.spec.resources.ncpus}`,
    });
  if (r.endedAt !== undefined) {
    const status = r.exitStatus !== undefined ? `Exit_status=${r.exitStatus}` : 'never ran';
    out.push({ at: r.endedAt, source: 'S', text: `Job ended: ${status}${r.comment ? `; ${r.comment}` : ''}` });
  } else {
    out.push({ at: now, source: 'S', text: `job_state = ${r.state}${r.comment ? `, comment = ${r.comment}` : ''}` });
  }
  return out;
}

/** gctracejob [-n days] ID: a job's history, from Redis while it lasts and from the accounting files after. */
export const gctracejob: Tool = async (req, s) => {
  const p = await parseArgs<{ n?: number; _: Array<string | number> }>('gctracejob', req.argv, (y) =>
    y
      .usage('gctracejob [-n days] job_id')
      .option('n', { type: 'number', describe: 'look in the accounting files of the last N days only' })
      .positional('id', { type: 'string' }),
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const ids = p.args._.map(String);
  if (ids.length !== 1) throw new UsageError('one job id is required: gctracejob [-n days] job_id');
  const days = p.args.n;
  if (days !== undefined && !(Number.isInteger(days) && days > 0)) throw new UsageError(`-n ${days}: a whole number of days above 0`);
  const now = Date.now();
  const h = await findJobHistory(s.scheduler.store, s.accounting, req.actor, ids[0], days);
  const events: Event[] = h.record ? recordEvents(h.record, now) : [];
  for (const l of h.lines) events.push({ at: l.time.getTime(), source: 'A', text: `${l.type}  ${l.message}` });
  // Stable sort: the record's line comes before the accounting line of the same second.
  events.sort((a, b) => Math.floor(a.at / 1000) - Math.floor(b.at / 1000));
  let out = `Job: ${h.id}\n`;
  if (!h.record) out += '(its history in Redis has expired: from the accounting files)\n';
  out += '\n';
  for (const e of events) out += `${accountingTime(e.at)}  ${e.source}    ${e.text}\n`;
  return { stdout: out, stderr: '', exitCode: 0 };
};
