import { formatQstatFull, formatQstatJson, formatQstatTable, type QstatJob } from '../../pbs/qstat-format.js';
import { UsageError } from '../../errors.js';
import type { JobRecord } from '../../queue/job.js';
import type { Tool } from './tool.js';
import { parseArgs } from './args.js';
import { jobTable, queueView, selectJobs, serverView } from './qstat-views.js';
import { execHost, execVnode } from './exec-host.js';
import { inDestinations, isDestination, knownQueues, parseDestination } from './qstat-destinations.js';

/** PBS Pro's exit status for a finished job asked for without -x (PBSE_HISTJOBID 15139, mod 256). */
const JOB_FINISHED_EXIT = 35;

interface QstatArgs {
  f?: boolean;
  F?: string;
  x?: boolean;
  u?: string;
  s?: boolean;
  a?: boolean;
  w?: boolean;
  t?: boolean;
  cron?: boolean;
  Q?: boolean;
  B?: boolean;
  n?: boolean;
  one?: boolean;
  H?: boolean;
  i?: boolean;
  r?: boolean;
  _: Array<string | number>;
}

function withUsage(j: JobRecord, now: number): QstatJob {
  const q: QstatJob = { ...j };
  if (j.startedAt) {
    q.usage = {
      walltimeSec: Math.round(((j.endedAt ?? now) - j.startedAt) / 1000),
      ...(j.cputSec !== undefined ? { cputSec: j.cputSec } : {}),
      ...(j.memKiB !== undefined ? { memKiB: j.memKiB } : {}),
    };
  }
  if (j.state !== 'F' && j.comment) q.reason = j.comment;
  const exec = execHost(j);
  if (exec) q.execHost = exec;
  const vnode = execVnode(j);
  if (vnode) q.execVnode = vnode;
  // PBS shows a finished array task as X.
  if (j.arrayParent && j.state === 'F') q.state = 'X';
  return q;
}

/** `-1` (PBS's one-line flag) alone or inside a group (`-n1`) becomes --one for the parser. */
function oneLineFlag(argv: string[]): string[] {
  return argv.flatMap((a) => (a === '-1' ? ['--one'] : /^-[a-zA-Z]*1[a-zA-Z]*$/.test(a) ? [a.replace('1', ''), '--one'] : [a]));
}

/**
 * gcqstat [-f [-F json]] [-x] [-u user] [-a|-H|-i|-r] [-s] [-n|-f [-1]] [-w] [ID|queue|@server...], -Q [-f]
 * [queue...], -B [-f]: jobs, queues and the server as PBS's qstat shows them.
 */
