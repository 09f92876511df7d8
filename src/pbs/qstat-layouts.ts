/**
 * More of qstat's layouts, next to qstat-format.ts: queue status (-Q, -Q -f), server status
 * (-B, -B -f), the wide (-w) default and alternate tables, and the exec host (-n, -1).
 * Column widths follow OpenPBS's qstat(1B); pure functions returning text.
 */
import { displayJobId, elapsedSec, shortSize, type QstatFormatOptions, type QstatJob } from './qstat-format.js';
import { formatSize, formatWalltime } from './units.js';

const TRUNC = '*';
const BLANK = ' -- ';

function trunc(value: string, width: number): string {
  return value.length > width ? value.slice(0, width - 1) + TRUNC : value;
}
const left = (v: string, w: number): string => trunc(v, w).padEnd(w);
const right = (v: string, w: number): string => trunc(v, w).padStart(w);
const trimLines = (lines: string[]): string => lines.map((l) => l.trimEnd()).join('\n') + '\n';
const dashes = (widths: number[]): string => widths.map((w) => '-'.repeat(w)).join(' ');

/** Jobs of a queue or the server by state, as PBS's state_count. */
export interface StateCounts {
  Q: number;
  R: number;
  H: number;
  W: number;
  E: number;
  S: number;
  B: number;
}

export function emptyCounts(): StateCounts {
  return { Q: 0, R: 0, H: 0, W: 0, E: 0, S: 0, B: 0 };
}

const total = (c: StateCounts): number => c.Q + c.R + c.H + c.W + c.E + c.S + c.B;

function stateCount(c: StateCounts): string {
  return `Transit:0 Queued:${c.Q} Held:${c.H} Waiting:${c.W} Running:${c.R} Exiting:${c.E} Begun:${c.B} `;
}

/** A queue as qstat -Q shows it: its switches, its limits and its jobs by state. */
export interface QueueStatus {
  name: string;
  enabled: boolean;
  started: boolean;
  priority: number;
  counts: StateCounts;
  /** Limits; undefined: not set (unlimited). */
  maxRunning?: number;
  maxQueued?: number;
  maxJobNcpus?: number;
  maxJobMemMiB?: number;
  maxJobWalltimeSec?: number;
  maxRunningNcpus?: number;
  maxRunningMemMiB?: number;
  defaultNcpus?: number;
  defaultWalltimeSec?: number;
  /** Per-user limits inside the queue. */
  perUserMaxRunning?: number;
  perUserMaxQueued?: number;
  /** What its running jobs hold now. */
  assignedNcpus: number;
  assignedMemMiB: number;
}

const yesNo = (b: boolean): string => (b ? 'yes' : 'no');
const trueFalse = (b: boolean): string => (b ? 'True' : 'False');
/** A limit for a table cell; PBS prints 0 for "no limit" in the Max column. */
const limitCell = (n: number | undefined): string => (n === undefined || n === Infinity ? '0' : String(n));

const QUEUE_WIDTHS = [16, 5, 5, 3, 3, 5, 5, 5, 5, 5, 5, 4];

/** `qstat -Q`: one line per queue. */
export function formatQueueTable(queues: readonly QueueStatus[]): string {
  const head = ['Queue', 'Max', 'Tot', 'Ena', 'Str', 'Que', 'Run', 'Hld', 'Wat', 'Trn', 'Ext', 'Type'];
  const headLine = head.map((h, i) => (i === 0 || i === head.length - 1 ? left(h, QUEUE_WIDTHS[i]) : right(h, QUEUE_WIDTHS[i]))).join(' ');
  const rows = queues.map((q) => {
    const c = q.counts;
    const cells = [limitCell(q.maxRunning), String(total(c)), yesNo(q.enabled), yesNo(q.started), String(c.Q), String(c.R + c.S), String(c.H), String(c.W), '0', String(c.E)];
    return [left(q.name, 16), ...cells.map((v, i) => right(v, QUEUE_WIDTHS[i + 1])), 'Exec'].join(' ');
  });
  return trimLines([headLine, dashes(QUEUE_WIDTHS), ...rows]);
}

const set = (n: number | undefined): n is number => n !== undefined && n !== Infinity;

