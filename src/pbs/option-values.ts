/**
 * Validation of single qsub option values (-N, -j, -v, -W, -p, -r, -m, -M, -S, -q, --cron).
 * Each function throws a one-line UsageError naming the option.
 */
import { CronExpressionParser } from 'cron-parser';
import { UsageError } from '../errors.js';
import type { JoinMode } from '../queue/job.js';

export const MAX_JOB_NAME = 236;

/** PBS job name rules: 1-236 characters, starting alphabetic, no white space; no `/` (it names output files). */
export function validateJobName(name: string): string {
  if (name === '') throw new UsageError('-N: the job name is empty');
  if (name.length > MAX_JOB_NAME) throw new UsageError(`-N: the job name has ${name.length} characters; at most ${MAX_JOB_NAME} are allowed`);
  if (!/^[A-Za-z]/.test(name)) throw new UsageError(`-N ${name}: the job name must start with a letter`);
  if (/\s/.test(name)) throw new UsageError(`-N "${name}": the job name must not contain white space`);
  if (/[/\x00-\x1f\x7f]/.test(name)) throw new UsageError(`-N ${name}: the job name must not contain "/" or control characters`);
  return name;
}

export function parseJoin(value: string): JoinMode {
  if (value === 'oe' || value === 'eo' || value === 'n') return value;
  throw new UsageError(`-j ${value}: use oe (stderr into stdout), eo (stdout into stderr) or n`);
}

export function parseYesNo(value: string, option: string): boolean {
  if (value === 'y') return true;
  if (value === 'n') return false;
  throw new UsageError(`${option} ${value}: use y or n`);
}

export function parsePriority(value: string): number {
  if (!/^[+-]?\d+$/.test(value) || Number(value) < -1024 || Number(value) > 1023) {
    throw new UsageError(`-p ${value}: the priority must be a whole number from -1024 to 1023`);
  }
  return Number(value);
}

/** PBS queue names: a letter, then letters, digits, `_`, `-` or `.`; 15 characters at most. */
export function parseQueue(value: string): string {
  if (value.includes('@')) throw new UsageError(`-q ${value}: queues on other servers are not supported; give a queue name`);
  if (!/^[A-Za-z][A-Za-z0-9_.-]{0,14}$/.test(value)) {
    throw new UsageError(`-q ${value}: a queue name is a letter followed by up to 14 letters, digits, "_", "-" or "."`);
  }
  return value;
}

/** -m: `n`, or any of a (abort), b (begin), e (end), j (subjobs). */
export function parseMailPoints(value: string): string {
  if (value === 'n' || /^[abej]+$/.test(value)) return value;
  throw new UsageError(`-m ${value}: use any of a, b, e (and j for array subjobs), or n for none`);
}

export function parseMailUsers(value: string): string[] {
  const users = value.split(',').map((u) => u.trim());
  if (users.some((u) => u === '' || /\s/.test(u))) throw new UsageError(`-M ${value}: give a comma-separated list of addresses`);
  return users;
}

/** -P: a project name, PBS's rules (no white space or commas). */
export function parseProject(value: string): string {
  if (value === '' || /[\s,]/.test(value) || value.length > 236) throw new UsageError(`-P ${value}: a project name has no spaces or commas`);
  return value;
}

/** -S: an absolute path; of PBS's `path[@host][,path@host]` lists the first path is taken. */
export function parseShell(value: string): string {
  const first = (value.split(',')[0] ?? '').split('@')[0] ?? '';
  if (!/^\/\S*$/.test(first)) throw new UsageError(`-S ${value}: give the absolute path of a shell, e.g. /bin/bash`);
  return first;
}

export function parseHeadnodeName(value: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(value)) throw new UsageError(`--headnode ${value}: not a headnode name`);
  return value;
}

// ----------------------------------------------------------------------- -v

