/**
 * What virtual clusters need of the VM floor: snapshots of headnodes and of clones, clones
 * started from them, and cleanup. vm/host.ts's VmHost provides it (its own, detached clones
 * and folders); unit tests provide a stand-in.
 */
import type { CloneRef, CloneStartOptions, CloneTimings, LiveCloneAccess } from '../vm/clones/types.js';
import type { CloneSnapshot } from '../vm/snapshots/of-clone.js';
import type { SnapshotMeta, SnapshotSummary } from '../vm/snapshots/types.js';

export interface ClusterVms {
  snapshot(headnode: string): Promise<SnapshotSummary>;
  snapshotMeta(snapshotId: string): Promise<SnapshotMeta>;
  /** Snapshot a running clone (a deeper generation); its disk backs onto the new snapshot from then on. */
  snapshotClone(vmId: string, origin: SnapshotMeta, id: string): Promise<CloneSnapshot>;
  releaseSnapshot(snapshotId: string): Promise<void>;
  /** Free a snapshot's RAM; its disk layer stays for the clones that back onto it. */
  releaseSnapshotRam(snapshotId: string): Promise<void>;
  listSnapshots(): Promise<string[]>;
  sweep(keep: ReadonlySet<string>): Promise<string[]>;
  /** Leftovers of clone snapshots cut short (their receivers died with the previous gcd). */
  sweepTransfers(): Promise<void>;
  clone(opts: CloneStartOptions): Promise<CloneRef>;
  withClone<T>(cloneId: string, fn: (c: LiveCloneAccess) => Promise<T>): Promise<T>;
  reattachClone(cloneId: string): Promise<CloneRef | undefined>;
  destroy(cloneId: string): Promise<void>;
  detach(): Promise<void>;
  clonePid(cloneId: string): number | undefined;
  cloneTimings(cloneId: string): Readonly<CloneTimings> | undefined;
}