/** `qstat -Q -f`: `Queue: name` and its attributes, PBS's names; a blank line after each. */
export function formatQueueFull(queues: readonly QueueStatus[]): string {
  return queues
    .map((q) => {
      const a: Array<[string, string]> = [['queue_type', 'Execution'], ['Priority', String(q.priority)], ['total_jobs', String(total(q.counts))], ['state_count', stateCount(q.counts)]];
      if (set(q.maxQueued)) a.push(['max_queued', `[o:PBS_ALL=${q.maxQueued}]`]);
      if (set(q.perUserMaxQueued)) a.push(['max_queued', `[u:PBS_GENERIC=${q.perUserMaxQueued}]`]);
      if (set(q.maxRunning)) a.push(['max_run', `[o:PBS_ALL=${q.maxRunning}]`]);
      if (set(q.perUserMaxRunning)) a.push(['max_run', `[u:PBS_GENERIC=${q.perUserMaxRunning}]`]);
      if (set(q.maxRunningNcpus)) a.push(['max_run_res.ncpus', `[o:PBS_ALL=${q.maxRunningNcpus}]`]);
      if (set(q.maxRunningMemMiB)) a.push(['max_run_res.mem', `[o:PBS_ALL=${formatSize(q.maxRunningMemMiB)}]`]);
      if (set(q.maxJobMemMiB)) a.push(['resources_max.mem', formatSize(q.maxJobMemMiB)]);
      if (set(q.maxJobNcpus)) a.push(['resources_max.ncpus', String(q.maxJobNcpus)]);
      if (set(q.maxJobWalltimeSec)) a.push(['resources_max.walltime', formatWalltime(q.maxJobWalltimeSec)]);
      if (q.defaultNcpus !== undefined) a.push(['resources_default.ncpus', String(q.defaultNcpus)]);
      if (q.defaultWalltimeSec !== undefined) a.push(['resources_default.walltime', formatWalltime(q.defaultWalltimeSec)]);
      a.push(['resources_assigned.mem', `${q.assignedMemMiB * 1024}kb`], ['resources_assigned.ncpus', String(q.assignedNcpus)]);
      a.push(['enabled', trueFalse(q.enabled)], ['started', trueFalse(q.started)]);
      return [`Queue: ${q.name}`, ...a.map(([k, v]) => `    ${k} = ${v}`)].join('\n') + '\n\n';
    })
    .join('');
}

/** The server as qstat -B shows it. */
export interface ServerStatus {
  name: string;
  host: string;
  /** Dispatching jobs (gcd's scheduler runs). */
  active: boolean;
  counts: StateCounts;
  maxRunning?: number;
  maxQueued?: number;
  defaultQueue: string;
  capacityNcpus: number;
  capacityMemMiB: number;
  assignedNcpus: number;
  assignedMemMiB: number;
  version: string;
}

const SERVER_WIDTHS = [16, 5, 5, 5, 5, 5, 5, 5, 5, 11];

/** `qstat -B`: one line for the server. */
export function formatServerTable(s: ServerStatus): string {
  const head = ['Server', 'Max', 'Tot', 'Que', 'Run', 'Hld', 'Wat', 'Trn', 'Ext', 'Status'];
  const headLine = head.map((h, i) => (i === 0 || i === head.length - 1 ? left(h, SERVER_WIDTHS[i]) : right(h, SERVER_WIDTHS[i]))).join(' ');
  const c = s.counts;
  const cells = [limitCell(s.maxRunning), String(total(c)), String(c.Q), String(c.R + c.S), String(c.H), String(c.W), '0', String(c.E)];
  const row = [left(s.name, 16), ...cells.map((v, i) => right(v, SERVER_WIDTHS[i + 1])), s.active ? 'Active' : 'Idle'].join(' ');
  return trimLines([headLine, dashes(SERVER_WIDTHS), row]);
}

/** `qstat -B -f`: `Server: name` and its attributes. */
export function formatServerFull(s: ServerStatus): string {
  const a: Array<[string, string]> = [
    ['server_state', s.active ? 'Active' : 'Idle'],
    ['server_host', s.host],
    ['scheduling', trueFalse(s.active)],
    ['total_jobs', String(total(s.counts))],
    ['state_count', stateCount(s.counts)],
    ['default_queue', s.defaultQueue],
  ];
  if (set(s.maxRunning)) a.push(['max_run', `[o:PBS_ALL=${s.maxRunning}]`]);
  if (set(s.maxQueued)) a.push(['max_queued', `[o:PBS_ALL=${s.maxQueued}]`]);
  a.push(
    ['resources_available.mem', `${s.capacityMemMiB * 1024}kb`],
    ['resources_available.ncpus', String(s.capacityNcpus)],
    ['resources_assigned.mem', `${s.assignedMemMiB * 1024}kb`],
    ['resources_assigned.ncpus', String(s.assignedNcpus)],
    ['pbs_version', s.version],
  );
  return [`Server: ${s.name}`, ...a.map(([k, v]) => `    ${k} = ${v}`)].join('\n') + '\n\n';
}

