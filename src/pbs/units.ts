/**
 * PBS value syntaxes: durations, sizes, `-a` date-times and array index ranges.
 * Pure functions; every malformed value throws a UsageError of the form
 * `<label>: "<text>" <problem>` so callers only choose the label (e.g. `-l walltime`).
 */
import { UsageError } from '../errors.js';

/** The most subjobs one array submission may create. */
export const MAX_ARRAY_TASKS = 100_000;

/** Array indices in ascending order, and the optional `%max` concurrency limit. */
export interface ArraySpec {
  indices: number[];
  max?: number;
}

function bad(label: string, text: string, problem: string): UsageError {
  return new UsageError(`${label}: "${text}" ${problem}`);
}

/** A decimal integer that survives Number arithmetic, or undefined. */
function toSafeInt(digits: string): number | undefined {
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : undefined;
}

// ---------------------------------------------------------------- durations

const DURATION = /^(\d+)(?::(\d+))?(?::(\d+))?(?:\.(\d+))?$/;

/**
 * `[[HH:]MM:]SS[.frac]` or plain seconds -> whole seconds (a fraction rounds up: a limit
 * must never shrink). The leading field may exceed its usual range (`90:00` = 90 minutes),
 * the following ones must be 0-59, as PBS requires.
 */
export function parseWalltime(text: string, label = 'walltime'): number {
  const m = DURATION.exec(text);
  if (!m) throw bad(label, text, 'is not a duration; use [[HH:]MM:]SS, e.g. 01:30:00');
  const fields = [m[1], m[2], m[3]].filter((f): f is string => f !== undefined).map(Number);
  for (let i = 1; i < fields.length; i++) {
    if (fields[i] > 59) throw bad(label, text, 'has minutes or seconds above 59');
  }
  let seconds = fields.reduce((acc, f) => acc * 60 + f, 0);
  if (m[4] !== undefined && Number(m[4]) > 0) seconds += 1;
  if (!Number.isSafeInteger(seconds)) throw bad(label, text, 'is too long');
  if (seconds <= 0) throw bad(label, text, 'must be more than 0 seconds');
  return seconds;
}

