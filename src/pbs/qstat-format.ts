/**
 * gcqstat's output in PBS's layouts: the default table, the alternate table (-a, and -s
 * with comments), full attributes (-f) and `-f -F json`. Pure functions returning text.
 * Column widths, truncation with "*" and the -f line wrapping follow OpenPBS's qstat;
 * trailing blanks are trimmed from every line.
 *
 * Over 400 lines on purpose: every gcqstat layout in one place, sharing the PBS column helpers.
 */
import type { JobRecord } from '../queue/job.js';
import { formatSize, formatWalltime } from './units.js';

/** Resources a job has used so far (or in total once finished). */
export interface JobUsage {
  walltimeSec?: number;
  cputSec?: number;
  memKiB?: number;
}

/** A job as gcqstat shows it: the record plus why it waits and what it used. */
export interface QstatJob extends JobRecord {
  /** Why a job waits (Slurm-style reason); shown where PBS shows the comment when there is none. */
  reason?: string;
  usage?: JobUsage;
  /** Where it runs or ran: PBS's `host/0[*ncpus]`, the clone's hostname. */
  execHost?: string;
  /** PBS exec_vnode: the clone, `(<clone>:ncpus=N:mem=Mkb)`. */
  execVnode?: string;
}

export interface QstatFormatOptions {
  /** The server name: ids print as `<id>.<server>`, and JSON's `pbs_server`. */
  server: string;
  /** Epoch ms: elapsed time of running jobs, JSON's `timestamp`. */
  now?: number;
  /** IANA time zone for dates (default: the process's local zone). */
  timeZone?: string;
  /** JSON's `pbs_version`. */
  version?: string;
  /** -w: -f values on one line, never wrapped. */
  wide?: boolean;
}

/** One -f attribute: PBS name, optional resource (`Resource_List.ncpus`) and value. */
export interface QstatAttribute {
  name: string;
  resource?: string;
  value: string;
}

const TRUNC = '*';
const BLANK = ' -- ';
/** PBS shows at most this much of a comment under a job (3 spaces indent on an 80-column line). */
const COMMENT_WIDTH = 74;
const LINE_LIMIT = 78;

// ---------------------------------------------------------------- helpers

/** `12` -> `12.server`; ids that already carry a server stay as they are. */
export function displayJobId(id: string, server: string): string {
  return id.includes('.') ? id : `${id}.${server}`;
}

/** PBS's trunc_value: longer than `width` -> cut to width with "*" as the last character. */
function trunc(value: string, width: number): string {
  return value.length > width ? value.slice(0, width - 1) + TRUNC : value;
}

function left(value: string, width: number): string {
  return trunc(value, width).padEnd(width);
}

function right(value: string, width: number): string {
  return trunc(value, width).padStart(width);
}

function trimLines(lines: string[]): string {
  return lines.map((l) => l.trimEnd()).join('\n') + '\n';
}

/** ctime(3) layout, `Thu Jun 13 09:05:00 2024`, in the given or local time zone. */
export function formatCtime(ms: number, timeZone?: string): string {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    weekday: 'short',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
    year: 'numeric',
  }).formatToParts(new Date(ms));
  const get = (t: Intl.DateTimeFormatPartTypes): string => parts.find((p) => p.type === t)?.value ?? '';
  return `${get('weekday')} ${get('month')} ${get('day').padStart(2)} ${get('hour')}:${get('minute')}:${get('second')} ${get('year')}`;
}

export function elapsedSec(job: QstatJob, now: number | undefined): number | undefined {
  if (job.usage?.walltimeSec !== undefined) return job.usage.walltimeSec;
  if (job.startedAt === undefined) return undefined;
  const end = job.endedAt ?? now;
  return end === undefined ? undefined : Math.max(0, Math.floor((end - job.startedAt) / 1000));
}

function comment(job: QstatJob): string | undefined {
  return job.comment ?? job.reason;
}

/** PBS's cnv_size: keep the unit, but move up a unit (rounding up) past 4 digits. */
export function shortSize(mib: number): string {
  const m = /^(\d+)(mb|gb|tb)$/.exec(formatSize(mib)) as RegExpExecArray;
  const units = ['mb', 'gb', 'tb', 'pb'];
  let n = Number(m[1]);
  let unit = units.indexOf(m[2]);
  while (n > 9999) {
    n = Math.ceil(n / 1024);
    unit++;
  }
  return `${n}${units[unit]}`;
}