/** Splits on commas outside '...' / "..." quotes. */
function splitQuotedList(value: string): string[] {
  const items: string[] = [];
  let current = '';
  let quote: string | undefined;
  for (const c of value) {
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
      current += c;
    } else if (c === ',') {
      items.push(current);
      current = '';
    } else {
      if (c === '"' || c === "'") quote = c;
      current += c;
    }
  }
  if (quote !== undefined) throw new UsageError(`-v ${value}: unterminated ${quote} quote`);
  items.push(current);
  return items;
}

function unquote(value: string): string {
  const m = /^(["'])(.*)\1$/s.exec(value);
  return m ? (m[2] as string) : value;
}

export interface VariableListResult {
  vars: Record<string, string>;
  warnings: string[];
}

/** -v `VAR[=value],...`; a bare VAR takes its value from the submitter's environment. */
export function parseVariableList(value: string, callerEnv: Record<string, string>): VariableListResult {
  const out: VariableListResult = { vars: {}, warnings: [] };
  for (const item of splitQuotedList(value)) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`-v: "${name}" is not a variable name`);
    if (eq >= 0) {
      out.vars[name] = unquote(item.slice(eq + 1));
    } else if (callerEnv[name] !== undefined) {
      out.vars[name] = callerEnv[name] as string;
    } else {
      out.vars[name] = '';
      out.warnings.push(`-v ${name}: not set in your environment; the job gets it empty`);
    }
  }
  return out;
}

// ----------------------------------------------------------------------- -W

export type DependencyType = 'afterok' | 'afternotok' | 'afterany';

/** `afterok:1:2` = run after jobs 1 and 2 both succeed. Several entries are all required. */
export interface Dependency {
  type: DependencyType;
  jobIds: string[];
}

const DEPENDENCY_TYPES: readonly DependencyType[] = ['afterok', 'afternotok', 'afterany'];
/** `123`, `123.server`, arrays `123[]`, subjobs `123[4].server`. */
const JOB_ID = /^\d+(\[\d*\])?(\.[A-Za-z0-9][A-Za-z0-9.-]*)?$/;

/** `afterok:id[:id...][,type:id...]`; repeated types are merged. */
export function parseDependList(value: string): Dependency[] {
  const byType = new Map<DependencyType, string[]>();
  for (const item of value.split(',')) {
    const [type, ...ids] = item.split(':');
    if (!(DEPENDENCY_TYPES as readonly string[]).includes(type as string)) {
      throw new UsageError(`-W depend: "${type}" is not supported; use afterok, afternotok or afterany`);
    }
    if (ids.length === 0) throw new UsageError(`-W depend: ${type} needs job ids, e.g. ${type}:123`);
    for (const id of ids) {
      if (!JOB_ID.test(id)) throw new UsageError(`-W depend: "${id}" is not a job id`);
    }
    const list = byType.get(type as DependencyType) ?? [];
    byType.set(type as DependencyType, [...list, ...ids.filter((id) => !list.includes(id))]);
  }
  return [...byType].map(([type, jobIds]) => ({ type, jobIds }));
}

export interface WAttributes {
  block?: boolean;
  depend?: Dependency[];
  /** group_list=group[@host][,...]: the group asked (the first one; hosts have no meaning). */
  groupList?: string;
  /** umask=NNN (octal). */
  umask?: string;
  /** max_run_subjobs=N: the array's throttle, as `%N` would set it. */
  maxRunSubjobs?: number;
  /** One-line notes: attributes accepted with what Copper does instead. */
  warnings?: string[];
}

const SUPPORTED_W = ['depend', 'block', 'group_list', 'umask', 'sandbox', 'stagein', 'run_count', 'pwd', 'release_nodes_on_stageout', 'tolerate_node_failures', 'max_run_subjobs', 'x'];

/** -W attributes with no meaning here: accepted, and the warning says what Copper does. */
const IGNORED_W: Readonly<Record<string, string>> = {
  sandbox: 'the job runs in its submission directory inside the clone (a private copy of the headnode)',
  stagein: 'the clone already sees the headnode\'s files; nothing is copied in',
  run_count: 'Copper counts runs itself; a job lost by gcd runs again if rerunnable (-r y)',
  pwd: 'the job starts in the submission directory',
  release_nodes_on_stageout: 'a job has one clone, destroyed when it ends',
  tolerate_node_failures: 'a job has one clone',
  x: 'Torque/Moab extension attributes are ignored',
};

