import type { SnapshotInfo } from '../drivers/driver.js';
import type { JobRecord } from '../queue/job.js';

/**
 * What the scheduler's state changes do not carry, reported where it happens: records are
 * created (not transitioned) at gcqsub, with the headnode's snapshot pause; and the time from
 * the run transition to the command running in its clone.
 */
export interface JobObservations {
  submitted(records: JobRecord[], snapshots: SnapshotInfo[]): void;
  cloneStarted(job: JobRecord, ms: number): void;
}
