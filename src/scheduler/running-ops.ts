import type { SignalName } from '../drivers/signals.js';
import { StateError } from '../errors.js';
import type { JobRecord } from '../queue/job.js';
import type { LiveJob, LiveJobs } from './live-jobs.js';
import type { StopReason } from './runner.js';

/** gcqsig's -s: a signal for the job's process group, or suspend / resume of its clone. */
export type JobSignal = SignalName | 'suspend' | 'resume';

export interface RunningOpsDeps {
  live: LiveJobs;
  /** Stop the job's run in this gcd (Dispatcher.cancel); false when it does not run here. */
  cancel(id: string, reason: StopReason): boolean;
  /** Jobs that run on another host of a grid (src/grid): their control goes there. */
  remote?: RemoteJobs;
}

/** Control of a running job on another compute host (src/grid/remote-jobs.ts). */
export interface RemoteJobs {
  /** Stop the job's run on its host; false when no other host runs it. */
  cancel(job: JobRecord, reason: StopReason): Promise<boolean>;
  /** gcqsig for the job on its host, or undefined when no other host runs it. */
  live(job: JobRecord): LiveJob | undefined;
}

const invalid = (t: JobRecord, what: string): StateError =>
  new StateError(`Request invalid for state of job ${t.id} (${t.state}): only running jobs can be ${what}`);

/**
 * gcqsig: to each running target (a job, or an array's running tasks). A job between its
 * run and its command (clone starting) or past its command (E) is refused, as PBS does.
 */
export async function signalJobs(d: RunningOpsDeps, rec: JobRecord, targets: JobRecord[], sig: JobSignal): Promise<void> {
  const running = targets.filter((t) => !t.array && (t.state === 'R' || t.state === 'S'));
  if (running.length === 0) throw invalid(rec, 'signalled');
  for (const t of running) {
    const live = d.live.get(t.id) ?? d.remote?.live(t);
    if (!live) throw new StateError(`job ${t.id} has no command running yet (its clone is starting or ending); try again`);
    if (sig === 'suspend') await live.suspend();
    else if (sig === 'resume') await live.resume();
    else await live.signal(sig);
  }
}

/**
 * gcqrerun: stop the running command (SIGTERM, kill delay, SIGKILL; a suspended clone is let
 * run first) and queue the job again. The job keeps its snapshot reference, so the next run
 * is a new clone of the same snapshot; run_count counts the runs.
 */
export async function rerunJobs(d: RunningOpsDeps, rec: JobRecord, targets: JobRecord[]): Promise<void> {
  const running = targets.filter((t) => !t.array && (t.state === 'R' || t.state === 'S'));
  if (running.length === 0) throw invalid(rec, 'rerun');
  for (const t of running) {
    if (!t.spec.rerunnable) throw new StateError(`job ${t.id} is not rerunnable (submitted with -r n)`);
    if (!d.cancel(t.id, 'rerun') && !(await d.remote?.cancel(t, 'rerun'))) throw new StateError(`job ${t.id} is not running in this gcd`);
  }
}
