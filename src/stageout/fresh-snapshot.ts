import type { Driver } from '../drivers/driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { incarnationMismatch } from '../headnodes/incarnation.js';
import type { JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';

/**
 * A job held on -W depend runs in a snapshot taken when its dependencies are met, not at its
 * gcqsub: by then its parents' files have come home (stage-out is done before F), and an
 * afterok job reads what its parent wrote, as on a shared filesystem. `targets` are the held
 * job's records that run (an array's tasks, or the job itself). Each moves with the
 * `resnapshot` transition (compare-and-set on H, references moved in the same write), so a job
 * deleted or released meanwhile keeps what it had. If the headnode cannot be snapshotted now
 * (stopped), the job keeps its submission snapshot and the returned note says so.
 */
export async function freshSnapshotForRelease(driver: Driver, store: JobStore, headnode: string, targets: JobRecord[]): Promise<string | undefined> {
  const held = targets.filter((t) => !t.array && t.state === 'H' && t.snapshotId !== undefined);
  if (held.length === 0) return undefined;
  let snapId: string;
  try {
    const snap = await driver.snapshot(headnode);
    snapId = snap.id;
    // The name now belongs to another life of the headnode: its state is not this job's.
    const other = held.map((t) => incarnationMismatch(headnode, t.spec.headnodeIncarnation, snap.incarnation)).find((e) => e !== undefined);
    if (other) {
      await driver.releaseSnapshot(snapId).catch(() => undefined);
      throw other;
    }
  } catch (e) {
    log.warn('no fresh snapshot for a released dependent; it runs in its submission snapshot', { headnode, error: errorMessage(e) });
    return `runs in its submission snapshot (headnode ${headnode} could not be snapshotted when its dependencies were met: ${errorMessage(e)})`;
  }
  let moved = 0;
  for (const t of held) {
    const r = await store.resnapshot(t.id, snapId);
    if (!r.ok) continue;
    moved++;
    if (r.lastRefOf) {
      const old = r.lastRefOf;
      await driver.releaseSnapshot(old).catch((e) => log.error('snapshot release failed', { snapshot: old, error: errorMessage(e) }));
    }
  }
  // No job took it (all deleted or released meanwhile): nothing refers to it. (A crash before
  // this leaves it unreferenced too; gcd's start releases such snapshots.)
  if (moved === 0) await driver.releaseSnapshot(snapId).catch((e) => log.error('snapshot release failed', { snapshot: snapId, error: errorMessage(e) }));
  return undefined;
}
