/** Copper as a library: the scheduler, its store and queue, and the driver seam. */
export { Scheduler, type SchedulerOptions, type ListFilter } from './scheduler/scheduler.js';
export { ADMIN, type Actor } from './scheduler/actor.js';
export type { JobSpec, JobRecord, JobState, Resources, JoinMode } from './queue/job.js';
export { EXIT } from './queue/job.js';
export { keysFor, QUEUE_NAME } from './queue/keys.js';
export type { Driver, SnapshotInfo, CloneHandle, ExecSpec, ExecResult } from './drivers/driver.js';
export { connectRedis, bullConnection, type RedisTarget } from './redis/connection.js';
export { startEmbeddedRedis } from './redis/embedded.js';
export { loadSettings, type Settings } from './config/settings.js';
export * from './errors.js';
export { CopperClient, type CopperTarget, type CopperClientOptions, type CliResult } from './client/copper-client.js';
export type { CloneInfo, CloneStatus, KillSelector, WhoAmI, CloneUsageRow } from './clusters/types.js';
