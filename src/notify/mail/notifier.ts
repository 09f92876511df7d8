import type { Redis } from 'ioredis';
import { errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import type { JobRecord, JobState } from '../../queue/job.js';
import type { JobStore } from '../../queue/job-store.js';
import type { Keys } from '../../queue/keys.js';
import type { JobEndOutcome, JobLifecycleListener } from '../lifecycle.js';
import { composeMail, type ArraySummary, type MailKind } from './message.js';
import type { MailSettings } from './mail-settings.js';
import type { MailTransport } from './transport.js';

export interface MailNotifierOptions {
  jobs: Pick<JobStore, 'tryGet' | 'transition'>;
  redis: Redis;
  keys: Keys;
  serverName: string;
  settings: MailSettings;
  transport: MailTransport;
  /** How long an array's notes may outlive a gcd that died before the array ended. */
  notesTtlSec?: number;
}

const ANY_STATE: JobState[] = ['Q', 'H', 'W', 'R', 'E', 'F', 'B'];

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

// Largest peak memory of an array's tasks, kept in its notes hash.
const MAX_MEM_LUA = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'peakMemKiB') or '-1')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'peakMemKiB', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
`;

/**
 * Job mail (-m/-M) as a lifecycle listener. It never waits for a message on the job's path:
 * each one is sent in the background, and one that fails is logged and written on the job
 * (mail_error, shown by gcqstat -f) without touching its state or exit status. An array gets
 * one message for all its tasks: begin when the first task starts, end/abort when the array
 * ends (per task too with -m j); the notes that needs live in one Redis hash per array.
 */
export class MailNotifier implements JobLifecycleListener {
  private readonly inFlight = new Set<Promise<void>>();
  /** Per array: task notes still being written, so the array's end reads them complete. */
  private readonly arrayChains = new Map<string, Promise<void>>();
  private readonly ttl: number;

  constructor(private readonly o: MailNotifierOptions) {
    this.ttl = o.notesTtlSec ?? 30 * 24 * 3600;
    o.redis.defineCommand('gcMailMaxMem', { numberOfKeys: 1, lua: MAX_MEM_LUA });
  }

  onStart(job: JobRecord): void {
    const points = mailPoints(job);
    if (points === 'n') return;
    if (job.arrayParent === undefined) {
      if (points.includes('b')) this.background(this.send('begin', job.id, job));
      return;
    }
    if (points.includes('b') && points.includes('j')) this.background(this.send('begin', job.id, job));
    const parent = job.arrayParent;
    this.background(this.onArray(parent, async () => {
      // The first task to start claims the array's begin (HSETNX), once, even across gcd restarts.
      const first = await this.o.redis.hsetnx(this.o.keys.mail(parent), 'begunAt', String(Date.now()));
      await this.o.redis.expire(this.o.keys.mail(parent), this.ttl);
      if (first === 1 && points.includes('b')) await this.send('begin', parent);
    }));
  }

  onEnd(job: JobRecord, outcome: JobEndOutcome): void {
    const points = mailPoints(job);
    if (job.array) {
      this.background(this.onArray(job.id, () => this.endArray(job, points, outcome)));
      return;
    }
    if (job.arrayParent !== undefined) {
      const parent = job.arrayParent;
      this.background(this.onArray(parent, () => this.noteTask(parent, job, outcome)));
      if (points.includes('j')) {
        const kind = endKind(points, outcome.aborted);
        if (kind) this.background(this.send(kind, job.id, job));
      }
      return;
    }
    const kind = endKind(points, outcome.aborted);
    if (kind) this.background(this.send(kind, job.id, job));
  }

  /** Wait for messages still on their way (gcd shutdown), at most `timeoutMs`. */
  async close(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    await Promise.race([Promise.allSettled([...this.inFlight, ...this.arrayChains.values()]), late]);
    clearTimeout(timer);
    this.o.transport.close();
  }

  private async noteTask(parent: string, job: JobRecord, outcome: JobEndOutcome): Promise<void> {
    const key = this.o.keys.mail(parent);
    if (outcome.aborted) await this.o.redis.hset(key, 'aborted', '1');
    const fresh = await this.o.jobs.tryGet(job.id);
    const mem = fresh?.memKiB ?? job.memKiB;
    const redis = this.o.redis as unknown as { gcMailMaxMem: (key: string, mem: string, ttl: string) => Promise<number> };
    await redis.gcMailMaxMem(key, String(mem ?? -1), String(this.ttl));
  }

  private async endArray(job: JobRecord, points: string, outcome: JobEndOutcome): Promise<void> {
    const key = this.o.keys.mail(job.id);
    const notes = await this.o.redis.hgetall(key);
    await this.o.redis.del(key);
    const kind = endKind(points, outcome.aborted || notes.aborted === '1');
    if (!kind) return;
    const summary: ArraySummary = { tasks: job.array?.indices.length ?? 0 };
    if (notes.begunAt) summary.begunAt = Number(notes.begunAt);
    if (notes.peakMemKiB && Number(notes.peakMemKiB) >= 0) summary.peakMemKiB = Number(notes.peakMemKiB);
    await this.send(kind, job.id, job, summary);
  }

  /** Compose from the freshest record (usage and output paths are written late) and send. */
  private async send(kind: MailKind, id: string, given?: JobRecord, array?: ArraySummary): Promise<void> {
    const job = (await this.o.jobs.tryGet(id)) ?? given;
    if (!job) return;
    const to = this.recipients(job);
    try {
      const m = composeMail(kind, job, this.o.serverName, array);
      await this.o.transport.send({ from: this.o.settings.from, to, subject: m.subject, text: m.text });
      log.info('job mail sent', { job: id, kind, to });
    } catch (e) {
      const why = `${kind} mail to ${to.join(',')} not sent: ${errorMessage(e)}`;
      log.warn('job mail not sent', { job: id, kind, to, error: errorMessage(e) });
      // Only onto a record that still exists: an expired one must not come back as a stub.
      await this.o.jobs.transition(id, ANY_STATE, { mailError: why }).catch(() => undefined);
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
