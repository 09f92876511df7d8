/**
 * Snapshot a running long-lived VM (RAM + disk) into a snapshot folder; the VM is paused only
 * for the middle part:
 *   stop; blockdev-snapshot-sync (the VM goes on writing a new overlay; the old one is
 *   frozen); then, where the kernel and QEMU allow it, a background snapshot migration to a
 *   RamReceiver (background.ts): QEMU saves the devices, write-protects RAM and resumes the
 *   VM, and RAM streams into the snapshot's RAM file while it runs. Otherwise: migrate with
 *   x-ignore-shared to a state file (devices only, RAM is the file); copy the RAM file
 *   sparsely to the frozen snapshot RAM file; cont.
 *   Then, with the VM running: hard-link the frozen overlay into the snapshot folder and
 *   block-stream it into the new overlay in the background, so the snapshot owns its layer.
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, rm } from 'node:fs/promises';
import { CopperError, DriverError, errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import { activeNode, virtualSize } from '../disk-chain.js';
import { createOverlayUnsafe } from '../qemu-img.js';
import { giveFile, giveSnapshotFiles } from '../vm-files.js';
import { writeJsonAtomic } from '../json-file.js';
import { ensurePrivateDir } from '../private-dir.js';
import { vmDirMode } from '../vm-uid.js';
import { assertId, type Layout } from '../layout.js';
import { enableIgnoreShared, saveDeviceState, whilePaused, type SnapshotRamMethod } from '../migration.js';
import type { ClusterNic } from '../vm-args.js';
import { guestClockMs } from './guest-clock.js';
import { BackgroundPolicy, freezeInBackground } from './background.js';
import { DiskStreams, shortenChain } from './disk-streams.js';
import { checkRamSpace, copySparse, digHoles } from './ram-space.js';
import { summaryOf, type SnapshotStore } from './store.js';
import { frozenVm, type FrozenVm, type RunningVm, type RunningVms, type SnapshotMeta, type SnapshotSummary } from './types.js';

export interface SnapshotterOptions {
  layout: Layout;
  store: SnapshotStore;
  vms: RunningVms;
  /** 'auto' (default): background-snapshot where QEMU and the kernel allow it; 'copy': copy the RAM file inside the pause. */
  snapshotRam?: SnapshotRamMethod;
  /** Background block-streams per VM, shared by everything that snapshots the same VMs. */
  streams?: Map<string, Promise<void>>;
  /** The backend of a hot-plugged cluster NIC (nic1), for snapshots to record; clones must have the same device. */
  clusterNicOf?: (vm: string) => ClusterNic | undefined;
}

export class Snapshotter {
  /** Snapshots being written (their folder exists but has no meta.json yet). */
  readonly inProgress = new Set<string>();
  private readonly streams: DiskStreams;
  private readonly policy: BackgroundPolicy;
  /** Background chores (hole punching) that settle() waits for. */
  private readonly housekeeping = new Set<Promise<void>>();

  constructor(private readonly o: SnapshotterOptions) {
    this.streams = new DiskStreams(o.streams);
    this.policy = new BackgroundPolicy(o.snapshotRam);
  }

