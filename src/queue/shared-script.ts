/**
 * An array job's script is stored once (issue 13 item 10): in the array's own record. Its
 * tasks' records name that record (`scriptOf`) instead of each holding a copy, so a 1,000-task
 * array of a 100 KiB script takes 100 KiB of Redis, not 100 MB. The script is read back only
 * where it is used: when a task's command starts.
 */
import type { JobRecord, JobSpec } from './job.js';

/** The spec to store for `r` and the record whose script it shares, if any. */
export function storedSpec(r: JobRecord, batch: ReadonlyMap<string, JobRecord>): { spec: JobSpec; scriptOf?: string } {
  if (r.arrayParent === undefined || r.spec.script === undefined) return { spec: r.spec };
  const parent = batch.get(r.arrayParent);
  if (parent?.spec.script !== r.spec.script) return { spec: r.spec };
  const { script: _shared, ...rest } = r.spec;
  void _shared;
  return { spec: rest, scriptOf: parent.id };
}

/** Small cache of shared scripts by array id: the tasks of one array start one after another. */
export class ScriptCache {
  private readonly scripts = new Map<string, string>();
  constructor(private readonly max = 16) {}

  get(id: string): string | undefined {
    return this.scripts.get(id);
  }

  set(id: string, script: string): void {
    if (this.scripts.size >= this.max) this.scripts.delete(this.scripts.keys().next().value!);
    this.scripts.set(id, script);
  }
}