/** Seconds -> `HH:MM:SS` (hours grow past 99 as PBS prints them). */
export function formatWalltime(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(Math.floor(s / 3600))}:${two(Math.floor((s % 3600) / 60))}:${two(s % 60)}`;
}

// -------------------------------------------------------------------- sizes

const SIZE = /^(\d+)([kmgtp]?)([bw]?)$/i;
const MAGNITUDE: Record<string, number> = { '': 0, k: 1, m: 2, g: 3, t: 4, p: 5 };
const BYTES_PER_WORD = 8;

/**
 * PBS size `N[k|m|g|t|p][b|w]` (`8gb`, `512mb`, `2g`, `100kw`; a bare number is bytes;
 * units are powers of 1024, a word is 8 bytes) -> MiB, rounded up.
 */
export function parseSize(text: string, label = 'mem'): number {
  const m = SIZE.exec(text);
  if (!m) {
    const hint = /^\d+\.\d+/.test(text) ? 'has a fraction; use a smaller unit, e.g. 1536mb' : 'is not a size; use e.g. 8gb, 512mb or 1024kb';
    throw bad(label, text, hint);
  }
  const n = toSafeInt(m[1]);
  if (n === undefined) throw bad(label, text, 'is too large');
  if (n === 0) throw bad(label, text, 'must be more than 0');
  const power = MAGNITUDE[m[2].toLowerCase()];
  const unitBytes = m[3].toLowerCase() === 'w' ? BYTES_PER_WORD : 1;
  // Work in MiB directly for big units so large values stay exact.
  const mib = power >= 2 ? n * unitBytes * 1024 ** (power - 2) : Math.ceil((n * unitBytes * 1024 ** power) / 1024 ** 2);
  if (!Number.isSafeInteger(mib)) throw bad(label, text, 'is too large');
  return mib;
}

/** MiB -> the largest exact PBS unit: `8gb`, `1tb`, `1536mb`. */
export function formatSize(mib: number): string {
  if (mib > 0 && mib % 1024 ** 2 === 0) return `${mib / 1024 ** 2}tb`;
  if (mib > 0 && mib % 1024 === 0) return `${mib / 1024}gb`;
  return `${mib}mb`;
}

// --------------------------------------------------------------- date-times

interface DateFields {
  year?: number;
  month?: number;
  day?: number;
  hour: number;
  minute: number;
  second: number;
}

const DATETIME = /^(\d{4}|\d{6}|\d{8}|\d{10}|\d{12})(?:\.(\d{2}))?$/;

/** Splits `[[[[CC]YY]MM]DD]hhmm[.SS]` from the right. */
function splitDateTime(digits: string, seconds: string | undefined, nowYear: number): DateFields {
  const take = (from: number, len: number): number => Number(digits.slice(from, from + len));
  const end = digits.length;
  const f: DateFields = { hour: take(end - 4, 2), minute: take(end - 2, 2), second: seconds === undefined ? 0 : Number(seconds) };
  if (end >= 6) f.day = take(end - 6, 2);
  if (end >= 8) f.month = take(end - 8, 2);
  if (end === 10) f.year = Math.floor(nowYear / 100) * 100 + take(0, 2);
  if (end === 12) f.year = take(0, 4);
  return f;
}

function checkRanges(f: DateFields, label: string, text: string): void {
  if (f.hour > 23) throw bad(label, text, 'has an hour above 23');
  if (f.minute > 59) throw bad(label, text, 'has minutes above 59');
  if (f.second > 59) throw bad(label, text, 'has seconds above 59');
  if (f.month !== undefined && (f.month < 1 || f.month > 12)) throw bad(label, text, 'has a month outside 01-12');
  if (f.day !== undefined && (f.day < 1 || f.day > 31)) throw bad(label, text, 'has a day outside 01-31');
}

/** Local time, or undefined when the day does not exist in that month (no Date roll-over). */
function localTime(year: number, month: number, day: number, f: DateFields): number | undefined {
  const d = new Date(year, month - 1, day, f.hour, f.minute, f.second, 0);
  return d.getMonth() === month - 1 && d.getDate() === day ? d.getTime() : undefined;
}

/**
 * PBS `-a` date-time `[[[[CC]YY]MM]DD]hhmm[.SS]` in local time -> epoch ms. As in PBS, a
 * missing field is filled from `now` and, when that lands in the past (or on a day the month
 * lacks), the smallest missing field moves forward: no day given -> tomorrow, no month ->
 * next month, no year -> next year. A fully given date in the past is returned as is.
 */
export function parsePbsDateTime(text: string, now: number, label = '-a'): number {
  const m = DATETIME.exec(text);
  if (!m) throw bad(label, text, 'is not a date-time; use [[[[CC]YY]MM]DD]hhmm[.SS], e.g. 202501311830');
  const today = new Date(now);
  const f = splitDateTime(m[1], m[2], today.getFullYear());
  checkRanges(f, label, text);
  let year = f.year ?? today.getFullYear();
  let month = f.month ?? today.getMonth() + 1;
  let day = f.day ?? today.getDate();
  const roll = f.day === undefined ? 'day' : f.month === undefined ? 'month' : f.year === undefined ? 'year' : 'none';
  // 8 years covers every roll: a day exists within 12 months, 29 February within 8 years.
  for (let attempt = 0; attempt < 12 * 8; attempt++) {
    const t = localTime(year, month, day, f);
    if (t !== undefined && (t > now || roll === 'none')) return t;
    if (roll === 'none') break;
    if (roll === 'day') {
      const next = new Date(year, month - 1, day + 1);
      [year, month, day] = [next.getFullYear(), next.getMonth() + 1, next.getDate()];
    } else if (roll === 'month') {
      [year, month] = month === 12 ? [year + 1, 1] : [year, month + 1];
    } else {
      year += 1;
    }
  }
  throw bad(label, text, `names a day that does not exist (${String(day).padStart(2, '0')}/${String(month).padStart(2, '0')})`);
}

// ------------------------------------------------------------ array ranges

interface Range {
  start: number;
  end: number;
  step: number;
}

function rangeCount(r: Range): number {
  return Math.floor((r.end - r.start) / r.step) + 1;
}

function expand(ranges: Range[]): number[] {
  const out = new Set<number>();
  for (const r of ranges) for (let i = r.start; i <= r.end; i += r.step) out.add(i);
  return [...out].sort((a, b) => a - b);
}

/** Splits off a trailing `%max`. */
function splitMax(text: string, label: string): { body: string; max?: number } {
  const at = text.lastIndexOf('%');
  if (at < 0) return { body: text };
  const maxText = text.slice(at + 1);
  if (!/^\d+$/.test(maxText)) throw bad(label, text, 'has a malformed %max; use e.g. %10');
  const max = toSafeInt(maxText);
  if (max === undefined || max < 1) throw bad(label, text, 'has %max below 1');
  return { body: text.slice(0, at), max };
}

const RANGE = /^(\d+)(?:-(\d+)(?::(-?\d+))?)?$/;

function parseRangeItem(item: string, text: string, label: string, strict: boolean): Range {
  const m = RANGE.exec(item);
  if (!m || (strict && m[2] === undefined)) {
    const form = strict ? 'X-Y[:Z][%max], e.g. 1-100:2%10' : 'X-Y[,X-Y...][%max] or a list, e.g. 1,3,5-7%2';
    throw bad(label, text, `is not an index range; use ${form}`);
  }
  const start = toSafeInt(m[1]);
  const end = m[2] === undefined ? start : toSafeInt(m[2]);
  const step = m[3] === undefined ? 1 : Number(m[3]);
  if (start === undefined || end === undefined) throw bad(label, text, 'has an index that is too large');
  if (step < 1) throw bad(label, text, `has step ${m[3]}; the step must be at least 1`);
  // PBS's -J wants at least two subjobs (Y > X); Torque's -t accepts a one-index range.
  if (strict ? end <= start : end < start) {
    throw bad(label, text, `has end ${end} ${strict ? 'not above' : 'below'} start ${start}`);
  }
  return { start, end, step };
}

function toArraySpec(ranges: Range[], max: number | undefined, label: string, text: string): ArraySpec {
  const count = ranges.reduce((acc, r) => acc + rangeCount(r), 0);
  if (count > MAX_ARRAY_TASKS) throw bad(label, text, `has ${count} indices; at most ${MAX_ARRAY_TASKS} are allowed`);
  const spec: ArraySpec = { indices: expand(ranges) };
  if (max !== undefined) spec.max = max;
  return spec;
}

/** PBS `-J X-Y[:Z][%max]` (Y > X, Z >= 1). */
export function parseArrayRange(text: string, label = '-J'): ArraySpec {
  const { body, max } = splitMax(text, label);
  return toArraySpec([parseRangeItem(body, text, label, true)], max, label, text);
}

/** Torque `-t 1-10%6` or lists `1,3,5-7` (steps `X-Y:Z` accepted too); indices sorted, duplicates dropped. */
export function parseArrayList(text: string, label = '-t'): ArraySpec {
  const { body, max } = splitMax(text, label);
  if (body === '') throw bad(label, text, 'is empty; use e.g. 1-10 or 1,3,5-7');
  const ranges = body.split(',').map((item) => parseRangeItem(item, text, label, false));
  return toArraySpec(ranges, max, label, text);
}
