import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { GridView } from './grid-view.js';
import type { NodeInfo, NodeRegistry, NodeState } from './registry.js';

/** What the heartbeat reads from, and acts on, the gcd it beats for. */
export interface BeatingHost {
  runningJobs(): string[];
  used(): { ncpus: number; memMiB: number };
  /** Take new jobs or not (offline, draining): running ones go on. */
  setTaking(on: boolean): Promise<void>;
  /** Declared dead while alive: its runs were settled elsewhere; stop them. */
  dropRuns(): void;
  /** Snapshots cached on this host (a node's snapshot cache); none when absent. */
  cachedSnapshots?(): string[];
}

/**
 * A compute host's heartbeat: registers it, then every interval renews its liveness key with
 * its use (cores, memory, jobs) and reads back its state, which decides whether it takes new
 * jobs. A host that finds itself `down` (the server declared it dead during a stall or a cut
 * link) drops its runs, whose records were settled without it, and registers again.
 */
export class NodeHeartbeat {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private state: NodeState = 'up';

  constructor(
    private readonly o: {
      registry: NodeRegistry;
      info: NodeInfo;
      host: BeatingHost;
      intervalMs: number;
      view: GridView;
    },
  ) {}

  /** Register and take the admin's state; the dispatcher may start once this resolves. */
  async start(): Promise<void> {
    const admin = await this.o.registry.register(this.o.info);
    this.state = admin;
    log.info('node registered', { node: this.o.info.name, role: this.o.info.role, state: admin, ncpus: this.o.info.ncpus, memMiB: this.o.info.memMiB });
    await this.o.view.refresh();
    this.schedule();
  }

  /** After the scheduler started: apply the state (an offline host takes nothing). */
  async apply(): Promise<void> {
    await this.o.host.setTaking(this.state === 'up');
  }

  /** Whether this host takes new jobs now. */
  taking(): boolean {
    return this.state === 'up';
  }

  get currentState(): NodeState {
    return this.state;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.beat()
        .catch((e: unknown) => {
          log.warn('heartbeat failed', { node: this.o.info.name, error: errorMessage(e) });
        })
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, this.o.intervalMs);
  }

  async beat(): Promise<void> {
    const { registry, info, host } = this.o;
    const used = host.used();
    const got = await registry.beat(info.name, {
      usedNcpus: used.ncpus,
      usedMemMiB: used.memMiB,
      jobs: host.runningJobs(),
      cachedSnapshots: host.cachedSnapshots?.() ?? [],
    });
    if (got === 'down' || got === 'gone') {
      log.warn('this node was declared down while it ran: dropping its runs and joining again', { node: info.name });
      host.dropRuns();
      this.state = await registry.register(info);
    } else this.state = got;
    await host.setTaking(this.state === 'up');
    await this.o.view.refresh();
  }

  /** Stop beating and leave: the server marks the host down at its next look and settles what is left. */
  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    await this.o.registry.leave(this.o.info.name).catch(() => undefined);
  }
}
