/** Every Redis key Copper owns, in one place, so nothing is written that cannot be found and removed. */
export interface Keys {
  seq: string;
  /** Sorted set of all job ids, scored by sequence number. */
  jobs: string;
  /** The same without array tasks: what plain gcqstat reads, however large the arrays. */
  jobsTop: string;
  job(id: string): string;
  /** Set of jobs whose -W depend names this job. */
  dependents(id: string): string;
  /** Reference count of a snapshot: jobs (queued or running) that still need it. */
  snapshotRefs: string;
  /** Job mail's notes on an array (first task begun, a task aborted, peak memory). */
  mail(id: string): string;
  /**
   * Prefix of the usage counts every gcd shares (queued/running per user, group, queue, system;
   * array tasks running; the fair-share clock): see queue/usage-lua.ts and scheduler/usage-store.ts.
   */
  usage: string;
  /** BullMQ's own keys live under `<prefix>:bull:<queue>:*`. */
  bullPrefix: string;
  /** Set of the names of every compute host that ever registered (src/grid/registry.ts). */
  nodes: string;
  /** One host's record (hash: capacity, state, usage, comment). */
  node(name: string): string;
  /** A host's heartbeat: present while it lives (its TTL is GC_NODE_DEAD_MS). */
  nodeAlive(name: string): string;
  /** When a job was first deferred for placement (src/grid/placement.ts); expires on its own. */
  placementDefer(id: string): string;
  /** Stream of the job transitions nodes made, bounded by MAXLEN (src/grid/transition-stream.ts). */
  events: string;
  /** The id of the last entry of `events` the server has told its listeners. */
  eventsCursor: string;
}

export const QUEUE_NAME = 'jobs';

export function keysFor(prefix: string): Keys {
  return {
    seq: `${prefix}:seq`,
    jobs: `${prefix}:jobs`,
    jobsTop: `${prefix}:jobs:top`,
    job: (id) => `${prefix}:job:${id}`,
    dependents: (id) => `${prefix}:deps:${id}`,
    snapshotRefs: `${prefix}:snaprefs`,
    mail: (id) => `${prefix}:mail:${id}`,
    usage: `${prefix}:usage`,
    bullPrefix: `${prefix}:bull`,
    nodes: `${prefix}:nodes`,
    node: (name) => `${prefix}:node:${name}`,
    nodeAlive: (name) => `${prefix}:node:${name}:alive`,
    placementDefer: (id) => `${prefix}:placement:${id}`,
    events: `${prefix}:events`,
    eventsCursor: `${prefix}:events:cursor`,
  };
}
