import { statfsSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import type { Settings } from '../config/settings.js';
import type { Keys } from '../queue/keys.js';
import type { CapacityLimits } from '../scheduler/capacity.js';
import type { DispatchHost } from '../scheduler/dispatcher.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { FailureMonitor } from './failure-monitor.js';
import { GridView } from './grid-view.js';
import { NodeHeartbeat } from './heartbeat.js';
import { Placement } from './placement.js';
import { NodeRegistry, type NodeRole } from './registry.js';
import { TransitionConsumer, TransitionPublisher } from './transition-stream.js';

/** Copper's version, as the registry records it (a mixed-version grid shows in `gc nodes -a`). */
function copperVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function tmpfsMiB(dir: string): number {
  try {
    const s = statfsSync(dir);
    return Math.floor((s.blocks * s.bsize) / 1048576);
  } catch {
    return 0;
  }
}

/**
 * The grid's pieces in one gcd, for compose.ts (server) and node-role.ts (`gcd --node`): the
 * registry, this host's heartbeat and placement when it runs jobs, the failure monitor on the
 * server. Built before the Scheduler (which takes `host` and `largestHost`), attached after.
 */
export class GridParts {
  readonly registry: NodeRegistry;
  readonly view: GridView;
  /** This host, as the Scheduler knows it (also when it runs no jobs: its restart recovers only its own). */
  readonly host: DispatchHost & { isServer: boolean };
  private heartbeat: NodeHeartbeat | undefined;
  private monitor: FailureMonitor | undefined;
  private readonly placement: Placement;
  /** Node: its transitions to the server; server: those of the nodes to its listeners. */
  private publisher: TransitionPublisher | undefined;
  private consumer: TransitionConsumer | undefined;

  constructor(
    private readonly o: {
      redis: Redis;
      keys: Keys;
      settings: Settings;
      role: NodeRole;
      /** This host runs jobs (a node always; the server unless GC_SERVER_RUNS_JOBS=0). */
      runsJobs: boolean;
      capacity: CapacityLimits;
      accel: string;
      /** A node's control listener (server -> node job control), for its registry record. */
      controlUrl?: () => string | undefined;
      /** A node's cached snapshots, reported with each heartbeat. */
      cachedSnapshots?: () => string[];
    },
  ) {
    const s = o.settings;
    this.registry = new NodeRegistry(o.redis, o.keys, s.nodeDeadMs);
    this.view = new GridView(this.registry);
    this.placement = new Placement({ redis: o.redis, keys: o.keys, view: this.view, boundMs: s.placementDeferMs });
    this.host = {
      name: s.nodeName,
      isServer: o.role === 'server',
      gateDelayMs: Math.max(200, Math.min(1000, Math.floor(s.placementDeferMs / 4) || 1000)),
      gate: async (rec) => {
        // Read now, not as of the last beat: once `gc node offline` has answered, this host takes nothing new.
        const state = this.heartbeat ? await this.registry.stateOf(s.nodeName) : 'up';
        if (state !== 'up') return `node ${s.nodeName} is ${state ?? 'unregistered'}`;
        return this.placement.shouldDefer(rec, s.nodeName);
      },
      othersTakeJobs: () => this.view.all().some((n) => n.name !== s.nodeName && n.alive && n.state === 'up'),
    };
  }

  /** The largest live host's capacity, for the submission's refusal (undefined: none known yet). */
  largestHost(): CapacityLimits | undefined {
    return this.view.largest();
  }

  /** Register this host (before the scheduler recovers its runs), then beat. */
  async join(scheduler: Scheduler): Promise<void> {
    const s = this.o.settings;
    // Before the scheduler recovers: the transitions of its recovery are published too.
    if (this.o.role === 'node') {
      this.publisher = new TransitionPublisher({ redis: this.o.redis, keys: this.o.keys, origin: s.nodeName });
      this.publisher.attach(scheduler.events);
    }
    if (!this.o.runsJobs) {
      await this.view.refresh();
      return;
    }
    this.heartbeat = new NodeHeartbeat({
      registry: this.registry,
      view: this.view,
      intervalMs: s.nodeHeartbeatMs,
      info: {
        name: s.nodeName,
        role: this.o.role,
        ncpus: this.o.capacity.ncpus,
        memMiB: this.o.capacity.memMiB,
        tmpfsMiB: tmpfsMiB(s.ramDir),
        accel: this.o.accel,
        version: copperVersion(),
        ...(this.o.controlUrl?.() ? { controlUrl: this.o.controlUrl() } : {}),
      },
      host: {
        runningJobs: () => scheduler.runningJobs(),
        used: () => scheduler.capacity.used,
        setTaking: (on) => scheduler.setTaking(on),
        dropRuns: () => scheduler.dropRuns(),
        cachedSnapshots: () => this.o.cachedSnapshots?.() ?? [],
      },
    });
    await this.heartbeat.start();
  }

  /** After scheduler.start(): apply this host's state; on the server, start the failure monitor. */
  async started(scheduler: Scheduler): Promise<void> {
    await this.heartbeat?.apply();
    if (this.o.role !== 'server') return;
    this.consumer = new TransitionConsumer({ redis: this.o.redis, keys: this.o.keys, self: this.o.settings.nodeName, events: scheduler.events });
    await this.consumer.start();
    this.monitor = new FailureMonitor({
      registry: this.registry,
      store: scheduler.store,
      queue: scheduler.queue,
      finishLost: (job, end) => scheduler.finishLost(job, end),
      settleLeft: (job) => scheduler.settleLeft(job),
      sweepMs: 30_000,
      // A host is found dead within GC_NODE_DEAD_MS plus one of these.
      intervalMs: Math.max(100, Math.min(this.o.settings.nodeHeartbeatMs, Math.floor(this.o.settings.nodeDeadMs / 3))),
      graceMs: this.o.settings.nodeDeadMs,
    });
    await this.monitor.start();
    // Without a heartbeat of its own, the server still needs a fresh look for the largest host.
    if (!this.heartbeat) this.refreshTimer = setInterval(() => void this.view.refresh().catch(() => undefined), this.o.settings.nodeHeartbeatMs);
  }

  private refreshTimer: NodeJS.Timeout | undefined;

  /** Stop watching, then leave (after the scheduler has stopped its runs). */
  async close(): Promise<void> {
    clearInterval(this.refreshTimer);
    await this.monitor?.close();
    await this.consumer?.close();
    await this.heartbeat?.close();
    await this.publisher?.close();
  }
}