// ------------------------------------------------------------ default table

const DEFAULT_HEADER = [
  'Job id            Name             User              Time Use S Queue',
  '----------------  ---------------- ----------------  -------- - -----',
];

/** Default-table id: the sequence number and the first label of the server name. */
function shortJobId(id: string, server: string): string {
  const [seq, host] = displayJobId(id, server).split('.');
  return host === undefined ? seq : `${seq}.${host}`;
}

/** PBS cuts names of 16 characters or more to 15 plus "*". */
function tableName(name: string): string {
  return name.length >= 16 ? name.slice(0, 15) + TRUNC : name;
}

/** `qstat`: one line per job under PBS's header; empty text for no jobs. */
export function formatQstatTable(jobs: readonly QstatJob[], opts: QstatFormatOptions): string {
  if (jobs.length === 0) return '';
  const rows = jobs.map((job) => {
    const cput = job.usage?.cputSec === undefined ? '0' : formatWalltime(job.usage.cputSec);
    return [
      left(shortJobId(job.id, opts.server), 17),
      left(tableName(job.spec.name), 16),
      left(job.spec.user, 16),
      ' ' + right(cput, 8),
      job.state,
      trunc(job.spec.queue, 16),
    ].join(' ');
  });
  return trimLines([...DEFAULT_HEADER, ...rows]);
}

// ---------------------------------------------------------- alternate table

const ALT_HEADER = [
  `${' '.repeat(60)}Req'd  Req'd   Elap`,
  'Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time',
  '--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----',
];

/** Req'd/Elap times: PBS prints `%5.5s` of HH:MM:SS, which leaves HH:MM. */
function hhmm(seconds: number | undefined): string {
  return seconds === undefined ? BLANK : formatWalltime(seconds).slice(0, 5);
}

function altRow(job: QstatJob, opts: QstatFormatOptions): string {
  const mem = job.spec.resources.memMiB > 0 ? shortSize(job.spec.resources.memMiB) : BLANK;
  return [
    left(displayJobId(job.id, opts.server), 15),
    left(job.spec.user, 8),
    left(job.spec.queue, 8),
    left(job.spec.name, 10),
    right(BLANK, 6),
    right('1', 3),
    right(String(job.spec.resources.ncpus), 3),
    right(mem, 6),
    right(hhmm(job.spec.walltimeSec), 5),
    job.state,
    right(hhmm(elapsedSec(job, opts.now)), 5),
  ].join(' ');
}

function commentLine(text: string): string {
  const shown = text.length > COMMENT_WIDTH ? text.slice(0, COMMENT_WIDTH - 3) + '...' : text;
  return `   ${shown}`;
}

/** `qstat -a` (and `-s` with `comments`: the comment, or the reason, under each job). */
export function formatQstatAlternate(jobs: readonly QstatJob[], opts: QstatFormatOptions & { comments?: boolean }): string {
  if (jobs.length === 0) return '';
  const lines = ['', `${opts.server}: `, ...ALT_HEADER];
  for (const job of jobs) {
    lines.push(altRow(job, opts));
    const c = comment(job);
    if (opts.comments && c !== undefined && c !== '') lines.push(commentLine(c));
  }
  return trimLines(lines);
}

// ------------------------------------------------------------ attributes

function pathAttr(headnode: string, path: string | undefined): string | undefined {
  return path === undefined ? undefined : `${headnode}:${path}`;
}

/** PBS escapes commas inside Variable_List values. */
function variableList(job: QstatJob): [string, string][] {
  const s = job.spec;
  const vars: [string, string][] = [
    ['PBS_O_LOGNAME', s.user],
    ['PBS_O_WORKDIR', s.cwd],
    ['PBS_O_QUEUE', s.queue],
    ['PBS_O_HOST', s.submitHost],
  ];
  for (const [k, v] of Object.entries(s.env)) if (!k.startsWith('PBS_O_')) vars.push([k, v]);
  return vars;
}