/** -W group_list: `group[@host][,group@host...]`; one group applies to one clone. */
function parseGroupList(value: string): string {
  const first = (value.split(/[,:]/)[0] ?? '').split('@')[0] ?? '';
  if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(first)) throw new UsageError(`-W group_list=${value}: give a group name, e.g. group_list=physics`);
  return first;
}

/** -W umask: 1 to 4 octal digits, as PBS takes it. */
function parseUmask(value: string): string {
  if (!/^[0-7]{1,4}$/.test(value)) throw new UsageError(`-W umask=${value}: give an octal mask, e.g. umask=022`);
  return value;
}

/**
 * -W `attr=value[,attr=value]`. A comma also separates dependency types inside `depend`,
 * so an item starts a new attribute only when it looks like `name=` (PBS reads it the same way).
 */
export function parseWAttributes(value: string, into: WAttributes = {}): WAttributes {
  const attrs: [string, string][] = [];
  for (const item of value.split(',')) {
    const m = /^([A-Za-z_]+)=(.*)$/s.exec(item);
    if (m) attrs.push([m[1] as string, m[2] as string]);
    else if (attrs.length > 0) (attrs[attrs.length - 1] as [string, string])[1] += `,${item}`;
    else throw new UsageError(`-W ${value}: expected attribute=value, e.g. depend=afterok:123`);
  }
  for (const [name, v] of attrs) {
    if (name === 'block') {
      if (!/^(true|false)$/i.test(v)) throw new UsageError(`-W block=${v}: use block=true or block=false`);
      into.block = v.toLowerCase() === 'true';
    } else if (name === 'depend') {
      into.depend = parseDependList(v);
    } else if (name === 'group_list') {
      into.groupList = parseGroupList(v);
    } else if (name === 'umask') {
      into.umask = parseUmask(v);
    } else if (name === 'max_run_subjobs') {
      if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`-W max_run_subjobs=${v}: give a whole number, e.g. max_run_subjobs=4`);
      into.maxRunSubjobs = Number(v);
    } else if (IGNORED_W[name] !== undefined) {
      (into.warnings ??= []).push(`-W ${name}=${v} ignored: ${IGNORED_W[name]}`);
    } else if (name === 'interactive') {
      throw new UsageError('-W interactive: interactive jobs are not supported; run the command in your headnode');
    } else {
      throw new UsageError(`-W ${name}: not supported (supported: ${SUPPORTED_W.join(', ')})`);
    }
  }
  return into;
}

// ------------------------------------------------------------------- --cron

const CRON_ALIASES = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly']);

/**
 * --cron: a 5-field pattern (minute hour day-of-month month day-of-week) or an alias such
 * as @daily, checked with cron-parser; a pattern that can never fire is refused.
 */
export function validateCron(pattern: string, now: number): string {
  const p = pattern.trim();
  const fields = p.split(/\s+/);
  if (p.startsWith('@')) {
    if (!CRON_ALIASES.has(p)) throw new UsageError(`--cron "${pattern}": unknown alias; use ${[...CRON_ALIASES].join(', ')}`);
  } else if (fields.length !== 5) {
    throw new UsageError(`--cron "${pattern}": expected 5 fields (minute hour day-of-month month day-of-week), got ${fields.length}`);
  }
  try {
    CronExpressionParser.parse(p, { currentDate: new Date(now) }).next();
  } catch (err) {
    const msg = (err as Error).message;
    // cron-parser refuses a day the listed months never have (e.g. 30 February) at parse time.
    if (/day of month/i.test(msg)) throw new UsageError(`--cron "${pattern}": never fires (no listed month has that day)`);
    throw new UsageError(`--cron "${pattern}": invalid pattern (${msg})`);
  }
  return p;
}
