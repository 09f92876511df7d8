/**
 * The grid's job transitions in one Redis Stream, so that the server's listeners (accounting,
 * mail, metrics, lifecycle observers, dashboard) hear the R, E and F that a node's gcd makes.
 * JobEvents is in-process: a node publishes each transition it makes (TransitionPublisher);
 * the server reads the stream from the last entry it processed, kept in Redis, and tells its
 * own JobEvents every entry made by another host (TransitionConsumer). The server's own
 * transitions never go through the stream: it has already told its listeners of them.
 */
import type { Redis } from 'ioredis';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobRecord, JobState } from '../queue/job.js';
import type { JobEvents, JobTransition } from '../queue/job-events.js';
import type { JobEvent } from '../queue/job-states.js';
import type { Keys } from '../queue/keys.js';

/** Entries kept (approximately: MAXLEN ~): far more than a server restart lets pile up. */
export const TRANSITION_STREAM_MAXLEN = 100_000;

/** Transitions told by the consumer: the publisher on the same JobEvents must not send them back. */
const relayed = new WeakSet<JobTransition>();

/** One stream entry's fields, flat as XADD takes them. */
export function entryFields(origin: string, t: JobTransition): string[] {
  const f = ['o', origin, 'j', t.jobId, 'e', t.event, 'f', t.from, 't', t.to, 'r', JSON.stringify(t.record)];
  if (t.replay) f.push('p', '1');
  return f;
}

/** The transition an entry carries, with its origin; undefined for an entry it cannot read. */
export function parseEntry(flat: string[]): { origin: string; t: JobTransition } | undefined {
  const h = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) h.set(flat[i], flat[i + 1]);
  const origin = h.get('o');
  const jobId = h.get('j');
  const rec = h.get('r');
  if (origin === undefined || jobId === undefined || rec === undefined) return undefined;
  let record: JobRecord;
  try {
    record = JSON.parse(rec) as JobRecord;
  } catch {
    return undefined;
  }
  const t: JobTransition = { jobId, event: h.get('e') as JobEvent, from: h.get('f') as JobState, to: h.get('t') as JobState, record };
  if (h.get('p') === '1') t.replay = true;
  return { origin, t };
}

/**
 * On a node: every transition this gcd makes goes into the stream, in the order it was made
 * (one connection, commands sent in order). Written just after the compare-and-set; a crash
 * between the two loses the entry, and a job's F is told again (replay) at the node's restart,
 * which the accounting log writes only where it lacks the record.
 */
export class TransitionPublisher {
  private unsubscribe: (() => void) | undefined;
  private pending: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly o: {
      redis: Redis;
      keys: Keys;
      /** This host's name (GC_NODE_NAME), which the server compares with its own. */
      origin: string;
      maxLen?: number;
    },
  ) {}

  attach(events: JobEvents): void {
    this.unsubscribe = events.subscribe((t) => {
      if (relayed.has(t)) return;
      const p = this.o.redis
        .xadd(this.o.keys.events, 'MAXLEN', '~', String(this.o.maxLen ?? TRANSITION_STREAM_MAXLEN), '*', ...entryFields(this.o.origin, t))
        .catch((e: unknown) => log.error('job transition not published to the server', { job: t.jobId, event: t.event, error: errorMessage(e) }));
      this.pending = Promise.all([this.pending, p]);
    });
  }

  /** Resolves once every transition heard so far has been written. */
  flush(): Promise<unknown> {
    return this.pending;
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    await this.pending;
  }
}

/**
 * On the server: reads the stream from the entry after the last one processed (its id kept
 * in Redis, so a restart resumes there: nothing made meanwhile is lost, nothing processed is
 * told twice) and tells `events` every entry made by another host. The id is written after
 * each entry is told, so a crash at that instant can tell one entry twice at most.
 */
export class TransitionConsumer {
  private reader: Redis | undefined;
  private loop: Promise<void> | undefined;
  private stopped = false;
  private cursor = '0';
  private told = 0;

  constructor(
    private readonly o: {
      redis: Redis;
      keys: Keys;
      /** This host's name: entries it made itself were told here already. */
      self: string;
      events: JobEvents;
      /** How long one blocking read waits before looking again (close() does not wait for it). */
      blockMs?: number;
    },
  ) {}

  /** Entries told to the listeners since start. */
  get count(): number {
    return this.told;
  }

  async start(): Promise<void> {
    this.cursor = (await this.o.redis.get(this.o.keys.eventsCursor)) ?? '0';
    await this.warnIfTrimmed();
    // A blocking read holds its connection: its own, so the scheduler's commands never wait on it.
    this.reader = this.o.redis.duplicate();
    this.loop = this.run();
  }

  /** A server down long enough for MAXLEN to drop entries it never read: say so, once. */
  private async warnIfTrimmed(): Promise<void> {
    if (this.cursor === '0') return;
    const first = await this.o.redis.xrange(this.o.keys.events, '-', '+', 'COUNT', 1);
    const id = first[0]?.[0];
    if (id !== undefined && compareIds(id, this.cursor) > 0 && (await this.o.redis.xrange(this.o.keys.events, this.cursor, this.cursor)).length === 0) {
      log.warn('job transitions of other hosts may have been dropped from the stream (MAXLEN) before the server read them', {
        lastRead: this.cursor,
        oldestKept: id,
      });
    }
  }

  private async run(): Promise<void> {
    const r = this.reader!;
    while (!this.stopped) {
      try {
        const res = await r.xread('COUNT', 200, 'BLOCK', this.o.blockMs ?? 2000, 'STREAMS', this.o.keys.events, this.cursor);
        for (const [, entries] of res ?? []) {
          for (const [id, flat] of entries) {
            if (this.stopped) return;
            this.tell(id, flat);
            this.cursor = id;
            await this.o.redis.set(this.o.keys.eventsCursor, id);
          }
        }
      } catch (e) {
        if (this.stopped) return;
        log.error('reading the job transitions of other hosts failed; retrying', { error: errorMessage(e) });
        await new Promise((res) => setTimeout(res, 500));
      }
    }
  }

  private tell(id: string, flat: string[]): void {
    const parsed = parseEntry(flat);
    if (!parsed) {
      log.error('unreadable job transition entry skipped', { id });
      return;
    }
    if (parsed.origin === this.o.self) return;
    relayed.add(parsed.t);
    this.told++;
    this.o.events.emit(parsed.t);
  }

  async close(): Promise<void> {
    this.stopped = true;
    // Ends a blocking read at once; the loop then sees `stopped`.
    this.reader?.disconnect();
    await this.loop?.catch(() => undefined);
  }
}

/** Order of two stream ids (`ms-seq`). */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}