// ------------------------------------------------------------ -w, -n, -1

/** `qstat -w`: the default table with PBS's wide columns (id 30, name, user and queue 15). */
export function formatWideTable(jobs: readonly QstatJob[], opts: QstatFormatOptions): string {
  if (jobs.length === 0) return '';
  const head = `${left('Job id', 30)} ${left('Name', 15)} ${left('User', 15)} ${right('Time Use', 8)} S ${left('Queue', 15)}`;
  const rows = jobs.map((j) => {
    const cput = j.usage?.cputSec === undefined ? '0' : formatWalltime(j.usage.cputSec);
    return [left(displayJobId(j.id, opts.server), 30), left(j.spec.name, 15), left(j.spec.user, 15), right(cput, 8), j.state, trunc(j.spec.queue, 15)].join(' ');
  });
  return trimLines([head, dashes([30, 15, 15, 8, 1, 15]), ...rows]);
}

/** PBS's exec_host of a job that holds a clone: `<clone host>/0`, `*N` for N cpus above 1. */
export function execHost(job: QstatJob): string | undefined {
  if (!['R', 'S', 'E'].includes(job.state) && !(job.state === 'F' && job.startedAt !== undefined)) return undefined;
  const task = job.arrayIndex !== undefined ? `-${job.arrayIndex}` : '';
  const n = job.spec.resources.ncpus;
  return `${job.spec.headnode}-${job.seq}${task}/0${n > 1 ? `*${n}` : ''}`;
}

export interface AltOptions extends QstatFormatOptions {
  /** -s: the comment under each job (or at the end of its line with -1). */
  comments?: boolean;
  /** -n: the exec host under each job (or at the end of its line with -1). */
  hosts?: boolean;
  /** -1: exec host and comment on the job's own line. */
  oneLine?: boolean;
  /** With -s: a verdict shown whole (never cut at 74 columns) instead of the job's comment. */
  verdictOf?: (job: QstatJob) => string | undefined;
}

/** qstat's alternate layout (-a, -s, -n, -1, -H, -i, -r), in its normal or wide (-w) widths. */
export function formatAltTable(jobs: readonly QstatJob[], o: AltOptions): string {
  if (jobs.length === 0) return '';
  const w = o.wide ? [30, 15, 15, 15, 8, 4, 5, 6, 5, 1, 5] : [15, 8, 8, 10, 6, 3, 3, 6, 5, 1, 5];
  const reqAt = w.slice(0, 7).reduce((n, x) => n + x + 1, 0);
  const names = ['Job ID', 'Username', 'Queue', 'Jobname', 'SessID', 'NDS', 'TSK', 'Memory', 'Time', 'S', 'Time'];
  const hhmm = (sec: number | undefined): string => (sec === undefined ? BLANK : formatWalltime(sec).slice(0, 5));
  const lines = ['', `${o.server}: `, `${' '.repeat(reqAt)}Req'd  Req'd   Elap`, names.map((n, i) => left(n, w[i])).join(' '), dashes(w)];
  for (const job of jobs) {
    const mem = job.spec.resources.memMiB > 0 ? shortSize(job.spec.resources.memMiB) : BLANK;
    let row = [
      left(displayJobId(job.id, o.server), w[0]),
      left(job.spec.user, w[1]),
      left(job.spec.queue, w[2]),
      left(job.spec.name, w[3]),
      right(BLANK, w[4]),
      right('1', w[5]),
      right(String(job.spec.resources.ncpus), w[6]),
      right(mem, w[7]),
      right(hhmm(job.spec.walltimeSec), w[8]),
      job.state,
      right(hhmm(elapsedSec(job, o.now)), w[10]),
    ].join(' ');
    const under: string[] = [];
    if (o.hosts) {
      const h = execHost(job) ?? '--';
      if (o.oneLine) row += ` ${h}`;
      else under.push(`   ${h}`);
    }
    const verdict = o.comments ? o.verdictOf?.(job) : undefined;
    const c = o.comments ? (verdict ?? job.comment ?? job.reason) : undefined;
    if (c) {
      if (o.oneLine) row += ` ${c}`;
      else under.push(`   ${verdict !== undefined || o.wide || c.length <= 74 ? c : c.slice(0, 71) + '...'}`);
    }
    lines.push(row, ...under);
  }
  return trimLines(lines);
}
