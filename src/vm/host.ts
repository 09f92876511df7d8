/**
 * VmHost: the VM floor's one entry for snapshots and clones kept under one state folder
 * (layout.ts). It knows no jobs and no clusters: the job driver (drivers/qemu) adds running a
 * job's command; clusters use it through their own narrow interface.
 */
import type { Settings } from '../config/settings.js';
import { Clones } from './clones/clones.js';
import type { CloneRef, CloneStartOptions, CloneTimings, LiveCloneAccess, RunningClone, VmChannels } from './clones/types.js';
import { Layout } from './layout.js';
import type { SnapshotRamMethod } from './migration.js';
import type { ProcessUsage } from './proc-usage.js';
import { snapshotClone, type CloneSnapshot } from './snapshots/of-clone.js';
import { Snapshotter } from './snapshots/snapshotter.js';
import { SnapshotStore } from './snapshots/store.js';
import type { RunningVms, SnapshotMeta, SnapshotSummary } from './snapshots/types.js';
import type { ClusterNic } from './vm-args.js';
import type { VmLifetime } from './vm-process.js';

export interface VmHostOptions {
  settings: Pick<Settings, 'stateDir' | 'ramDir'>;
  channels: VmChannels;
  /** The running long-lived VMs that snapshots are taken of (the headnode manager). */
  headnodes: RunningVms;
  /** 'job' (default): clones die with this process. 'detached': they survive it. */
  cloneLifetime?: VmLifetime;
  /** From spawn until a clone is ready (see ClonesOptions.readyTimeoutMs); default 180 s. */
  cloneReadyTimeoutMs?: number;
  /** TCG translation cache per clone, MiB (see ClonesOptions.tcgTbMiB); default 64, 0: QEMU's. */
  cloneTcgTbMiB?: number;
  /**
   * How a snapshot freezes RAM. 'auto' (default): background-snapshot where QEMU and the
   * kernel allow it (pause: devices only), else 'copy' (the RAM file is copied inside the
   * pause). gcd takes it from GC_SNAPSHOT_RAM.
   */
  snapshotRam?: SnapshotRamMethod;
  /**
   * Background block-streams per VM. Give every host that snapshots the same VMs the same
   * map, so that no snapshot starts while another one's stream runs.
   */
  streams?: Map<string, Promise<void>>;
  /** The backend of the cluster NIC (nic1) hot-plugged into a VM, for snapshots to record; clones must have the same device. */
  clusterNicOf?: (headnode: string) => ClusterNic | undefined;
}

export class VmHost {
  readonly layout: Layout;
  protected readonly store: SnapshotStore;
  protected readonly snapshotter: Snapshotter;
  protected readonly clones: Clones;

  constructor(protected readonly opts: VmHostOptions) {
    this.layout = new Layout(opts.settings);
    this.store = new SnapshotStore(this.layout);
    this.snapshotter = new Snapshotter({
      layout: this.layout, store: this.store, vms: opts.headnodes, snapshotRam: opts.snapshotRam, streams: opts.streams, clusterNicOf: opts.clusterNicOf,
    });
    const clones: ConstructorParameters<typeof Clones>[0] = { layout: this.layout, store: this.store, channels: opts.channels };
    if (opts.cloneLifetime !== undefined) clones.lifetime = opts.cloneLifetime;
    if (opts.cloneReadyTimeoutMs !== undefined) clones.readyTimeoutMs = opts.cloneReadyTimeoutMs;
    if (opts.cloneTcgTbMiB !== undefined) clones.tcgTbMiB = opts.cloneTcgTbMiB;
    this.clones = new Clones(clones);
  }

  // ---------------------------------------------------------------- snapshots

  /** Freeze the running VM's memory and disk as they are now; it runs on. */
  snapshot(headnode: string): Promise<SnapshotSummary> {
    return this.snapshotter.snapshot(headnode);
  }

  /** Snapshot a running clone as snapshot `id` (a deeper generation); `origin` is its own snapshot's metadata. */
  snapshotClone(vmId: string, origin: SnapshotMeta, id: string): Promise<CloneSnapshot> {
    return snapshotClone(this.layout, this.clones, vmId, origin, id);
  }

  releaseSnapshot(snapshotId: string): Promise<void> {
    return this.store.release(snapshotId);
  }

  /** Free a snapshot's RAM; its disk layer stays (clones' disks back onto it). */
  releaseSnapshotRam(snapshotId: string): Promise<void> {
    return this.store.removeRam(snapshotId);
  }

  listSnapshots(): Promise<string[]> {
    return this.store.list();
  }

  /** Snapshot metadata, or NotFoundError. */
  snapshotInfo(snapshotId: string): Promise<SnapshotSummary & { owner: string; group: string }> {
    return this.store.info(snapshotId);
  }

  /** A snapshot's metadata (NotFoundError when there is none). */
  snapshotMeta(snapshotId: string): Promise<SnapshotMeta> {
    return this.store.meta(snapshotId);
  }

  /** Receiver folders and stream files of clone snapshots cut short; call when none runs. */
  sweepTransfers(): Promise<void> {
    return this.store.sweepTransfers();
  }

  // ---------------------------------------------------------------- clones

  clone(opts: CloneStartOptions): Promise<CloneRef> {
    return this.clones.start(opts);
  }

  /** Run fn with a running clone under its lock (NotFoundError when it does not run here). */
  withClone<T>(cloneId: string, fn: (c: LiveCloneAccess) => Promise<T>): Promise<T> {
    return this.clones.withClone(cloneId, fn);
  }

  /**
   * After a restart: take back a detached clone whose QEMU still runs (QMP, guest agent, API
   * channel). Undefined when it cannot be driven; the caller then destroys it.
   */
  reattachClone(cloneId: string): Promise<CloneRef | undefined> {
    return this.clones.reattach(cloneId);
  }

  /** Kill the clone's VM and delete every per-clone file. Idempotent. */
  destroy(cloneId: string): Promise<void> {
    return this.clones.destroy(cloneId);
  }

  /** CPU time and peak RSS of the clone's QEMU process. */
  usage(cloneId: string): Promise<ProcessUsage | undefined> {
    return this.clones.usage(cloneId);
  }

  /** Destroy every clone not in `keep`, then what a crash left of snapshots; returns the clones destroyed. */
  async sweep(keep: ReadonlySet<string>): Promise<string[]> {
    const swept = await this.clones.sweep(keep);
    await this.store.sweep(this.snapshotter.inProgress);
    return swept;
  }

  /** Let go of every clone without killing it: for detached clones, which outlive this process (close() destroys them). */
  async detach(): Promise<void> {
    await this.clones.detach();
    await this.snapshotter.settleStreams();
  }

  /** Destroys every clone; the long-lived VMs are their owner's. */
  async close(): Promise<void> {
    await this.clones.close();
    await this.snapshotter.settle();
  }

  /** The running clone's QEMU pid (for tests and diagnostics). */
  clonePid(cloneId: string): number | undefined {
    return this.clones.pid(cloneId);
  }

  /** How long each step of the clone's start took. */
  cloneTimings(cloneId: string): Readonly<CloneTimings> | undefined {
    return this.clones.timings(cloneId);
  }

  /** A running clone for a command that runs alongside others (not under its lock). */
  protected runningClone(cloneId: string): RunningClone {
    return this.clones.running(cloneId);
  }
}
