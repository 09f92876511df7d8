/**
 * gcqstat's queue and server views (-Q, -B) and the job selections and layouts PBS's
 * alternate format adds (-H, -i, -r, -n, -1, -w), and the -s verdict for jobs that can
 * never run. gcqstat.ts parses the options and calls these.
 */
import { hostname } from 'node:os';
import { UsageError } from '../../errors.js';
import { emptyCounts, formatAltTable, formatQueueFull, formatQueueTable, formatServerFull, formatServerTable, formatWideTable, type QueueStatus, type StateCounts } from '../../pbs/qstat-layouts.js';
import type { QstatFormatOptions, QstatJob } from '../../pbs/qstat-format.js';
import type { JobRecord } from '../../queue/job.js';
import { neverRunsVerdict } from '../../scheduler/never-runs.js';
import { DEFAULT_QUEUE_NAME } from '../../scheduler/policy.js';
import type { Scheduler } from '../../scheduler/scheduler.js';

/** The jobs a queue or the server holds now, by state (array tasks count, their array's record not). */
async function countsBy(s: Scheduler): Promise<{ byQueue: Map<string, StateCounts>; all: StateCounts; cpus: Map<string, number>; mem: Map<string, number> }> {
  const byQueue = new Map<string, StateCounts>();
  const cpus = new Map<string, number>();
  const mem = new Map<string, number>();
  const all = emptyCounts();
  for (const j of await s.store.list({ tasks: true })) {
    if (j.array || j.state === 'F' || j.state === 'X') continue;
    const q = j.spec.queue;
    let c = byQueue.get(q);
    if (!c) byQueue.set(q, (c = emptyCounts()));
    c[j.state]++;
    all[j.state]++;
    if (j.state === 'R' || j.state === 'S' || j.state === 'E') {
      cpus.set(q, (cpus.get(q) ?? 0) + j.spec.resources.ncpus);
      mem.set(q, (mem.get(q) ?? 0) + j.spec.resources.memMiB);
    }
  }
  return { byQueue, all, cpus, mem };
}

/** `gcqstat -Q [-f] [queue...]`. */
export async function queueView(s: Scheduler, names: string[], full: boolean): Promise<string> {
  const cfg = s.quotaConfig();
  const { byQueue, cpus, mem } = await countsBy(s);
  const rows: QueueStatus[] = [];
  const base = (name: string): QueueStatus => ({
    name, enabled: true, started: true, priority: 0, counts: byQueue.get(name) ?? emptyCounts(), assignedNcpus: cpus.get(name) ?? 0, assignedMemMiB: mem.get(name) ?? 0,
  });
  if (cfg.queues.size === 0) {
    // No queues configured: PBS's workq, plus any queue name jobs were given.
    for (const name of new Set([DEFAULT_QUEUE_NAME, ...byQueue.keys()])) rows.push(base(name));
  } else {
    for (const q of cfg.queues.values()) {
      const r = base(q.name);
      Object.assign(r, { enabled: q.enabled, started: q.started, priority: q.priority });
      const lim = {
        maxRunning: q.maxRunning, maxQueued: q.maxQueued, maxJobNcpus: q.maxJobNcpus, maxJobMemMiB: q.maxJobMemMiB, maxJobWalltimeSec: q.maxJobWalltimeSec,
        maxRunningNcpus: q.maxRunningNcpus, maxRunningMemMiB: q.maxRunningMemMiB, defaultNcpus: q.defaultNcpus, defaultWalltimeSec: q.defaultWalltimeSec,
        perUserMaxRunning: q.perUser.maxRunning, perUserMaxQueued: q.perUser.maxQueued,
      };
      for (const [k, v] of Object.entries(lim)) if (v !== undefined) Object.assign(r, { [k]: v });
      rows.push(r);
    }
  }
  let shown = rows;
  if (names.length) {
    const wanted = names.map((n) => n.split('@')[0]);
    const unknown = wanted.filter((n) => !rows.some((r) => r.name === n));
    if (unknown.length) throw new UsageError(`Unknown queue ${unknown.join(', ')}; queues: ${rows.map((r) => r.name).join(', ')}`);
    shown = rows.filter((r) => wanted.includes(r.name));
  }
  return full ? formatQueueFull(shown) : formatQueueTable(shown);
}

/** `gcqstat -B [-f]`. */
export async function serverView(s: Scheduler, serverName: string, full: boolean): Promise<string> {
  const cfg = s.quotaConfig();
  const { all } = await countsBy(s);
  const used = s.capacity.used;
  const status = {
    name: serverName,
    host: hostname(),
    active: true,
    counts: all,
    ...(cfg.system.maxRunning !== undefined ? { maxRunning: cfg.system.maxRunning } : {}),
    ...(cfg.system.maxQueued !== undefined ? { maxQueued: cfg.system.maxQueued } : {}),
    defaultQueue: cfg.defaultQueue ?? DEFAULT_QUEUE_NAME,
    capacityNcpus: s.capacity.limits.ncpus,
    capacityMemMiB: s.capacity.limits.memMiB,
    assignedNcpus: used.ncpus,
    assignedMemMiB: used.memMiB,
    version: 'copper',
  };
  return full ? formatServerFull(status) : formatServerTable(status);
}

export type JobSelection = 'H' | 'i' | 'r';

/** -H: finished jobs; -i: queued, held or waiting; -r: running or suspended (jobs named by id: any state). */
export function selectJobs(jobs: JobRecord[], sel: JobSelection | undefined, byId: boolean): JobRecord[] {
  if (!sel || byId) return jobs;
  const keep = sel === 'H' ? ['F'] : sel === 'i' ? ['Q', 'H', 'W'] : ['R', 'S'];
  return jobs.filter((j) => keep.includes(j.state));
}

/** What -s shows instead of the comment for a job that can never run. */
export function verdictOf(s: Scheduler): (job: QstatJob) => string | undefined {
  const cfg = s.quotaConfig();
  const cap = s.capacity.limits;
  return (job) => neverRunsVerdict(job, cap, cfg);
}

export interface LayoutFlags {
  alternate: boolean;
  comments: boolean;
  hosts: boolean;
  oneLine: boolean;
  wide: boolean;
}

/** The table layouts: default (-w wide), or alternate with -s/-n/-1/-w. */
export function jobTable(s: Scheduler, jobs: QstatJob[], opts: QstatFormatOptions, f: LayoutFlags): string | undefined {
  if (!f.alternate) return f.wide ? formatWideTable(jobs, opts) : undefined;
  return formatAltTable(jobs, { ...opts, comments: f.comments, hosts: f.hosts, oneLine: f.oneLine, verdictOf: verdictOf(s) });
}
