import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { JobTransition, LifecycleListener } from '../lifecycle/listener.js';
import { EXIT, type JobRecord } from '../queue/job.js';
import type { CapacityLimits } from '../scheduler/capacity.js';

/** What the metrics read at scrape time: the jobs in Redis and the host's capacity now. */
export interface MetricsSources {
  /** Every job record in Redis (array tasks included). */
  jobs(): Promise<JobRecord[]>;
  capacity(): { limits: CapacityLimits; used: CapacityLimits };
}

/** Error kinds counted by copper_errors_total. */
export type ErrorKind = 'job_start_failed' | 'job_lost' | 'job_aborted' | 'metrics_scrape';

const JOB_STATES = ['Q', 'H', 'W', 'R', 'E', 'F'] as const;
const ERROR_KINDS: ErrorKind[] = ['job_start_failed', 'job_lost', 'job_aborted', 'metrics_scrape'];

/** Buckets for latencies from tens of milliseconds (KVM snapshot) to minutes (long queue waits). */
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/**
 * gcd's Prometheus metrics. Job counts are computed from Redis at each scrape, so they are
 * right after a gcd restart and never drift from what gcqstat shows; latencies are observed
 * as jobs move (lifecycle events) and start from zero with each gcd.
 */
export class JobMetrics implements LifecycleListener {
  readonly name = 'metrics';
  readonly registry = new Registry();
  private readonly queueWait: Histogram;
  private readonly snapshotPause: Histogram;
  private readonly cloneStart: Histogram;
  private readonly transitions: Counter;
  private readonly errors: Counter;

  constructor(private readonly src: MetricsSources) {
    const registers = [this.registry];
    // prom-client calls collect() with the metric as `this`: the sources are captured here.
    const sources = this.src;
    const countError = (kind: ErrorKind): void => this.countError(kind);
    new Gauge({
      name: 'copper_jobs',
      help: 'Jobs in Redis by PBS state (Q H W R E F; array tasks counted, not the array record), user and queue',
      labelNames: ['state', 'user', 'queue'] as const,
      registers,
      async collect() {
        this.reset();
        let jobs: JobRecord[];
        try {
          jobs = await sources.jobs();
        } catch (e) {
          countError('metrics_scrape');
          log.warn('metrics: could not read jobs', { error: errorMessage(e) });
          return;
        }
        // Every state of every (user, queue) seen is set, zeros included: a query for state Q
        // then says 0 rather than nothing once the last queued job has started.
        const counts = new Map<string, { user: string; queue: string; n: Map<string, number> }>();
        for (const j of jobs) {
          if (j.array) continue; // its tasks are counted one by one
          const key = `${j.spec.user}\0${j.spec.queue}`;
          const c = counts.get(key) ?? { user: j.spec.user, queue: j.spec.queue, n: new Map<string, number>() };
          c.n.set(j.state, (c.n.get(j.state) ?? 0) + 1);
          counts.set(key, c);
        }
        for (const c of counts.values()) {
          for (const state of JOB_STATES) this.set({ state, user: c.user, queue: c.queue }, c.n.get(state) ?? 0);
        }
      },
    });
    new Gauge({
      name: 'copper_capacity_ncpus',
      help: 'Host CPUs for clones: used (reserved by running jobs) and free',
      labelNames: ['state'] as const,
      registers,
      collect() {
        const { limits, used } = sources.capacity();
        this.set({ state: 'used' }, used.ncpus);
        this.set({ state: 'free' }, Math.max(0, limits.ncpus - used.ncpus));
      },
    });
    new Gauge({
      name: 'copper_capacity_memory_bytes',
      help: 'Host memory for clones: used (reserved by running jobs) and free',
      labelNames: ['state'] as const,
      registers,
      collect() {
        const { limits, used } = sources.capacity();
        this.set({ state: 'used' }, used.memMiB * 1048576);
        this.set({ state: 'free' }, Math.max(0, limits.memMiB - used.memMiB) * 1048576);
      },
    });
    this.queueWait = new Histogram({
      name: 'copper_job_queue_wait_seconds',
      help: 'Time from submission to the start of a job (its clone being made)',
      labelNames: ['queue'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.snapshotPause = new Histogram({
      name: 'copper_snapshot_pause_seconds',
      help: 'How long a headnode was paused to snapshot it at gcqsub',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.cloneStart = new Histogram({
      name: 'copper_clone_start_seconds',
      help: 'Time to fork a snapshot into a running clone, ready for the job command',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.transitions = new Counter({
      name: 'copper_job_events_total',
      help: 'Job lifecycle events since gcd started (queued, started, ended, deleted, rerun, aborted)',
      labelNames: ['event', 'queue'] as const,
      registers,
    });
    this.errors = new Counter({
      name: 'copper_errors_total',
      help: 'Errors by kind: jobs that failed to start, were lost or aborted; failed scrapes',
      labelNames: ['kind'] as const,
      registers,
    });
    for (const kind of ERROR_KINDS) this.errors.inc({ kind }, 0);
    collectDefaultMetrics({ register: this.registry, prefix: 'copper_gcd_' });
  }

  countError(kind: ErrorKind): void {
    this.errors.inc({ kind });
  }

  /** From the run transition to the command running in its clone. */
  observeCloneStart(ms: number): void {
    this.cloneStart.observe(ms / 1000);
  }

  onTransition(t: JobTransition): void {
    const r = t.record;
    if (r.array) return;
    this.transitions.inc({ event: t.event, queue: r.spec.queue });
    if (t.timings?.snapshotPauseMs !== undefined) this.snapshotPause.observe(t.timings.snapshotPauseMs / 1000);
    if (t.event === 'started') {
      const start = r.startedAt ?? t.at;
      this.queueWait.observe({ queue: r.spec.queue }, Math.max(0, start - r.queuedAt) / 1000);
    }
    if (t.event === 'aborted') {
      this.countError(r.exitStatus === EXIT.START_FAILED ? 'job_start_failed' : r.exitStatus === EXIT.LOST ? 'job_lost' : 'job_aborted');
    }
  }

  /** The exposition text for GET /metrics. */
  async text(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
