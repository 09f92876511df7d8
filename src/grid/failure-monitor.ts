/**
 * The server's failure monitor: a host whose heartbeat lapsed is marked down (once, by
 * compare-and-set in the registry), and each of its runs ends exactly once: a rerunnable job
 * (-r y) goes back to Q and into the run queue, one that is not (-r n) ends F saying which
 * host stopped answering, and one in E (its command had ended) ends F with its status. Every
 * write is guarded by the record still naming that host, so the host itself (restarting, or
 * waking from a stall) and this monitor cannot both settle a run.
 *
 * BullMQ side: the dead host's worker held the job's lock; once it expires (GC_LOCK_MS) a live
 * worker's stalled check puts the job back to wait and it runs again, reading state Q. If that
 * worker read the record before the requeue (still R), it drops the BullMQ job: the monitor then
 * adds it again (a Q record BullMQ does not hold), on this tick and the next few.
 */
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { EXIT, type JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import type { RunQueue } from '../queue/run-queue.js';
import type { JobEnd } from '../scheduler/runner.js';
import type { NodeRegistry } from './registry.js';

export interface FailureMonitorOptions {
  registry: NodeRegistry;
  store: JobStore;
  queue: RunQueue;
  /** Scheduler.finishLost: F and settled, guarded by the record's execHost. */
  finishLost(job: JobRecord, end: JobEnd): Promise<boolean>;
  /**
   * Scheduler.settleLeft: settle a job whose host wrote F (marked `settling`) and died before
   * its snapshot reference, array and dependents were settled.
   */
  settleLeft?(job: JobRecord): Promise<void>;
  /** How often jobs F and still settling on a host that is down are looked for (0: never). */
  sweepMs?: number;
  intervalMs: number;
  /**
   * After the server starts, hosts get this long (GC_NODE_DEAD_MS) to reach its Redis again
   * before any is judged: heartbeat keys may have expired while the server was away.
   */
  graceMs: number;
  /** Told of each host marked down, with what became of its jobs (tests, logs). */
  onDown?: (node: string, outcome: LostRuns) => void;
}

export interface LostRuns {
  requeued: string[];
  failed: string[];
  /** Jobs it had ended (F) but not settled: settled here. */
  settled: string[];
}

/** How many ticks a requeued job is checked to be in the run queue. */
const ENSURE_TICKS = 5;

export class FailureMonitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Requeued jobs still to be checked for a BullMQ entry, with the ticks left. */
  private readonly pending = new Map<string, number>();
  private graceUntil = 0;
  private lastSweep = Date.now();

  constructor(private readonly o: FailureMonitorOptions) {}

  /** Settle what hosts already down left (the server may have died mid-way), then watch. */
  async start(): Promise<void> {
    this.graceUntil = Date.now() + this.o.graceMs;
    const down = (await this.o.registry.list()).filter((n) => n.state === 'down').map((n) => n.name);
    if (down.length) await this.settle(new Set(down));
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick()
        .then(() => undefined)
        .catch((e: unknown) => {
          log.error('failure monitor tick failed', { error: errorMessage(e) });
        })
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, this.o.intervalMs);
  }

  /** One look: mark lapsed hosts down and settle their runs. */
  async tick(): Promise<string[]> {
    const downed: string[] = [];
    if (Date.now() < this.graceUntil) return downed;
    for (const n of await this.o.registry.list()) {
      if (n.alive || n.state === 'down') continue;
      if (await this.o.registry.markDownIfLapsed(n.name)) {
        log.warn('node marked down: its heartbeat lapsed', { node: n.name, lastHeartbeatMsAgo: Date.now() - n.heartbeatAt });
        downed.push(n.name);
      }
    }
    if (downed.length) await this.settle(new Set(downed));
    await this.ensureQueued();
    await this.sweepUnsettled();
    return downed;
  }

  private async settle(hosts: ReadonlySet<string>): Promise<void> {
    const outcome = new Map<string, LostRuns>([...hosts].map((h) => [h, { requeued: [], failed: [], settled: [] }]));
    for (const j of await this.o.store.list({ tasks: true })) {
      const host = j.execHost;
      if (host === undefined || !hosts.has(host)) continue;
      const out = outcome.get(host)!;
      if (j.state === 'F' && j.settling) {
        if (await this.settleLeft(j, host)) out.settled.push(j.id);
        continue;
      }
      if (!(j.state === 'R' || j.state === 'S' || j.state === 'E')) continue;
      try {
        if (j.state === 'E') {
          // The command had ended; its output was on its way home from that host and is lost.
          const comment = `${j.comment ?? 'Job run'}; node ${host} stopped answering while its output was delivered`;
          if (await this.o.finishLost(j, { exitStatus: j.exitStatus ?? EXIT.LOST, comment, endReason: 'exit' })) out.failed.push(j.id);
        } else if (j.spec.rerunnable) {
          const t = await this.o.store.transitionOnHost(j.id, host, 'requeue', {
            comment: `requeued: node ${host} stopped answering while the job ran`,
            cloneId: undefined,
            execHost: undefined,
          });
          if (t.ok) {
            out.requeued.push(j.id);
            this.pending.set(j.id, ENSURE_TICKS);
          }
        } else {
          const comment = `node ${host} stopped answering while the job ran; not rerunnable (-r n), so not run again`;
          if (await this.o.finishLost(j, { exitStatus: EXIT.LOST, comment, endReason: 'lost' })) out.failed.push(j.id);
        }
      } catch (e) {
        log.error('could not settle a job of a dead node', { job: j.id, node: host, error: errorMessage(e) });
      }
    }
    for (const [host, o] of outcome) {
      log.info('jobs of a dead node settled', { node: host, requeued: o.requeued, failed: o.failed, settled: o.settled });
      this.o.onDown?.(host, o);
    }
    await this.ensureQueued();
  }

  /** Settle a job the dead host ended but did not settle; true when this call did. */
  private async settleLeft(j: JobRecord, host: string): Promise<boolean> {
    if (!this.o.settleLeft) return false;
    try {
      await this.o.settleLeft(j);
      log.info('job ended on a dead node settled by the server', { job: j.id, node: host });
      return true;
    } catch (e) {
      log.error('could not settle a job a dead node ended', { job: j.id, node: host, error: errorMessage(e) });
      return false;
    }
  }

  /**
   * Now and then: a host marked down may still have written F (it ran on between the monitor's
   * look at the job and its own death); such a job would otherwise wait for that host to come
   * back. Only hosts down and without a heartbeat: a live host settles its own.
   */
  private async sweepUnsettled(): Promise<void> {
    const every = this.o.sweepMs ?? 0;
    if (!every || !this.o.settleLeft || Date.now() - this.lastSweep < every) return;
    this.lastSweep = Date.now();
    const down = new Set((await this.o.registry.list()).filter((n) => n.state === 'down' && !n.alive).map((n) => n.name));
    if (!down.size) return;
    for (const j of await this.o.store.list({ tasks: true })) {
      if (j.state === 'F' && j.settling && j.execHost !== undefined && down.has(j.execHost)) await this.settleLeft(j, j.execHost);
    }
  }

  /** A requeued job whose BullMQ entry was dropped meanwhile is added again. */
  private async ensureQueued(): Promise<void> {
    for (const [id, left] of [...this.pending]) {
      if (left <= 1) this.pending.delete(id);
      else this.pending.set(id, left - 1);
      const rec = await this.o.store.tryGet(id);
      if (!rec || rec.state !== 'Q') {
        this.pending.delete(id);
        continue;
      }
      if (!(await this.o.queue.has(id))) {
        log.info('requeued job of a dead node put back into the run queue', { job: id });
        await this.o.queue.add([rec]);
      }
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
