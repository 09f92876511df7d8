import type { JobRecord } from '../queue/job.js';

/** PBS accounting record types: Queued, Started, Ended, Deleted, Rerun, Aborted. */
export type AccountingType = 'Q' | 'S' | 'E' | 'D' | 'R' | 'A';

/** One parsed accounting line: `MM/DD/YYYY HH:MM:SS;T;jobid;key=value ...`. */
export interface AccountingLine {
  time: Date;
  type: string;
  jobId: string;
  /** The message part as written. */
  message: string;
  /** key=value pairs of the message (empty for a free-text message). */
  attrs: Record<string, string>;
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/** PBS writes local time: `11/28/2026 06:40:01`. */
export function accountingTime(ms: number): string {
  const d = new Date(ms);
  return `${pad(d.getMonth() + 1)}/${pad(d.getDate())}/${d.getFullYear()} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The day file a record at `ms` goes to: `YYYYMMDD`, local time as PBS does. */
export function accountingFileName(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}`;
}

/** `HH:MM:SS` with hours unbounded, as PBS prints walltime and cput. */
export function hms(sec: number): string {
  const s = Math.max(0, Math.round(sec));
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

export function parseHms(text: string): number | undefined {
  const m = /^(\d+):(\d{1,2}):(\d{1,2})$/.exec(text);
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : undefined;
}

/** PBS sizes: `524288kb`, `512mb`; returns KiB. */
export function parseSizeKiB(text: string): number | undefined {
  const m = /^(\d+)([kmgt]?)b?$/i.exec(text);
  if (!m) return undefined;
  const mult = { '': 1 / 1024, k: 1, m: 1024, g: 1024 ** 2, t: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

/** A value PBS's readers split on spaces: quote one that has spaces, never break the line. */
function value(v: string | number): string {
  const s = String(v).replace(/[\r\n;]/g, ' ');
  return /\s|"/.test(s) ? `"${s.replace(/"/g, "'")}"` : s;
}

function kv(pairs: Array<[string, string | number | undefined]>): string {
  return pairs
    .filter((p): p is [string, string | number] => p[1] !== undefined)
    .map(([k, v]) => `${k}=${value(v)}`)
    .join(' ');
}

const sec = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : Math.floor(ms / 1000));

/** The clone a job ran in, named as the runner names its hostname (PBS exec_vnode). */
export function cloneOf(r: JobRecord): string {
  const task = r.arrayIndex !== undefined ? `-${r.arrayIndex}` : '';
  return `${r.spec.headnode}-${r.seq}${task}`;
}

/** The attributes S, E, R and A records share: who, what was asked, when. */
function jobAttrs(r: JobRecord): Array<[string, string | number | undefined]> {
  const { ncpus, memMiB } = r.spec.resources;
  const started = r.startedAt !== undefined;
  return [
    ['user', r.spec.user],
    ['group', r.spec.group],
    ['project', '_pbs_project_default'],
    ['jobname', r.spec.name],
    ['queue', r.spec.queue],
    ['ctime', sec(r.queuedAt)],
    ['qtime', sec(r.queuedAt)],
    ['etime', sec(r.beginAt !== undefined && r.beginAt > r.queuedAt ? r.beginAt : r.queuedAt)],
    ['start', sec(r.startedAt)],
    // exec_host: the compute host (gc nodes' name); exec_vnode: the clone on it.
    ['exec_host', started ? `${r.execHost ?? cloneOf(r)}/0${ncpus > 1 ? `*${ncpus}` : ''}` : undefined],
    ['exec_vnode', started ? `(${cloneOf(r)}:ncpus=${ncpus}${memMiB ? `:mem=${memMiB * 1024}kb` : ''})` : undefined],
    ['Resource_List.mem', memMiB ? `${memMiB}mb` : undefined],
    ['Resource_List.ncpus', ncpus],
    ['Resource_List.nodect', 1],
    ['Resource_List.place', 'pack'],
    ['Resource_List.select', `1:ncpus=${ncpus}${memMiB ? `:mem=${memMiB}mb` : ''}`],
    ['Resource_List.walltime', r.spec.walltimeSec !== undefined ? hms(r.spec.walltimeSec) : undefined],
    ['session', 0],
  ];
}

/** What the job used: CPU time and peak memory as measured, walltime from its start to its end. */
function usageAttrs(r: JobRecord, endMs: number): Array<[string, string | number | undefined]> {
  const wall = r.startedAt !== undefined ? Math.max(0, (endMs - r.startedAt) / 1000) : 0;
  const cput = r.cputSec;
  return [
    ['end', sec(endMs)],
    ['Exit_status', r.exitStatus],
    ['resources_used.cpupercent', cput !== undefined && wall > 0 ? Math.round((cput / wall) * 100) : undefined],
    ['resources_used.cput', cput !== undefined ? hms(cput) : undefined],
    ['resources_used.mem', r.memKiB !== undefined ? `${r.memKiB}kb` : undefined],
    ['resources_used.ncpus', r.spec.resources.ncpus],
    ['resources_used.walltime', hms(wall)],
    ['run_count', r.runCount],
  ];
}

/** The message part of each record type, from the job's record at that moment. */
export function accountingMessage(type: AccountingType, r: JobRecord, atMs: number, requestor?: string): string {
  switch (type) {
    case 'Q':
      return kv([['queue', r.spec.queue]]);
    case 'S':
      return kv([...jobAttrs(r), ['run_count', r.runCount]]);
    case 'D':
      return kv([['requestor', requestor ?? `${r.spec.user}@${r.spec.submitHost}`]]);
    case 'E':
    case 'R':
    case 'A':
      return kv([...jobAttrs(r), ...usageAttrs(r, r.endedAt ?? atMs)]);
  }
}

export function accountingLine(type: AccountingType, r: JobRecord, atMs: number, requestor?: string): string {
  return `${accountingTime(atMs)};${type};${r.id};${accountingMessage(type, r, atMs, requestor)}`;
}

/** Split a message into key=value pairs (double-quoted values may hold spaces). */
export function parseAttrs(message: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([A-Za-z_][\w.]*)=("([^"]*)"|\S*)/g;
  for (let m = re.exec(message); m; m = re.exec(message)) out[m[1]] = m[3] ?? m[2];
  return out;
}

export function parseAccountingLine(line: string): AccountingLine | undefined {
  const m = /^(\d\d)\/(\d\d)\/(\d{4}) (\d\d):(\d\d):(\d\d);([A-Za-z]);([^;]+);(.*)$/.exec(line);
  if (!m) return undefined;
  const time = new Date(Number(m[3]), Number(m[1]) - 1, Number(m[2]), Number(m[4]), Number(m[5]), Number(m[6]));
  return { time, type: m[7], jobId: m[8], message: m[9], attrs: parseAttrs(m[9]) };
}