function usageAttrs(u: JobUsage): QstatAttribute[] {
  const out: QstatAttribute[] = [];
  if (u.cputSec !== undefined) out.push({ name: 'resources_used', resource: 'cput', value: formatWalltime(u.cputSec) });
  if (u.memKiB !== undefined) out.push({ name: 'resources_used', resource: 'mem', value: `${u.memKiB}kb` });
  if (u.walltimeSec !== undefined) out.push({ name: 'resources_used', resource: 'walltime', value: formatWalltime(u.walltimeSec) });
  return out;
}

function resourceListAttrs(job: QstatJob): QstatAttribute[] {
  const r = job.spec.resources;
  const list = new Map<string, string>(Object.entries(job.spec.extraResources ?? {}));
  if (r.memMiB > 0) list.set('mem', formatSize(r.memMiB));
  list.set('ncpus', String(r.ncpus));
  list.set('nodect', '1');
  if (job.spec.walltimeSec !== undefined) list.set('walltime', formatWalltime(job.spec.walltimeSec));
  // PBS lists resources by name.
  const out: QstatAttribute[] = [...list.keys()].sort().map((k) => ({ name: 'Resource_List', resource: k, value: list.get(k) as string }));
  // What the clone really has; it differs from the list while memory/CPUs above the headnode's wait for hot-plug.
  const a = job.spec.assigned;
  if (a !== undefined) {
    out.push({ name: 'resources_assigned', resource: 'mem', value: formatSize(a.memMiB) });
    out.push({ name: 'resources_assigned', resource: 'ncpus', value: String(a.ncpus) });
  }
  return out;
}

/** An array's indices as PBS writes them: `1-10`, `1-197:4`, or runs joined by commas. */
export function formatArrayIndices(indices: readonly number[]): string {
  if (indices.length === 1) return String(indices[0]);
  const step = indices[1] - indices[0];
  if (step > 0 && indices.every((v, i) => i === 0 || v - indices[i - 1] === step)) {
    return `${indices[0]}-${indices.at(-1)}${step === 1 ? '' : `:${step}`}`;
  }
  const runs: string[] = [];
  let start = indices[0];
  let prev = start;
  for (const v of [...indices.slice(1), Number.NaN]) {
    if (v === prev + 1) {
      prev = v;
      continue;
    }
    runs.push(start === prev ? String(start) : `${start}-${prev}`);
    start = prev = v;
  }
  return runs.join(',');
}

/** A job's -f attributes in PBS's order; absent values are left out. */
export function jobAttributes(job: QstatJob, opts: QstatFormatOptions): QstatAttribute[] {
  const s = job.spec;
  const attrs: QstatAttribute[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value !== undefined) attrs.push({ name, value });
  };
  const time = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : formatCtime(ms, opts.timeZone));
  add('Job_Name', s.name);
  add('Job_Owner', `${s.user}@${s.submitHost}`);
  if (job.usage) attrs.push(...usageAttrs(job.usage));
  add('job_state', job.state);
  add('queue', s.queue);
  add('server', opts.server);
  add('Account_Name', s.accountName);
  add('ctime', time(job.queuedAt));
  add('Error_Path', pathAttr(s.headnode, job.errorPath ?? s.stderrPath));
  add('exec_host', job.execHost);
  add('exec_vnode', job.execVnode);
  add('group_list', s.groupList);
  add('Hold_Types', job.state === 'H' ? 'u' : 'n');
  add('interactive', s.interactive ? 'True' : undefined); // PBS shows it for -I jobs only
  add('Join_Path', s.join);
  add('Mail_Points', s.mailPoints);
  add('Mail_Users', s.mailUsers?.join(','));
  add('Output_Path', pathAttr(s.headnode, job.outputPath ?? s.stdoutPath));
  add('Priority', String(s.priority));
  add('qtime', time(job.queuedAt));
  add('Rerunable', s.rerunnable ? 'True' : 'False');
  attrs.push(...resourceListAttrs(job));
  add('stime', time(job.startedAt));
  add('Shell_Path_List', s.shell);
  // PBS shows the octal digits without leading zeros (-W umask=022 -> umask = 22).
  add('umask', s.umask?.replace(/^0+(?=\d)/, ''));
  add('obittime', time(job.endedAt));
  add(
    'Variable_List',
    variableList(job)
      .map(([k, v]) => `${k}=${v.replace(/,/g, '\\,')}`)
      .join(','),
  );
  add('comment', comment(job));
  add('mail_error', job.mailError);
  add('run_count', String(job.runCount));
  add('Exit_status', job.exitStatus === undefined ? undefined : String(job.exitStatus));
  add('Submit_Host', s.submitHost);
  add('project', s.project);
  if (job.array !== undefined) {
    add('array', 'True');
    add('array_indices_submitted', formatArrayIndices(job.array.indices));
    if (job.array.max !== undefined) add('max_run_subjobs', String(job.array.max));
  }
  if (job.arrayParent !== undefined) add('array_id', job.arrayParent);
  if (job.arrayIndex !== undefined) add('array_index', String(job.arrayIndex));
  return attrs;
}

