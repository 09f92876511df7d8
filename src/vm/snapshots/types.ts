/**
 * What a snapshot is on disk and what vm/snapshots needs of the side that owns the running
 * VMs it freezes (the headnode manager implements RunningVms).
 */
import type { AgentClient } from '../agent.js';
import type { HeadnodePaths } from '../layout.js';
import type { VmConfig } from '../vm-args.js';
import type { VmProcess } from '../vm-process.js';

/**
 * The VM layout a snapshot was taken with: a clone must be started with exactly this.
 * sharedSftp is command-line only (not migrated), but a clone must serve the same owner's folder.
 */
export type FrozenVm = Pick<
  VmConfig,
  | 'accel'
  | 'memMiB'
  | 'vcpus'
  | 'maxVcpus'
  | 'maxMemMiB'
  | 'memSlots'
  | 'machine'
  | 'cpu'
  | 'kernel'
  | 'initrd'
  | 'append'
  | 'tcgTbMiB'
  | 'clusterNic'
  | 'sharedSftp'
  | 'uid'
>;

/** <snapshot>/meta.json: written last, so a folder without it is an unfinished snapshot. */
export interface SnapshotMeta {
  version: 1;
  id: string;
  /** The long-lived VM it was taken of (for a clone's snapshot: the VM its line started from). */
  headnode: string;
  owner: string;
  group: string;
  createdAt: number;
  pauseMs: number;
  vm: FrozenVm;
  /**
   * The VM's own clock (ms since the epoch) read just before the pause: nothing it wrote after
   * the freeze has an earlier time. Absent in snapshots taken before it was recorded, or when
   * the guest agent did not answer.
   */
  frozenAtGuestMs?: number;
}

/** A snapshot as callers see it (the job driver's SnapshotInfo has this shape). */
export interface SnapshotSummary {
  id: string;
  headnode: string;
  createdAt: number;
  pauseMs: number;
  memMiB?: number;
  vcpus?: number;
  maxVcpus?: number;
  /** The most RAM a clone of it can have (hot-plugged DIMMs); memMiB when it cannot grow. */
  maxMemMiB?: number;
}

/** A running long-lived VM, lent under its owner's lock so that nothing else changes it meanwhile. */
export interface RunningVm {
  readonly name: string;
  readonly spec: { readonly owner: string; readonly group: string };
  readonly paths: HeadnodePaths;
  readonly vm: VmProcess;
  readonly agent: AgentClient;
  /** The exact VM configuration it runs with (a clone must match it). */
  readonly config: VmConfig;
  /** Current active overlay generation. */
  readonly diskGen: number;
  /** Which life of the headnode's name (headnodes/incarnation.ts); absent for VMs that are not headnodes. */
  readonly incarnation?: string;
  /** Record that the VM now writes to disk-<gen>.qcow2 (after blockdev-snapshot-sync). */
  setDiskGen(gen: number): Promise<void>;
}

/** The owner of the running VMs that snapshots are taken of. */
export interface RunningVms {
  /** Run fn with the running VM under its lock; NotFoundError / StateError otherwise. */
  withRunning<T>(name: string, fn: (h: RunningVm) => Promise<T>): Promise<T>;
}

export function frozenVm(cfg: VmConfig): FrozenVm {
  const f: FrozenVm = { accel: cfg.accel, memMiB: cfg.memMiB, vcpus: cfg.vcpus };
  if (cfg.maxVcpus !== undefined && cfg.maxVcpus > cfg.vcpus) f.maxVcpus = cfg.maxVcpus;
  // Without them (snapshots of headnodes booted before memory hot-plug) clones cannot grow.
  if (cfg.maxMemMiB !== undefined && cfg.memSlots !== undefined && cfg.memSlots > 0 && cfg.maxMemMiB > cfg.memMiB) {
    f.maxMemMiB = cfg.maxMemMiB;
    f.memSlots = cfg.memSlots;
  }
  if (cfg.machine !== undefined) f.machine = cfg.machine;
  if (cfg.cpu !== undefined) f.cpu = cfg.cpu;
  if (cfg.kernel !== undefined) f.kernel = cfg.kernel;
  if (cfg.initrd !== undefined) f.initrd = cfg.initrd;
  if (cfg.append !== undefined) f.append = cfg.append;
  if (cfg.tcgTbMiB !== undefined) f.tcgTbMiB = cfg.tcgTbMiB;
  if (cfg.sharedSftp !== undefined) f.sharedSftp = { dir: cfg.sharedSftp.dir };
  if (cfg.uid !== undefined) f.uid = cfg.uid;
  return f;
}
