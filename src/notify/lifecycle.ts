import type { JobRecord } from '../queue/job.js';

/**
 * How a job ended, as far as notifications care: `aborted` when the system ended it (killed
 * by walltime, deleted while running, failed to start, lost and not rerun), not the command.
 */
export interface JobEndOutcome {
  aborted: boolean;
}

/**
 * Listens to a job's life: started running (a clone runs its command), ended (state F after
 * having been handed to a runner; an array when its last task ends). Listeners must return
 * at once: anything slow (mail, HTTP) happens behind, so it never delays the job's states.
 * Until the state machine emits typed transition events, the runner and the scheduler call
 * these directly.
 */
export interface JobLifecycleListener {
  onStart(job: JobRecord): void;
  onEnd(job: JobRecord, outcome: JobEndOutcome): void;
}
