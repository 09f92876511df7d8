import { UnknownJobError } from '../errors.js';
import type { JobRecord } from '../queue/job.js';
import { mayActOn, type Actor } from '../scheduler/actor.js';
import type { JobStore } from '../queue/job-store.js';
import type { AccountingReader } from './accounting-log.js';
import { parseHms, parseSizeKiB, type AccountingLine } from './record-format.js';

/** A job as the daily tools see it: its Redis record while it exists, and its accounting lines. */
export interface JobHistory {
  id: string;
  record?: JobRecord;
  lines: AccountingLine[];
}

/**
 * Find a job in Redis, else in the accounting files (its history expired). Another user's job
 * is unknown to a guest, as gcqstat does it: the owner is the `user=` of its S/E records.
 */
export async function findJobHistory(
  store: Pick<JobStore, 'parseId' | 'tryGet'>,
  accounting: AccountingReader | undefined,
  actor: Actor,
  idText: string,
  days?: number,
): Promise<JobHistory> {
  const id = store.parseId(idText);
  const record = await store.tryGet(id);
  if (record && !mayActOn(actor, record.spec.user)) throw new UnknownJobError(idText);
  const lines = accounting ? await accounting.recordsOf(id, days) : [];
  if (!record) {
    const owner = lines.find((l) => l.attrs.user !== undefined)?.attrs.user;
    if (!lines.length || (actor.kind !== 'admin' && (owner === undefined || !mayActOn(actor, owner)))) throw new UnknownJobError(idText);
  }
  return { id, ...(record ? { record } : {}), lines };
}

/** What efficiency is computed from, whichever source had it. */
export interface JobUsage {
  id: string;
  user: string;
  group: string;
  /** A JobState, or the state letter an accounting line gives. */
  state: string;
  exitStatus?: number;
  comment?: string;
  ncpus: number;
  /** Requested memory (the clone's RAM), MiB; 0 when unknown. */
  memMiB: number;
  walltimeSec?: number;
  cputSec?: number;
  memKiB?: number;
}

/** Usage from the live record, or from the last E (else R/A) accounting record. */
export function jobUsage(h: JobHistory, now = Date.now()): JobUsage | undefined {
  const r = h.record;
  if (r) {
    const u: JobUsage = { id: r.id, user: r.spec.user, group: r.spec.group, state: r.state, ncpus: r.spec.resources.ncpus, memMiB: r.spec.resources.memMiB };
    if (r.exitStatus !== undefined) u.exitStatus = r.exitStatus;
    if (r.comment) u.comment = r.comment;
    if (r.startedAt !== undefined) u.walltimeSec = Math.max(0, ((r.endedAt ?? now) - r.startedAt) / 1000);
    if (r.cputSec !== undefined) u.cputSec = r.cputSec;
    if (r.memKiB !== undefined) u.memKiB = r.memKiB;
    return u;
  }
  const last = [...h.lines].reverse().find((l) => l.type === 'E') ?? [...h.lines].reverse().find((l) => l.type === 'R' || l.type === 'A');
  if (!last) return undefined;
  const a = last.attrs;
  const num = (v: string | undefined): number | undefined => (v === undefined || v === '' || isNaN(Number(v)) ? undefined : Number(v));
  const u: JobUsage = {
    id: h.id,
    user: a.user ?? '?',
    group: a.group ?? '?',
    state: 'F',
    ncpus: num(a['Resource_List.ncpus']) ?? 1,
    memMiB: Math.round((parseSizeKiB(a['Resource_List.mem'] ?? '') ?? 0) / 1024),
  };
  const exit = num(a.Exit_status);
  if (exit !== undefined) u.exitStatus = exit;
  const wall = parseHms(a['resources_used.walltime'] ?? '');
  if (wall !== undefined) u.walltimeSec = wall;
  const cput = parseHms(a['resources_used.cput'] ?? '');
  if (cput !== undefined) u.cputSec = cput;
  const mem = parseSizeKiB(a['resources_used.mem'] ?? '');
  if (mem !== undefined) u.memKiB = mem;
  return u;
}
