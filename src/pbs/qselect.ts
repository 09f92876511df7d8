/**
 * qselect's criteria and matching: which jobs `gcqselect -u -s -N -q -A -P -h` names. Pure;
 * the tool fetches the jobs and prints the matching ids one per line, as PBS's qselect does.
 */
import { UsageError } from '../errors.js';
import type { JobRecord } from '../queue/job.js';

export interface SelectCriteria {
  /** -u user[@host][,user...]: owners. */
  users?: string[];
  /** -s states, e.g. QR (PBS letters: Q H W R E F B X). */
  states?: string;
  /** -N name: the job name, exactly. */
  name?: string;
  /** -q queue[@server]: the queue. */
  queue?: string;
  /** -A account string. */
  account?: string;
  /** -P project. */
  project?: string;
  /** -h hold types (u, s, o, n): jobs with any of them, or with none for n. */
  holds?: string;
}

const STATES = /^[QHWREFBXTSMU]+$/;

export function parseSelectCriteria(a: { u?: string; s?: string; N?: string; q?: string; A?: string; P?: string; h?: string }): SelectCriteria {
  const c: SelectCriteria = {};
  if (a.u !== undefined) {
    const users = a.u.split(',').map((u) => u.split('@')[0] ?? '').filter((u) => u !== '');
    if (users.length === 0) throw new UsageError(`-u ${a.u}: give a comma-separated list of users`);
    c.users = users;
  }
  if (a.s !== undefined) {
    if (!STATES.test(a.s)) throw new UsageError(`-s ${a.s}: give job state letters, e.g. QR (Q queued, H held, W waiting, R running, E exiting, F finished)`);
    c.states = a.s;
  }
  if (a.N !== undefined) c.name = a.N;
  if (a.q !== undefined) c.queue = a.q.split('@')[0] ?? '';
  if (a.A !== undefined) c.account = a.A;
  if (a.P !== undefined) c.project = a.P;
  if (a.h !== undefined) {
    if (!/^[usopn]+$/.test(a.h)) throw new UsageError(`-h ${a.h}: use any of u, s, o, p, or n for none`);
    c.holds = a.h;
  }
  return c;
}

function holdMatches(job: JobRecord, wanted: string): boolean {
  const has = job.holds ?? '';
  if (wanted.includes('n') && has === '') return true;
  return [...has].some((h) => wanted.includes(h));
}

/** Does the job meet every criterion given? */
export function selectMatches(job: JobRecord, c: SelectCriteria): boolean {
  const s = job.spec;
  if (c.users && !c.users.includes(s.user)) return false;
  if (c.states !== undefined && !c.states.includes(job.state)) return false;
  if (c.name !== undefined && s.name !== c.name) return false;
  if (c.queue !== undefined && c.queue !== '' && s.queue !== c.queue) return false;
  if (c.account !== undefined && s.accountName !== c.account) return false;
  if (c.project !== undefined && s.project !== c.project) return false;
  if (c.holds !== undefined && !holdMatches(job, c.holds)) return false;
  return true;
}