  async snapshot(name: string): Promise<SnapshotSummary> {
    assertId('headnode', name);
    await this.streams.settled(name);
    return this.o.vms.withRunning(name, async (h) => {
      // A stream may have been started by the previous snapshot while we queued for the lock.
      await this.streams.settled(name);
      await shortenChain(h);
      const id = `${name}.${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
      this.inProgress.add(id);
      try {
        return await this.take(h, id);
      } catch (err) {
        await this.o.store.remove(id);
        throw err instanceof CopperError ? err : new DriverError(`snapshot of '${name}' failed: ${errorMessage(err)}`, { cause: err });
      } finally {
        this.inProgress.delete(id);
      }
    });
  }

  /** Streams and hole punching still running. */
  settle(): Promise<unknown> {
    return Promise.allSettled([...this.streams.all(), ...this.housekeeping]);
  }

  /** Streams only (a detach leaves the rest to finish on their own). */
  settleStreams(): Promise<unknown> {
    return Promise.allSettled(this.streams.all());
  }

  private async take(h: RunningVm, id: string): Promise<SnapshotSummary> {
    const layout = this.o.layout;
    const sp = layout.snapshot(id);
    await mkdir(sp.dir, { recursive: true, mode: 0o700 });
    await ensurePrivateDir(layout.ramSnapshotsDir, vmDirMode());
    const qmp = h.vm.qmp;
    const frozenGen = h.diskGen;
    const frozenDisk = h.paths.disk(frozenGen);
    const nextGen = frozenGen + 1;
    const nextDisk = h.paths.disk(nextGen);
    await rm(nextDisk, { force: true }); // left by a failed attempt
    const { node: frozenNode } = await activeNode(qmp);
    // QEMU runs as the VM's uid (vm-uid.ts): gcd makes the files it will write and gives them to it.
    const uid = h.config.uid;
    await giveSnapshotFiles(layout, sp, uid);
    await createOverlayUnsafe(nextDisk, frozenDisk, await virtualSize(qmp, frozenNode));
    await giveFile(nextDisk, uid);
    const clusterNic = await this.pluggedClusterNic(h);
    const vm: FrozenVm = clusterNic ? { ...frozenVm(h.config), clusterNic } : frozenVm(h.config);
    await checkRamSpace(h, layout.ramSnapshotsDir, this.policy.expected);
    let switched = false;
    const freeze = async (mark: (step: string) => void): Promise<void> => {
      await qmp.execute('blockdev-snapshot-sync', {
        'node-name': frozenNode,
        'snapshot-file': nextDisk,
        'snapshot-node-name': `ov${nextGen}`,
        format: 'qcow2',
        mode: 'existing',
      });
      switched = true;
      mark('disk');
    };
    let pauseMs: number;
    let failure: unknown;
    let marks: Record<string, number>;
    // The freeze instant in the VM's clock, read as late as it still runs (stage-out's conflict check).
    const frozenAtGuestMs = await guestClockMs(h.agent, h.name);
    const bg = this.policy.tried ? await freezeInBackground(h, layout, this.policy, id, vm, frozenNode, freeze) : undefined;
    if (bg !== undefined) {
      ({ pauseMs, failure, marks } = bg);
    } else {
      await enableIgnoreShared(qmp); // before the pause: it costs nothing while running
      ({ pauseMs, failure, marks } = await whilePaused(qmp, `headnode '${h.name}'`, async (mark) => {
        await freeze(mark);
        await saveDeviceState(qmp, sp.state);
        mark('state');
        await copySparse(h.paths.ramFile, sp.ramFile);
        await giveFile(sp.ramFile, uid);
        mark('ram');
      }));
    }
    if (switched) await h.setDiskGen(nextGen);
    if (failure !== undefined) {
      if (switched) this.streams.start(h, `ov${nextGen}`, frozenNode, frozenDisk);
      throw failure instanceof CopperError ? failure : new DriverError(`snapshot of '${h.name}' failed: ${errorMessage(failure)}`, { cause: failure });
    }

    // The frozen overlay's second name: the snapshot's own, kept after the VM drops it.
    await link(frozenDisk, sp.disk);
    const meta: SnapshotMeta = {
      version: 1,
      id,
      headnode: h.name,
      owner: h.spec.owner,
      group: h.spec.group,
      createdAt: Date.now(),
      pauseMs,
      vm,
      ...(frozenAtGuestMs !== undefined ? { frozenAtGuestMs } : {}),
    };
    await writeJsonAtomic(sp.meta, meta);
    this.streams.start(h, `ov${nextGen}`, frozenNode, frozenDisk);
    if (bg !== undefined) this.track(digHoles(sp.ramFile));
    log.info(`snapshot ${id} of ${h.name}: paused ${pauseMs} ms`, { at: marks });
    return summaryOf(meta);
  }

  private track(run: Promise<void>): void {
    this.housekeeping.add(run);
    void run.finally(() => this.housekeeping.delete(run));
  }

  /** A hot-plugged cluster NIC (nic1) in the VM, which a clone must have too. */
  private async pluggedClusterNic(h: RunningVm): Promise<ClusterNic | undefined> {
    if (h.config.clusterNic !== undefined) return h.config.clusterNic;
    const devices = await h.vm.qmp.execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' });
    if (!devices.some((d) => d.name === 'nic1')) return undefined;
    const nic = this.o.clusterNicOf?.(h.name);
    if (!nic) throw new DriverError(`headnode '${h.name}' has a cluster NIC gcd does not know of; restart the headnode`);
    return nic;
  }
}
