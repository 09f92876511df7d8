/**
 * qstat's destination operands: `queue`, `@server` and `queue@server` name every job of a queue
 * or of the server, as in PBS (`qstat -f workq`, `qstat -f @srv`). Nextflow's pbs and pbspro
 * executors poll this way. Job ids always start with a digit, so an operand that does not is a
 * destination: the two never collide.
 */
import { UsageError } from '../../errors.js';
import type { JobRecord } from '../../queue/job.js';
import { DEFAULT_QUEUE_NAME } from '../../scheduler/policy.js';
import type { Scheduler } from '../../scheduler/scheduler.js';

export interface Destination {
  /** The queue, or undefined for the whole server (`@srv`). */
  queue: string | undefined;
}

/** True when a qstat operand names a destination rather than a job. */
export function isDestination(operand: string): boolean {
  return !/^\d/.test(operand);
}

/** `workq`, `@srv`, `workq@srv` -> the queue it names; an unknown server or queue is refused. */
export function parseDestination(operand: string, serverName: string, knownQueues: ReadonlySet<string>): Destination {
  const at = operand.indexOf('@');
  const queue = at === -1 ? operand : operand.slice(0, at);
  const server = at === -1 ? '' : operand.slice(at + 1);
  // PBS accepts `server:port`; the port is irrelevant here.
  const serverHost = server.split(':')[0];
  if (serverHost !== '' && serverHost !== serverName && serverHost.split('.')[0] !== serverName) {
    throw new UsageError(`cannot connect to server ${server}: this server is ${serverName}`);
  }
  if (queue === '') return { queue: undefined };
  if (!knownQueues.has(queue)) throw new UsageError(`Unknown queue destination ${queue}; queues: ${[...knownQueues].join(', ')}`);
  return { queue };
}

/** The queues qstat knows: those configured, or PBS's workq when none are. */
export function knownQueues(s: Scheduler): Set<string> {
  const cfg = s.quotaConfig();
  return cfg.queues.size === 0 ? new Set([DEFAULT_QUEUE_NAME]) : new Set([...cfg.queues.keys()]);
}

/** The queue a job shows under (a job given no queue is in workq). */
export function jobQueue(j: JobRecord): string {
  return j.spec.queue || DEFAULT_QUEUE_NAME;
}

/** Whether a job lies in one of the destinations. */
export function inDestinations(j: JobRecord, dests: readonly Destination[]): boolean {
  return dests.some((d) => d.queue === undefined || d.queue === jobQueue(j));
}
