import type { JobDependency, JobRecord } from '../queue/job.js';

/** Where a job's -W depend stands, given its parents' records (undefined: record gone). */
export type DependencyVerdict = { kind: 'met' } | { kind: 'pending'; on: string[] } | { kind: 'never'; reason: string };

function satisfied(type: JobDependency['type'], parent: JobRecord): boolean | undefined {
  if (parent.state !== 'F') return undefined;
  const ok = parent.exitStatus === 0;
  if (type === 'afterany') return true;
  return type === 'afterok' ? ok : !ok;
}

/** All conditions are ANDed, as in PBS (`afterok:1:2,afternotok:3`). */
export function judgeDependencies(depend: JobDependency[], parents: ReadonlyMap<string, JobRecord | undefined>): DependencyVerdict {
  const pending: string[] = [];
  for (const d of depend) {
    for (const id of d.jobIds) {
      const p = parents.get(id);
      if (!p) return { kind: 'never', reason: `${d.type}:${id} can never be met: job ${id} is unknown or its history expired` };
      const s = satisfied(d.type, p);
      if (s === undefined) pending.push(id);
      else if (!s) {
        const how = p.exitStatus === undefined ? 'was deleted before it ran' : `ended with Exit_status ${p.exitStatus}`;
        return { kind: 'never', reason: `${d.type}:${id} can never be met: ${id} ${how}` };
      }
    }
  }
  return pending.length ? { kind: 'pending', on: pending } : { kind: 'met' };
}

export function describeDependencies(depend: JobDependency[]): string {
  return depend.map((d) => [d.type, ...d.jobIds].join(':')).join(',');
}

/** PBS's exit status of a whole array: 0 all tasks 0, 1 some task non-zero, 2 some task never ran. */
export function arrayExitStatus(tasks: JobRecord[]): number {
  if (tasks.some((t) => t.exitStatus === undefined)) return 2;
  return tasks.every((t) => t.exitStatus === 0) ? 0 : 1;
}
