import type { Redis } from 'ioredis';
import { errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import type { JobRecord } from '../../queue/job.js';
import type { JobTransition } from '../../queue/job-events.js';
import type { JobStore } from '../../queue/job-store.js';
import type { Keys } from '../../queue/keys.js';
import { composeMail, type ArraySummary, type MailKind } from './message.js';
import type { MailSettings } from './mail-settings.js';
import type { MailTransport } from './transport.js';

export interface MailNotifierOptions {
  /** Where a message that could not be sent is noted (mail_error). */
  jobs: Pick<JobStore, 'update'>;
  redis: Redis;
  keys: Keys;
  serverName: string;
  settings: MailSettings;
  transport: MailTransport;
  /** How long an array's notes may outlive a gcd that died before the array ended. */
  notesTtlSec?: number;
}

/** PBS's default -m is `a`: mail only when the system aborts the job. */
export function mailPoints(job: JobRecord): string {
  return job.spec.mailPoints ?? 'a';
}

/** Which message an ending gets, if any: an abort if asked for, else an end if asked for. */
export function endKind(points: string, aborted: boolean): MailKind | undefined {
  if (points === 'n') return undefined;
  if (aborted && points.includes('a')) return 'abort';
  return points.includes('e') ? 'end' : undefined;
}

/**
 * A job that ran (or tried to) was ended by the system rather than by its command: killed by
 * walltime, deleted while running, failed to start, lost with a gcd. A record written before
 * endReason existed is judged by its status (negative: Copper's own, see EXIT).
 */
export function endedBySystem(job: JobRecord): boolean {
  if (job.endReason !== undefined) return job.endReason !== 'exit';
  return job.exitStatus === undefined || job.exitStatus < 0;
}

// Largest peak memory of an array's tasks, kept in its notes hash.
const MAX_MEM_LUA = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'peakMemKiB') or '-1')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'peakMemKiB', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
`;

interface MailScripts {
  gcMailMaxMem(key: string, mem: string, ttl: string): Promise<number>;
}

/**
 * Job mail (-m/-M), driven by the job transition stream (Scheduler.events): begin is a job's
 * transition into R, end or abort its transition into F after it ran (`finish`; a job deleted
 * before it ran gets none), an array's begin its `array-begin` and its end its `array-end`.
 * It never waits for a message on the job's path: each one is sent in the background, and one
 * that fails is logged and written on the job (mail_error, shown by gcqstat -f) without
 * touching its state or exit status. An array gets one message for all its tasks (per task
 * too with -m j); what its end needs from its tasks lives in one Redis hash per array.
 */
export class MailNotifier {
  private readonly inFlight = new Set<Promise<void>>();
  /** Per array: task notes still being written, so the array's end reads them complete. */
  private readonly arrayChains = new Map<string, Promise<void>>();
  private readonly ttl: number;
  private readonly scripts: MailScripts;

  constructor(private readonly o: MailNotifierOptions) {
    this.ttl = o.notesTtlSec ?? 30 * 24 * 3600;
    o.redis.defineCommand('gcMailMaxMem', { numberOfKeys: 1, lua: MAX_MEM_LUA });
    this.scripts = o.redis as unknown as MailScripts;
  }

  /** A JobEvents listener: returns at once, whatever it has to send. */
  onTransition(t: JobTransition): void {
    if (t.event === 'run') this.begun(t.record);
    else if (t.event === 'array-begin') this.arrayBegun(t.record);
    else if (t.event === 'finish') this.ended(t.record);
    else if (t.event === 'array-end') this.arrayEnded(t.record);
  }

  /** Wait for messages still on their way (gcd shutdown), at most `timeoutMs`. */
  async close(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    await Promise.race([Promise.allSettled([...this.inFlight, ...this.arrayChains.values()]), late]);
    clearTimeout(timer);
    this.o.transport.close();
  }

  private begun(job: JobRecord): void {
    const points = mailPoints(job);
    // An array task's begin is the array's (array-begin), unless -m j asks for each task's.
    if (points.includes('b') && (job.arrayParent === undefined || points.includes('j'))) this.background(this.send('begin', job));
  }

  private arrayBegun(array: JobRecord): void {
    const points = mailPoints(array);
    this.background(
      this.onArray(array.id, async () => {
        const key = this.o.keys.mail(array.id);
        await this.o.redis.multi().hsetnx(key, 'begunAt', String(Date.now())).expire(key, this.ttl).exec();
        if (points.includes('b')) await this.send('begin', array);
      }),
    );
  }

  private ended(job: JobRecord): void {
    const points = mailPoints(job);
    const aborted = endedBySystem(job);
    if (job.arrayParent !== undefined) {
      const parent = job.arrayParent;
      this.background(this.onArray(parent, () => this.noteTask(parent, job, aborted)));
      if (!points.includes('j')) return;
    }
    const kind = endKind(points, aborted);
    if (kind) this.background(this.send(kind, job));
  }

  private arrayEnded(array: JobRecord): void {
    this.background(this.onArray(array.id, () => this.endArray(array)));
  }

  private async noteTask(parent: string, task: JobRecord, aborted: boolean): Promise<void> {
    const key = this.o.keys.mail(parent);
    if (aborted) await this.o.redis.hset(key, 'aborted', '1');
    await this.scripts.gcMailMaxMem(key, String(task.memKiB ?? -1), String(this.ttl));
  }

  private async endArray(array: JobRecord): Promise<void> {
    const key = this.o.keys.mail(array.id);
    const notes = await this.o.redis.hgetall(key);
    await this.o.redis.del(key);
    const kind = endKind(mailPoints(array), notes.aborted === '1');
    if (!kind) return;
    const summary: ArraySummary = { tasks: array.array?.indices.length ?? 0 };
    if (notes.begunAt) summary.begunAt = Number(notes.begunAt);
    if (notes.peakMemKiB && Number(notes.peakMemKiB) >= 0) summary.peakMemKiB = Number(notes.peakMemKiB);
    await this.send(kind, array, summary);
  }

  /** Compose from the record as its transition wrote it, and send. */
  private async send(kind: MailKind, job: JobRecord, array?: ArraySummary): Promise<void> {
    const to = this.recipients(job);
    try {
      const m = composeMail(kind, job, this.o.serverName, array);
      await this.o.transport.send({ from: this.o.settings.from, to, subject: m.subject, text: m.text });
      log.info('job mail sent', { job: job.id, kind, to });
    } catch (e) {
      const why = `${kind} mail to ${to.join(',')} not sent: ${errorMessage(e)}`;
      log.warn('job mail not sent', { job: job.id, kind, to, error: errorMessage(e) });
      // update() writes only onto a record that still exists: an expired one must not come back as a stub.
      await this.o.jobs.update(job.id, { mailError: why }).catch(() => undefined);
    }
  }

  private recipients(job: JobRecord): string[] {
    const users = job.spec.mailUsers?.length ? job.spec.mailUsers : [job.spec.user];
    return users.map((u) => (u.includes('@') ? u : `${u}@${this.o.settings.domain}`));
  }

  /** Run `step` after the array's earlier steps (task notes before the array's end). */
  private onArray(parent: string, step: () => Promise<void>): Promise<void> {
    const prev = this.arrayChains.get(parent) ?? Promise.resolve();
    const next = prev.then(step, step);
    this.arrayChains.set(parent, next);
    const clear = (): void => {
      if (this.arrayChains.get(parent) === next) this.arrayChains.delete(parent);
    };
    next.then(clear, clear);
    return next;
  }

  private background(p: Promise<void>): void {
    const tracked = p.catch((e: unknown) => {
      log.error('job mail step failed', { error: errorMessage(e) });
    });
    this.inFlight.add(tracked);
    void tracked.finally(() => this.inFlight.delete(tracked));
  }
}