export const gcqstat: Tool = async (req, s) => {
  const p = await parseArgs<QstatArgs>(
    'gcqstat',
    oneLineFlag(req.argv),
    (y) =>
      y
        .usage('gcqstat [-f [-F json]] [-x] [-u user] [-a|-H|-i|-r] [-s] [-n|-f [-1]] [-w] [job_id|queue|@server...] | -Q [-f] [queue...] | -B [-f]')
        .option('Q', { type: 'boolean', describe: 'queues: their limits and jobs by state' })
        .option('B', { type: 'boolean', describe: 'the server: its limits and jobs by state' })
        .option('n', { type: 'boolean', describe: "the exec host (the job's clone) under each job" })
        .option('one', { type: 'boolean', describe: "-1: with -n/-s, all on the job's line" })
        .option('H', { type: 'boolean', describe: 'finished jobs' })
        .option('i', { type: 'boolean', describe: 'queued, held and waiting jobs' })
        .option('r', { type: 'boolean', describe: 'running and suspended jobs' })
        .option('f', { type: 'boolean', describe: 'full attributes' })
        .option('F', { type: 'string', describe: 'with -f: output format (json)' })
        .option('x', { type: 'boolean', describe: 'include finished jobs' })
        .option('u', { type: 'string', describe: "only this user's jobs" })
        .option('s', { type: 'boolean', describe: "show each job's comment" })
        .option('a', { type: 'boolean', describe: 'alternate layout' })
        .option('w', { type: 'boolean', describe: 'wide: never wrap -f values' })
        .option('t', { type: 'boolean', describe: 'show the tasks of array jobs' })
        .option('cron', { type: 'boolean', describe: 'list recurring jobs (gcqsub --cron)' }),
    true,
  );
  if (p.kind === 'help') return { stdout: p.help + '\n', stderr: '', exitCode: 0 };
  const a = p.args;
  if (a.F !== undefined && a.F !== 'json') throw new UsageError(`-F ${a.F}: only -F json is supported`);
  if (a.F !== undefined && !a.f) throw new UsageError('-F json goes with -f');
  const now = Date.now();
  if (a.cron) {
    const rows = (await s.scheduler.recurring.list(req.actor)).map((c) =>
      [
        c.id,
        c.spec.user,
        c.pattern,
        c.paused ? 'paused' : new Date(c.nextAt ?? 0).toISOString().slice(0, 16).replace('T', ' '),
        c.lastJob ?? '-',
        c.lastError ?? '',
      ].join('\t'),
    );
    return { stdout: rows.length ? ['Cron id\tUser\tPattern\tNext\tLast job\tLast error', ...rows].join('\n') + '\n' : '', stderr: '', exitCode: 0 };
  }
  if (a.Q && a.B) throw new UsageError('-Q and -B do not go together');
  if (a.Q) return { stdout: await queueView(s.scheduler, a._.map(String), a.f === true), stderr: '', exitCode: 0 };
  if (a.B) return { stdout: await serverView(s.scheduler, s.serverName, a.f === true), stderr: '', exitCode: 0 };
  if ([a.H, a.i, a.r].filter(Boolean).length > 1) throw new UsageError('-H, -i and -r do not go together');
  // With -f, -1 is Torque's "do not fold long values" (Nextflow's `qstat -f -1`): -w's effect.
  if (a.one && a.f) a.w = true;
  else if (a.one && !a.n && !a.s) throw new UsageError('-1 goes with -n, -s or -f');
  const operands = a._.map(String);
  const ids = operands.filter((o) => !isDestination(o));
  const queues = knownQueues(s.scheduler);
  const dests = operands.filter(isDestination).map((o) => parseDestination(o, s.serverName, queues));
  let jobs: JobRecord[];
  let stderr = '';
  let exitCode = 0;
  if (ids.length || dests.length) {
    jobs = [];
    if (dests.length) {
      const all = await s.scheduler.list(req.actor, { includeFinished: a.x === true || a.H === true, user: a.u, tasks: a.t === true });
      jobs.push(...all.filter((j) => inDestinations(j, dests)));
    }
    for (const id of ids) {
      try {
        const j = await s.scheduler.get(req.actor, id);
        // PBS Pro: a finished job named by id is history, shown only with -x or -H (exit 35
        // otherwise). Cromwell's check-alive (`qstat ID`) and Parsl's providers rely on it.
        if (j.state === 'F' && !a.x && !a.H) {
          stderr += `gcqstat: ${j.id} Job has finished, use -x or -H to obtain historical job information\n`;
          exitCode = exitCode || JOB_FINISHED_EXIT;
          continue;
        }
        jobs.push(j);
      } catch (e) {
        stderr += `gcqstat: ${(e as Error).message}\n`;
        exitCode = 153;
      }
    }
  } else {
    jobs = await s.scheduler.list(req.actor, { includeFinished: a.x === true || a.H === true, user: a.u, tasks: a.t === true });
  }
  jobs = selectJobs(jobs, a.H ? 'H' : a.i ? 'i' : a.r ? 'r' : undefined, ids.length > 0 && dests.length === 0);
  const shown = jobs.map((j) => withUsage(j, now));
  const opts = { server: s.serverName, now, wide: a.w === true };
  let out: string;
  if (a.f && a.F === 'json') out = formatQstatJson(shown, { ...opts, now });
  else if (a.f) out = formatQstatFull(shown, opts);
  else {
    const flags = {
      alternate: Boolean(a.a || a.s || a.n || a.H || a.i || a.r),
      comments: a.s === true,
      hosts: a.n === true,
      oneLine: a.one === true,
      wide: a.w === true,
    };
    out = jobTable(s.scheduler, shown, opts, flags) ?? formatQstatTable(shown, opts);
  }
  return { stdout: out && !out.endsWith('\n') ? out + '\n' : out, stderr, exitCode };
};
