import type { Driver, RunningCommand } from '../drivers/driver.js';
import type { SignalName } from '../drivers/signals.js';
import { StateError } from '../errors.js';
import type { JobStore } from '../queue/job-store.js';
import type { WalltimeClock } from './walltime-clock.js';

/** What gcqsig can do to a job whose command runs in this gcd. */
export interface LiveJob {
  signal(sig: SignalName): Promise<void>;
  suspend(): Promise<void>;
  resume(): Promise<void>;
}

/** The jobs whose command runs now in this gcd, by job id (the runner adds and removes them). */
export class LiveJobs {
  private readonly jobs = new Map<string, LiveJob>();

  add(id: string, job: LiveJob): () => void {
    this.jobs.set(id, job);
    return () => {
      if (this.jobs.get(id) === job) this.jobs.delete(id);
    };
  }

  get(id: string): LiveJob | undefined {
    return this.jobs.get(id);
  }
}

/**
 * One running command's suspend, resume and signals. Suspend pauses the clone's VM (the
 * driver's pause: QMP `stop`) and the walltime clock, then records R -> S; resume does the
 * reverse. Operations run one at a time, in the order asked.
 */
export class LiveJobControl implements LiveJob {
  private suspended = false;
  private stopping = false;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly jobId: string,
    private readonly cloneId: string,
    private readonly running: RunningCommand,
    private readonly driver: Driver,
    private readonly store: JobStore,
    private readonly clock: WalltimeClock | undefined,
  ) {}

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.chain.then(op, op);
    this.chain = next.catch(() => undefined);
    return next;
  }

  signal(sig: SignalName): Promise<void> {
    return this.serial(async () => {
      if (this.suspended) throw new StateError(`job ${this.jobId} is suspended: gcqsig -s resume ${this.jobId} first`);
      await this.running.kill(sig);
    });
  }

  suspend(): Promise<void> {
    return this.serial(async () => {
      if (this.stopping) throw new StateError(`job ${this.jobId} is being stopped`);
      if (this.suspended) throw new StateError(`job ${this.jobId} is already suspended`);
      if (!this.driver.pause || !this.driver.resume) throw new StateError(`the ${this.driver.name} driver cannot suspend jobs`);
      await this.driver.pause(this.cloneId);
      const t = await this.store.transition(this.jobId, 'suspend', { comment: `Suspended by gcqsig at ${new Date().toISOString()}` });
      if (!t.ok) {
        await this.driver.resume(this.cloneId);
        throw t.error;
      }
      this.clock?.pause();
      this.suspended = true;
    });
  }

  resume(): Promise<void> {
    return this.serial(async () => {
      if (!this.suspended) throw new StateError(`job ${this.jobId} is not suspended`);
      await this.driver.resume!(this.cloneId);
      this.suspended = false;
      this.clock?.resume();
      const t = await this.store.transition(this.jobId, 'resume', { comment: undefined });
      if (!t.ok) throw t.error;
    });
  }

  /**
   * The job is being stopped (walltime, gcqdel, rerun, shutdown): a paused clone is let run
   * so its command can take the signal. Its state goes from S straight to E, F or Q.
   */
  wake(): Promise<void> {
    this.stopping = true;
    return this.serial(async () => {
      if (!this.suspended) return;
      await this.driver.resume!(this.cloneId);
      this.suspended = false;
    });
  }
}