// --------------------------------------------------------------------- -f

/**
 * PBS's prt_attr: split the value at commas and wrap before column 78 with a newline and
 * a tab; a piece too long for a line is broken character by character.
 */
function wrapValue(value: string, start: number): string {
  let out = '';
  let col = start;
  const pieces = value.split(',');
  pieces.forEach((piece, i) => {
    if (piece.length + col < LINE_LIMIT) {
      out += piece;
      col += piece.length;
    } else {
      if (i > 0) {
        out += '\n\t';
        col = 9;
      }
      for (const ch of piece) {
        out += ch;
        if (++col > LINE_LIMIT) {
          out += '\n\t';
          col = 8;
        }
      }
    }
    if (i < pieces.length - 1) out += ',';
  });
  return out;
}

function attrLine(a: QstatAttribute, wide: boolean): string {
  const name = a.resource === undefined ? a.name : `${a.name}.${a.resource}`;
  const value = wide ? a.value : wrapValue(a.value, name.length + 7);
  return `    ${name} = ${value}`;
}

/** `qstat -f`: `Job Id: <id>` then indented `name = value` lines, a blank line after each job. */
export function formatQstatFull(jobs: readonly QstatJob[], opts: QstatFormatOptions): string {
  return jobs
    .map((job) => {
      const lines = jobAttributes(job, opts).map((a) => attrLine(a, opts.wide === true));
      return [`Job Id: ${displayJobId(job.id, opts.server)}`, ...lines].join('\n') + '\n\n';
    })
    .join('');
}

// ------------------------------------------------------------------- JSON

export type JsonValue = string | number | { [key: string]: JsonValue };

/** PBS prints values that are plain numbers as JSON numbers. */
function jsonScalar(value: string): string | number {
  return /^-?(0|[1-9]\d{0,14})(\.\d+)?$/.test(value) ? Number(value) : value;
}

function jobJson(job: QstatJob, opts: QstatFormatOptions): { [key: string]: JsonValue } {
  const out: { [key: string]: JsonValue } = {};
  for (const a of jobAttributes(job, opts)) {
    if (a.name === 'Variable_List') {
      out[a.name] = Object.fromEntries(variableList(job).map(([k, v]) => [k, jsonScalar(v)]));
    } else if (a.resource !== undefined) {
      const group = (out[a.name] ??= {}) as { [key: string]: JsonValue };
      group[a.resource] = jsonScalar(a.value);
    } else {
      out[a.name] = jsonScalar(a.value);
    }
  }
  return out;
}

/** PBS's JSON layout: 4-space indent, no space after the colon. */
export function toPbsJson(value: JsonValue, indent = 0): string {
  if (typeof value !== 'object') return JSON.stringify(value);
  const entries = Object.entries(value);
  if (entries.length === 0) return '{}';
  const pad = ' '.repeat(indent + 4);
  const body = entries.map(([k, v]) => `${pad}${JSON.stringify(k)}:${toPbsJson(v, indent + 4)}`).join(',\n');
  return `{\n${body}\n${' '.repeat(indent)}}`;
}

/** `qstat -f -F json`; `now` gives the document's timestamp. */
export function formatQstatJson(jobs: readonly QstatJob[], opts: QstatFormatOptions & { now: number }): string {
  const doc: { [key: string]: JsonValue } = {
    timestamp: Math.floor(opts.now / 1000),
    pbs_version: opts.version ?? 'copper',
    pbs_server: opts.server,
    Jobs: Object.fromEntries(jobs.map((job) => [displayJobId(job.id, opts.server), jobJson(job, opts)])),
  };
  return toPbsJson(doc) + '\n';
}
