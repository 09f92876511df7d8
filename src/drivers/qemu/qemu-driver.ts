/**
 * QemuDriver: snapshot a running headnode (RAM + disk) and fork the snapshot into clone VMs.
 *
 * Snapshot (headnode paused only for the middle part):
 *   stop; blockdev-snapshot-sync (the headnode goes on writing a new overlay; the old one is
 *   frozen); then, where the kernel and QEMU allow it (freezeInBackground), a background
 *   snapshot migration to a RamReceiver: QEMU saves the devices, write-protects RAM and
 *   resumes the headnode, and RAM streams into the snapshot's RAM file while it runs.
 *   Otherwise: migrate with x-ignore-shared to a state file (devices only, RAM is the file);
 *   copy the RAM file sparsely to the frozen snapshot RAM file; cont.
 *   Then, with the headnode running: hard-link the frozen overlay into the snapshot folder and
 *   block-stream it into the new overlay in the background, so the snapshot owns its layer.
 * Clone: qcow2 overlay on the frozen layer; QEMU with the same machine, the frozen RAM file
 *   mapped private (copy-on-write), -incoming defer; load the device state; cont; resync the
 *   guest agent; vCPUs hot-plugged or unplugged before cont for -l ncpus (vcpu-hotplug.ts);
 *   clone-init gives it its own hostname, machine-id, entropy, clock and online vCPUs, by
 *   default in the same guest exec as its first command (run-job --init).
 */
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { appendFile, link, mkdir, readdir, readFile, rm, stat, statfs } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Settings } from '../../config/settings.js';
import { CopperError, DriverError, NotFoundError, StateError, UsageError, errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import { GUEST_CLONE_INIT, GUEST_RUN_JOB } from '../../headnodes/image.js';
import { KeyedLock } from '../../headnodes/keyed-lock.js';
import { pruneGenerations, type LiveHeadnode } from '../../headnodes/manager.js';
import { writeJsonAtomic } from '../../headnodes/record.js';
import type { GuestChannels, HeadnodeSpec } from '../../headnodes/types.js';
import { processUsage } from './proc-usage.js';
import type {
  CloneUsage,
  CloneHandle, CloneOptions, Driver, ExecResult, ExecSpec, KillSignal, RunningCommand, SnapshotInfo,
} from '../driver.js';
import { AgentClient } from './agent.js';
import { activeNode, backingOf, nodeForFile, streamDown, virtualSize } from './disk-chain.js';
import { copyFromGuest, copyToGuest, readGuestFile, writeGuestFile } from './guest-files.js';
import { assertId, Layout, type ClonePaths } from './layout.js';
import { backgroundSnapshotExpected, enableIgnoreShared, type SnapshotRamMethod, loadDeviceState, saveDeviceState, setMigrationCaps, waitMigration, whilePaused } from './migration.js';
import { QmpError } from './qmp.js';
import { RamReceiver } from './ram-receiver.js';
import { resizeVcpus } from './vcpu-hotplug.js';
import { stageOutJob } from './stage-out.js';
import type { StageOutRequest, StageOutResult } from '../../stageout/types.js';
import { backingChain, createOverlay } from './qemu-img.js';
import { buildVmArgs, type ClusterNic, type VmConfig } from './vm-args.js';
import { pidAlive, VmProcess, type VmLifetime } from './vm-process.js';

/** What the driver needs from the headnode manager (QemuHeadnodeManager provides it). */
export interface HeadnodeAccess {
  /** Run fn with the running headnode under its lock; NotFoundError / StateError otherwise. */
  withRunning<T>(name: string, fn: (h: LiveHeadnode) => Promise<T>): Promise<T>;
  spec(name: string): Promise<HeadnodeSpec>;
}

export interface QemuDriverOptions {
  settings: Pick<Settings, 'stateDir' | 'ramDir'>;
  channels: GuestChannels;
  headnodes: HeadnodeAccess;
  /** 'job' (default): clones die with gcd. 'detached': they survive it. */
  cloneLifetime?: VmLifetime;
  /**
   * From spawn until the clone is ready (agent answering, vCPUs taken, clone-init done when it
   * runs in clone()). Generous by
   * default: 32 clones starting at once on 2 TCG cores took 40 s.
   */
  cloneReadyTimeoutMs?: number;
  /**
   * TCG translation cache per clone, MiB. QEMU's default reserves 1 GiB and a clone fills it
   * as it runs: a clone that only starts and runs `hostname` translates ~60 MiB of host code.
   * Measured, 8 clones at once each running `hostname`, two rounds in one run: 64 MiB ->
   * 72-73 MiB anonymous per clone, 11.5-12.5 s; 32 -> 43 MiB, 14.7-15.9 s (the cache is
   * flushed and refilled). Default 64, for speed; 0 means QEMU's default.
   */
  cloneTcgTbMiB?: number;
  /**
   * How a headnode snapshot freezes RAM. 'auto' (default): background-snapshot where QEMU and
   * the kernel allow it (pause: devices only), else 'copy' (the RAM file is copied inside the
   * pause). gcd takes it from GC_SNAPSHOT_RAM.
   */
  snapshotRam?: SnapshotRamMethod;
  /**
   * Background block-streams per headnode. Give every driver that snapshots the same
   * headnodes the same map, so that no snapshot starts while another driver's stream runs.
   */
  streams?: Map<string, Promise<void>>;
  /**
   * The backend of the cluster NIC (nic1) hot-plugged into a headnode (src/clusters), for
   * snapshots to record; clones must have the same device.
   */
  clusterNicOf?: (headnode: string) => ClusterNic | undefined;
}

/** clone() options of this driver. */
export interface QemuCloneOptions extends CloneOptions {
  /**
   * Backend of the clone's cluster NIC when its snapshot has one. Default: an isolated
   * backend, so that a job clone never joins its headnode's cluster L2 with its MAC and IP.
   */
  clusterNic?: ClusterNic;
  /**
   * Start with the cluster NIC's link down (QMP set_link, before the vCPUs run), so that the
   * clone says nothing on the cluster L2 under its parent's MAC and IP; the caller sets its
   * own identity in the guest and then the link up.
   */
  clusterLinkDown?: boolean;
  /**
   * When the clone takes its identity (hostname, machine-id, clock, entropy, hot-plugged vCPUs
   * online: clone-init). Under TCG every guest exec costs a few hundred ms, so by default
   * ('first-exec') clone() returns once the guest agent answers and clone-init runs inside the
   * first exec(), before its command; a failure there fails that exec with DriverError.
   * 'clone-init': run it in clone(), before returning. 'none': never; the caller gives the clone
   * its identity itself (virtual clusters do it in the same exec as the network identity).
   */
  init?: 'first-exec' | 'clone-init' | 'none';
  // With 'none', vCPUs hot-plugged for ncpus stay offline until the caller puts them online.
}

/** A running clone, lent to a caller under the clone's lock (withClone). */
export interface LiveCloneAccess {
  readonly handle: CloneHandle;
  readonly paths: ClonePaths;
  readonly vm: VmProcess;
  readonly agent: AgentClient;
}

/**
 * The VM layout a snapshot was taken with: a clone must be started with exactly this.
 * sharedSftp is command-line only (not migrated), but a clone must serve the same owner's folder.
 */
export type FrozenVm = Pick<VmConfig, 'accel' | 'memMiB' | 'vcpus' | 'maxVcpus' | 'machine' | 'cpu' | 'kernel' | 'initrd' | 'append' | 'tcgTbMiB' | 'clusterNic' | 'sharedSftp'>;

/** <snapshot>/meta.json: written last, so a folder without it is an unfinished snapshot. */
export interface SnapshotMeta {
  version: 1;
  id: string;
  headnode: string;
  owner: string;
  group: string;
  createdAt: number;
  pauseMs: number;
  vm: FrozenVm;
}

interface CloneRecord {
  cloneId: string;
  snapshotId: string;
  headnode: string;
  createdAt: number;
}

interface LiveClone {
  handle: CloneHandle;
  paths: ClonePaths;
  vm: VmProcess;
  agent: AgentClient;
  execs: number;
  destroyed: boolean;
  timings: CloneTimings;
  /** The hostname clone-init still has to give it, in the next exec (init 'first-exec'). */
  pendingInit?: string;
}

/** Milliseconds from the start of clone() to each step (for benchmarks and diagnostics). */
export interface CloneTimings {
  /** qcow2 overlay made, channel opened. */
  overlay?: number;
  /** QEMU spawned and its QMP answering. */
  qmp?: number;
  /** Device state loaded. */
  restored?: number;
  /** vCPUs running. */
  running?: number;
  /** Guest agent answered a sync. */
  agent?: number;
  /** The clone is returned to the caller (clone-init done if it ran in clone()). */
  ready?: number;
}

export class QemuDriver implements Driver {
  readonly name = 'qemu';
  readonly layout: Layout;
  private readonly clones = new Map<string, LiveClone>();
  private readonly cloneLock = new KeyedLock();
  /** Background block-streams per headnode; the next snapshot waits for it. */
  private readonly streams: Map<string, Promise<void>>;
  /** Snapshots being written (their folder exists but has no meta.json yet). */
  private readonly inProgress = new Set<string>();
  private readonly cloneLifetime: VmLifetime;
  private readonly cloneReadyTimeoutMs: number;
  private closed = false;
  /** undefined: not tried yet; false after QEMU refused background-snapshot (then never again). */
  private backgroundSnapshots: boolean | undefined;
  private backgroundFailures = 0;
  /** Background chores (hole punching) that close() waits for. */
  private readonly housekeeping = new Set<Promise<void>>();

  constructor(private readonly opts: QemuDriverOptions) {
    this.layout = new Layout(opts.settings);
    this.cloneLifetime = opts.cloneLifetime ?? 'job';
    this.cloneReadyTimeoutMs = opts.cloneReadyTimeoutMs ?? 180_000;
    this.streams = opts.streams ?? new Map();
    if (opts.snapshotRam === 'copy') this.backgroundSnapshots = false;
  }

  // ---------------------------------------------------------------- snapshots

  async snapshot(headnode: string): Promise<SnapshotInfo> {
    assertId('headnode', headnode);
    await this.streams.get(headnode);
    return this.opts.headnodes.withRunning(headnode, async (h) => {
      // A stream may have been started by the previous snapshot while we queued for the lock.
      await this.streams.get(headnode);
      await this.shortenChain(h);
      const id = `${headnode}.${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
      const sp = this.layout.snapshot(id);
      this.inProgress.add(id);
      try {
        await mkdir(sp.dir, { recursive: true, mode: 0o700 });
        await mkdir(this.layout.ramSnapshotsDir, { recursive: true, mode: 0o700 });
        const qmp = h.vm.qmp;
        const frozenGen = h.diskGen;
        const frozenDisk = h.paths.disk(frozenGen);
        const nextGen = frozenGen + 1;
        const nextDisk = h.paths.disk(nextGen);
        await rm(nextDisk, { force: true }); // left by a failed attempt
        const { node: frozenNode } = await activeNode(qmp);
        const clusterNic = await this.pluggedClusterNic(h);
        const vm: FrozenVm = clusterNic ? { ...frozenVm(h.config), clusterNic } : frozenVm(h.config);
        await this.checkRamSpace(h);
        let switched = false;
        const freeze = async (mark: (step: string) => void): Promise<void> => {
          await qmp.execute('blockdev-snapshot-sync', {
            'node-name': frozenNode,
            'snapshot-file': nextDisk,
            'snapshot-node-name': `ov${nextGen}`,
            format: 'qcow2',
          });
          switched = true;
          mark('disk');
        };
        let pauseMs: number;
        let failure: unknown;
        let marks: Record<string, number>;
        const bg = this.backgroundSnapshots !== false
          ? await this.freezeInBackground(h, id, vm, frozenNode, freeze)
          : undefined;
        if (bg !== undefined) {
          ({ pauseMs, failure, marks } = bg);
        } else {
          await enableIgnoreShared(qmp); // before the pause: it costs nothing while running
          ({ pauseMs, failure, marks } = await whilePaused(qmp, `headnode '${headnode}'`, async (mark) => {
            await freeze(mark);
            await saveDeviceState(qmp, sp.state);
            mark('state');
            await copySparse(h.paths.ramFile, sp.ramFile);
            mark('ram');
          }));
        }
        if (switched) await h.setDiskGen(nextGen);
        if (failure !== undefined) {
          if (switched) this.startStream(h, `ov${nextGen}`, frozenNode, frozenDisk);
          throw failure instanceof CopperError ? failure : new DriverError(`snapshot of '${headnode}' failed: ${errorMessage(failure)}`, { cause: failure });
        }

        // The frozen overlay's second name: the snapshot's own, kept after the headnode drops it.
        await link(frozenDisk, sp.disk);
        const meta: SnapshotMeta = {
          version: 1,
          id,
          headnode,
          owner: h.spec.owner,
          group: h.spec.group,
          createdAt: Date.now(),
          pauseMs,
          vm,
        };
        await writeJsonAtomic(sp.meta, meta);
        this.startStream(h, `ov${nextGen}`, frozenNode, frozenDisk);
        if (bg !== undefined) this.digHoles(sp.ramFile);
        log.info(`snapshot ${id} of ${headnode}: paused ${pauseMs} ms`, { at: marks });
        return { id, headnode, createdAt: meta.createdAt, pauseMs, memMiB: meta.vm.memMiB, vcpus: meta.vm.vcpus, maxVcpus: meta.vm.maxVcpus ?? meta.vm.vcpus };
      } catch (err) {
        await this.removeSnapshotFiles(id);
        throw err instanceof CopperError ? err : new DriverError(`snapshot of '${headnode}' failed: ${errorMessage(err)}`, { cause: err });
      } finally {
        this.inProgress.delete(id);
      }
    });
  }

  /**
   * Freeze the headnode with QEMU's background-snapshot: stop, `freeze` (the disk), then a
   * migration to a RamReceiver during which QEMU saves the devices, write-protects guest RAM
   * (userfaultfd) and resumes the headnode itself; RAM pages stream to the receiver while the
   * headnode runs, each page as it was at the stop (a page the guest writes is sent first).
   * The receiver's RAM file is the snapshot's; it then writes state.bin. The pause is the
   * stop..RESUME window only. Undefined (nothing done) when QEMU or the kernel cannot do it:
   * the caller then copies the RAM file inside the pause instead.
   */
  private async freezeInBackground(
    h: LiveHeadnode, id: string, vm: FrozenVm, frozenNode: string, freeze: (mark: (step: string) => void) => Promise<void>,
  ): Promise<{ pauseMs: number; failure: unknown; marks: Record<string, number> } | undefined> {
    const qmp = h.vm.qmp;
    const sp = this.layout.snapshot(id);
    // Anything that fails before the pause leaves the headnode untouched: copy instead.
    let receiver: RamReceiver;
    try {
      receiver = await RamReceiver.start({
        // A short folder name: socket paths must stay under 108 bytes.
        id, vm, ramFile: sp.ramFile, dir: `${this.layout.runDir}/t/${randomBytes(4).toString('hex')}`, diskBytes: await virtualSize(qmp, frozenNode),
      });
    } catch (err) {
      this.backgroundFailed(`its receiver did not start: ${errorMessage(err)}`);
      await rm(sp.ramFile, { force: true });
      return undefined;
    }
    let stopListening = (): void => undefined;
    const timer = new AbortController();
    try {
      try {
        await setMigrationCaps(qmp, { ignoreShared: false, background: true });
      } catch (err) {
        // QEMU refuses the capability when the kernel lacks shmem write-protect: for good.
        if (err instanceof QmpError) {
          this.backgroundSnapshots = false;
          log.warn(`background snapshots unavailable (${errorMessage(err)}): the RAM is copied while the headnode is paused`);
        } else {
          this.backgroundFailed(errorMessage(err));
        }
        await rm(sp.ramFile, { force: true });
        return undefined;
      }
      // The default bandwidth cap (128 MiB/s) would make the stream, not the host, the limit.
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 * 1024 * 1024 });
      const marks: Record<string, number> = {};
      const t0 = performance.now();
      const mark = (step: string): void => {
        marks[step] = Math.round(performance.now() - t0);
      };
      let failure: unknown;
      let resumedAt: number | undefined;
      let onResume = (): void => undefined;
      const resumed = new Promise<void>((resolve) => (onResume = resolve));
      stopListening = qmp.on('RESUME', () => {
        resumedAt ??= performance.now();
        onResume();
      });
      let streamed: Promise<void> | undefined;
      await qmp.execute('stop');
      mark('stop');
      try {
        await freeze(mark);
        streamed = waitMigration(qmp, `snapshot of '${h.name}'`, 300_000, qmp.execute('migrate', { uri: receiver.uri }));
        streamed.catch(() => undefined);
        // QEMU 7.2 resumes the VM once the devices are saved and RAM is write-protected; a
        // `cont` before that would let the guest run past the frozen disk.
        const first = await Promise.race([
          resumed.then(() => 'resumed'),
          streamed.then(() => 'done'),
          sleep(30_000, 'timeout', { signal: timer.signal }),
        ]);
        if (first === 'timeout') throw new DriverError('the background snapshot did not resume the headnode within 30 s');
      } catch (err) {
        failure = err;
      }
      const status = await qmp.execute<{ running: boolean }>('query-status').catch(() => ({ running: false }));
      if (!status.running) {
        // Whatever failed, the headnode runs again.
        if (failure !== undefined) await qmp.execute('migrate_cancel').catch(() => undefined);
        try {
          await qmp.execute('cont');
        } catch (err) {
          failure ??= new DriverError(`headnode '${h.name}' could not be resumed: ${errorMessage(err)}`, { cause: err });
        }
      }
      const pauseMs = Math.round(((resumedAt ?? performance.now()) - t0) * 10) / 10;
      marks.resumed = Math.round(pauseMs);
      if (failure === undefined) {
        try {
          await streamed;
          mark('streamed');
          await receiver.finish(`snapshot of '${h.name}'`, sp.state);
          mark('state');
        } catch (err) {
          failure = err;
        }
      }
      if (failure === undefined) this.backgroundFailures = 0;
      else this.backgroundFailed(errorMessage(failure));
      return { pauseMs, failure, marks };
    } finally {
      timer.abort();
      stopListening();
      await setMigrationCaps(qmp, { ignoreShared: true }).catch(() => undefined);
      await receiver.close();
    }
  }

  /** Background snapshots that keep failing for another reason: copy from then on. */
  private backgroundFailed(why: string): void {
    this.backgroundFailures++;
    log.warn(`background snapshot failed (${this.backgroundFailures} in a row): ${why}`);
    if (this.backgroundFailures >= 3) {
      this.backgroundSnapshots = false;
      log.warn('background snapshots turned off after 3 failures in a row: the RAM is copied while the headnode is paused');
    }
  }

  /**
   * Before pausing anything: is there room on the RAM folder's filesystem for the snapshot's
   * RAM (at most the headnode's RAM size)? A full tmpfs found mid-snapshot would kill the
   * receiver with SIGBUS; this says what is missing instead.
   */
  private async checkRamSpace(h: LiveHeadnode): Promise<void> {
    const fs = await statfs(this.layout.ramSnapshotsDir);
    const free = fs.bavail * fs.bsize;
    const ram = h.config.memMiB * MiB;
    const st = await stat(h.paths.ramFile).catch(() => undefined);
    const allocated = st ? Math.min(st.blocks * 512, ram) : ram;
    // Copy: the headnode's pages in use. Background: the receiver fills a whole RAM file
    // before holes are punched back, and QEMU first faults in the headnode's own file (on the
    // same tmpfs, where running out would kill the headnode, not just the snapshot).
    const background = this.backgroundSnapshots ?? backgroundSnapshotExpected();
    const need = background ? ram + (ram - allocated) : allocated;
    if (free < need) {
      throw new DriverError(
        `No space left for the snapshot's RAM in ${this.layout.ramSnapshotsDir}: ${Math.ceil(need / MiB)} MiB needed, ${Math.floor(free / MiB)} MiB free`,
      );
    }
  }

  /**
   * Punch holes where a snapshot RAM file is all zeros (a receiver writes every page, zero or
   * not). Safe while clones map it: the contents do not change. In the background, after the
   * snapshot is usable; a failure only costs memory.
   */
  private digHoles(file: string): void {
    const run = new Promise<void>((resolve) => {
      const child = spawn('fallocate', ['--dig-holes', '--', file], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', (e) => {
        log.warn(`fallocate --dig-holes ${file}: ${e.message}`);
        resolve();
      });
      child.on('close', (code) => {
        if (code !== 0 && !/No such file/.test(err)) log.warn(`fallocate --dig-holes ${file}: ${err.trim() || `status ${code}`}`);
        resolve();
      });
    });
    this.housekeeping.add(run);
    void run.finally(() => this.housekeeping.delete(run));
  }

  async releaseSnapshot(snapshotId: string): Promise<void> {
    assertId('snapshot', snapshotId);
    await this.removeSnapshotFiles(snapshotId);
  }

  async listSnapshots(): Promise<string[]> {
    const out: string[] = [];
    for (const id of await readdirSafe(this.layout.snapshotsDir)) {
      try {
        await stat(this.layout.snapshot(id).meta);
        out.push(id);
      } catch {
        // no meta.json: unfinished, not a snapshot
      }
    }
    return out.sort();
  }

  /** Snapshot metadata, or NotFoundError. */
  async snapshotInfo(snapshotId: string): Promise<SnapshotInfo & { owner: string; group: string }> {
    const m = await this.readMeta(snapshotId);
    return {
      id: m.id, headnode: m.headnode, createdAt: m.createdAt, pauseMs: m.pauseMs, memMiB: m.vm.memMiB, vcpus: m.vm.vcpus,
      maxVcpus: m.vm.maxVcpus ?? m.vm.vcpus, owner: m.owner, group: m.group,
    };
  }

  /** A hot-plugged cluster NIC (nic1) in the headnode, which a clone must have too. */
  private async pluggedClusterNic(h: LiveHeadnode): Promise<ClusterNic | undefined> {
    if (h.config.clusterNic !== undefined) return h.config.clusterNic;
    const devices = (await h.vm.qmp.execute('qom-list', { path: '/machine/peripheral' })) as Array<{ name: string }>;
    if (!devices.some((d) => d.name === 'nic1')) return undefined;
    const nic = this.opts.clusterNicOf?.(h.name);
    if (!nic) throw new DriverError(`headnode '${h.name}' has a cluster NIC gcd does not know of; restart the headnode`);
    return nic;
  }

  /** A snapshot's metadata (NotFoundError when there is none). */
  snapshotMeta(snapshotId: string): Promise<SnapshotMeta> {
    return this.readMeta(snapshotId);
  }

  private async readMeta(snapshotId: string): Promise<SnapshotMeta> {
    const sp = this.layout.snapshot(snapshotId);
    try {
      return JSON.parse(await readFile(sp.meta, 'utf8')) as SnapshotMeta;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`no snapshot '${snapshotId}'`);
      throw new DriverError(`snapshot '${snapshotId}' metadata unreadable: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async removeSnapshotFiles(id: string): Promise<void> {
    const sp = this.layout.snapshot(id);
    // meta.json first: from then on the snapshot no longer exists for listSnapshots and clone.
    await rm(sp.meta, { force: true });
    await rm(sp.ramFile, { force: true });
    await rm(sp.dir, { recursive: true, force: true });
  }

  /**
   * If the headnode's chain is longer than [active, base] (a stream was interrupted by a
   * stop or failed), stream now, before pausing: a snapshot's frozen layer must depend on
   * the base only.
   */
  private async shortenChain(h: LiveHeadnode): Promise<void> {
    const active = h.paths.disk(h.diskGen);
    const chain = await backingChain(active);
    if (chain.length <= 2) return;
    const baseIdx = chain.findIndex((c, i) => i > 0 && !c.filename.startsWith(h.paths.stateDir + '/'));
    if (baseIdx <= 1) return; // the rest of the chain is the (user's) base image itself
    const bottomFile = chain[baseIdx - 1]!.filename;
    const qmp = h.vm.qmp;
    const { node: top } = await activeNode(qmp);
    const bottom = await nodeForFile(qmp, bottomFile);
    log.info(`headnode ${h.name}: collapsing its disk chain (${chain.length} layers) before a snapshot`);
    await streamDown(qmp, top, bottom, `collapse-${h.diskGen}`);
    const after = await backingChain(active);
    if (after[1]?.filename.startsWith(h.paths.stateDir + '/')) {
      throw new DriverError(`headnode '${h.name}': could not shorten its disk chain (${after.length} layers)`);
    }
    await pruneGenerations(h.paths, h.diskGen);
  }

  private startStream(h: LiveHeadnode, top: string, bottom: string, frozenDisk: string): void {
    const qmp = h.vm.qmp;
    const active = h.paths.disk(h.diskGen);
    const run = (async () => {
      try {
        await streamDown(qmp, top, bottom, `stream-${h.diskGen}`);
        const backing = await backingOf(qmp, active);
        if (backing === frozenDisk) throw new DriverError('block-stream ended without removing the frozen layer');
        // The headnode no longer needs its name for the frozen layer; the snapshot keeps its link.
        await rm(frozenDisk, { force: true });
      } catch (err) {
        if (!qmp.isClosed) log.warn(`headnode ${h.name}: background block-stream failed: ${errorMessage(err)}`);
      }
    })();
    const tracked = run.finally(() => {
      if (this.streams.get(h.name) === tracked) this.streams.delete(h.name);
    });
    this.streams.set(h.name, tracked);
  }

  // ---------------------------------------------------------------- clones

  async clone(opts: QemuCloneOptions): Promise<CloneHandle> {
    assertId('clone', opts.cloneId);
    if (this.closed) throw new StateError('the driver is closed');
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$/.test(opts.hostname)) throw new UsageError(`invalid hostname '${opts.hostname}'`);
    const meta = await this.readMeta(opts.snapshotId);
    const sp = this.layout.snapshot(opts.snapshotId);
    // QEMU would silently create a missing RAM file (zeroed memory): check all three first.
    for (const f of [sp.ramFile, sp.state, sp.disk]) {
      await stat(f).catch(() => {
        throw new NotFoundError(`snapshot '${opts.snapshotId}' is incomplete: ${f} is missing`);
      });
    }
    const cp = this.layout.clone(opts.cloneId);
    return this.cloneLock.run(opts.cloneId, async () => {
      await mkdir(this.layout.clonesDir, { recursive: true });
      try {
        await mkdir(cp.stateDir, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new StateError(`clone '${opts.cloneId}' already exists`);
        throw err;
      }
      const handle: CloneHandle = { cloneId: opts.cloneId, snapshotId: opts.snapshotId, headnode: meta.headnode };
      const t0 = performance.now();
      const marks: CloneTimings = {};
      const mark = (what: keyof CloneTimings): void => {
        marks[what] = Math.round((performance.now() - t0) * 10) / 10;
      };
      try {
        await mkdir(cp.dir, { recursive: true, mode: 0o700 });
        const rec: CloneRecord = { ...handle, createdAt: Date.now() };
        await writeJsonAtomic(cp.record, rec);
        await createOverlay(cp.disk, sp.disk);
        const apiSocket = await this.opts.channels.open({
          vmId: opts.cloneId, kind: 'clone', headnode: meta.headnode, owner: meta.owner, group: meta.group,
        });
        const cfg: VmConfig = {
          ...meta.vm,
          vmId: opts.cloneId,
          ramFile: sp.ramFile,
          ramShare: false, // MAP_PRIVATE: the frozen file is never written
          disk: cp.disk,
          qmpSocket: cp.qmp,
          qgaSocket: cp.qga,
          consoleSocket: cp.console,
          consoleLog: cp.consoleLog,
          apiSocket,
          incoming: true,
        };
        const tb = this.opts.cloneTcgTbMiB ?? 64;
        if (cfg.accel === 'tcg') {
          if (tb > 0) cfg.tcgTbMiB = tb;
          else delete cfg.tcgTbMiB;
        }
        if (cfg.clusterNic) cfg.clusterNic = opts.clusterNic ?? { kind: 'isolated', mac: cfg.clusterNic.mac };
        mark('overlay');
        const vm = await VmProcess.spawn({
          vmId: opts.cloneId, args: buildVmArgs(cfg), lifetime: this.cloneLifetime,
          qmpSocket: cp.qmp, logFile: cp.qemuLog, pidFile: cp.pidFile,
        });
        // Connect while the state loads; the catch keeps an early failure from being "unhandled".
        const agentP = AgentClient.connect(cp.qga, { deadline: Date.now() + 10_000, isAlive: () => vm.isAlive() });
        agentP.catch(() => undefined);
        let agent: AgentClient | undefined;
        try {
          mark('qmp');
          await enableIgnoreShared(vm.qmp);
          await loadDeviceState(vm.qmp, sp.state);
          if (opts.clusterLinkDown === true && cfg.clusterNic) await vm.qmp.execute('set_link', { name: 'nic1', up: false });
          const vcpus = await resizeVcpus(vm.qmp, meta.vm.vcpus, meta.vm.maxVcpus ?? meta.vm.vcpus, this.vcpusFor(meta, opts.ncpus));
          mark('restored');
          await vm.qmp.execute('cont');
          mark('running');
          agent = await agentP;
          const live: LiveClone = { handle, paths: cp, vm, agent, execs: 0, destroyed: false, timings: marks };
          this.clones.set(opts.cloneId, live);
          const readyBy = Date.now() + this.cloneReadyTimeoutMs;
          await agent.waitReady(readyBy);
          mark('agent');
          try {
            // A guest that ignores CPU hotplug (an image without ACPI hotplug) must not hold a job for minutes.
            await vcpus.settled(Math.min(readyBy, Date.now() + 30_000));
          } catch (err) {
            // Fewer vCPUs is a courtesy to the host; more is what the job asked for.
            if (vcpus.added) throw err;
            log.warn(`clone ${opts.cloneId}: keeps ${meta.vm.vcpus} vCPUs: ${errorMessage(err)}`);
          }
          const init = opts.init ?? 'first-exec';
          if (init === 'clone-init') await this.cloneInit(agent, opts.hostname, Math.max(10_000, readyBy - Date.now()));
          else if (init === 'first-exec') live.pendingInit = opts.hostname;
          mark('ready');
          log.debug(`clone ${opts.cloneId} ready`, { at: marks });
        } catch (err) {
          agentP.then((a) => a.destroy(), () => undefined);
          if (!this.clones.has(opts.cloneId)) {
            await vm.kill();
          }
          throw err;
        }
        return handle;
      } catch (err) {
        await this.destroyNow(opts.cloneId);
        throw err instanceof CopperError ? err : new DriverError(`clone '${opts.cloneId}' failed: ${errorMessage(err)}`, { cause: err });
      }
    });
  }

  /**
   * How many vCPUs a clone gets: what was asked, or the snapshot's. A snapshot from before
   * vCPU slots (no maxVcpus in its meta) cannot grow: a job queued then asking for more gets
   * what it can have rather than failing.
   */
  private vcpusFor(meta: SnapshotMeta, ncpus: number | undefined): number {
    if (ncpus === undefined) return meta.vm.vcpus;
    if (meta.vm.maxVcpus === undefined && ncpus > meta.vm.vcpus) {
      log.warn(`snapshot ${meta.id} has no free vCPU slots: a clone gets ${meta.vm.vcpus} vCPUs, not ${ncpus}`);
      return meta.vm.vcpus;
    }
    return ncpus;
  }

  /** Give the clone its own identity before anything runs in it. */
  private async cloneInit(agent: AgentClient, hostname: string, timeoutMs: number): Promise<void> {
    const id = identity(hostname);
    const st = await agent.run(GUEST_CLONE_INIT, id.args, { input: id.seed, timeoutMs });
    if (st.exitCode !== 0) {
      throw new DriverError(`clone-init failed (${st.signal ? `signal ${st.signal}` : `status ${st.exitCode}`}): ${guestText(st.err?.toString() ?? '')}`);
    }
  }

  async exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand> {
    const c = this.liveClone(clone.cloneId);
    if (spec.argv.length === 0 && spec.script === undefined) throw new UsageError('nothing to run: empty argv and no script');
    const key = `${clone.cloneId}.${++c.execs}`;
    const files = `/run/copper/${key}`; // run-job's ${files}.stdout, .stderr, .pgid, .exit
    const join = spec.stdoutFile === spec.stderrFile;
    const args = ['--job', key, '--cwd', spec.cwd, '--user', spec.user];
    if (join) args.push('--join');
    if (spec.script !== undefined) {
      // Not under /run/copper (mode 0700): a non-root job user must be able to read it.
      const scriptPath = `/tmp/.copper-job-${key}.sh`;
      await writeGuestFile(c.agent, scriptPath, Buffer.from(spec.script));
      args.push('--script', scriptPath, '--', ...(spec.scriptArgs ?? []));
    } else {
      args.push('--', ...spec.argv);
    }
    // A fresh clone takes its identity in the same guest exec (run-job --init runs clone-init).
    const init = c.pendingInit !== undefined ? identity(c.pendingInit) : undefined;
    if (init) args.unshift('--init', ...init.args);
    const pid = await c.agent.exec(GUEST_RUN_JOB, args, spec.env, init?.seed ?? null, true);
    // Only once the guest took the exec: a refused one leaves the identity for the next.
    // (Two exec() calls at once on a fresh clone are not ordered: the second may start first.)
    if (init) c.pendingInit = undefined;

    const started = performance.now();
    let finished = false;
    const polled = (async (): Promise<ExecResult> => {
      let wait = 20;
      for (;;) {
        if (c.destroyed) throw new DriverError(`clone '${clone.cloneId}' was destroyed while the command ran`);
        const st = await c.agent.execStatus(pid);
        if (st.exited) {
          finished = true;
          // run-job's own stderr (not the job's: that goes to files) says so; a job's 125 does not.
          const own = st.err?.toString() ?? '';
          if (init && st.exitCode === RUN_JOB_INIT_FAILED && own.startsWith('run-job: clone-init failed')) {
            throw new DriverError(guestText(own.replace(/^run-job: /, '')));
          }
          await copyFromGuest(c.agent, `${files}.stdout`, spec.stdoutFile, { missingOk: true });
          if (!join) await copyFromGuest(c.agent, `${files}.stderr`, spec.stderrFile, { missingOk: true });
          // run-job's own complaints (misuse, exit 2) are on its stderr, not in the job's files.
          if (st.err && st.err.length) {
            await appendFile(spec.stderrFile, st.err);
          }
          return { exitCode: st.signal !== null ? null : st.exitCode, signal: st.signal };
        }
        // Each poll is a guest-agent round trip (~15 ms of guest CPU under TCG, taken from the
        // job): every 100 ms at most while a short job may be ending, every second later on.
        await sleep(wait);
        wait = Math.min(wait * 1.5, performance.now() - started < 5000 ? 100 : 1000);
      }
    })();
    const done = polled.catch((err: unknown) => {
      throw err instanceof CopperError ? err : new DriverError(`command in clone '${clone.cloneId}': ${errorMessage(err)}`, { cause: err });
    });
    done.catch(() => undefined); // the caller may never await it (clone destroyed)

    const kill = async (signal: KillSignal): Promise<void> => {
      // Signal the job's process group, which run-job writes to ID.pgid once the command runs.
      // Until then (the clone may still be taking its identity) wait for it rather than signal
      // run-job, whose shell may be in a command substitution; if it never comes (run-job
      // stuck), signal run-job itself after 30 s. Never guest-exec-status here: the poller
      // above must be the one to see the exit.
      const deadline = Date.now() + 30_000;
      let target: string | undefined;
      for (;;) {
        const pgid = (await readGuestFile(c.agent, `${files}.pgid`))?.toString().trim();
        if (pgid && /^\d+$/.test(pgid)) {
          target = `-${pgid}`;
          break;
        }
        if (finished || c.destroyed) return;
        if (Date.now() > deadline) {
          target = String(pid);
          break;
        }
        await sleep(100);
      }
      const st = await c.agent.run('/bin/kill', ['-s', signal, '--', target], { timeoutMs: 10_000 });
      log.debug(`clone ${clone.cloneId}: kill -s ${signal} -- ${target}: ${st.exitCode ?? `signal ${st.signal}`} ${guestText(st.err?.toString() ?? '')}`);
    };
    return { done, kill };
  }

  /** Run fn with a running clone under its lock (NotFoundError when it does not run here). */
  async withClone<T>(cloneId: string, fn: (c: LiveCloneAccess) => Promise<T>): Promise<T> {
    assertId('clone', cloneId);
    return this.cloneLock.run(cloneId, async () => fn(this.liveClone(cloneId)));
  }

  /**
   * After a gcd restart: take back a detached clone whose QEMU still runs (QMP, guest agent,
   * API channel). Undefined when it cannot be driven; the caller then destroys it.
   */
  async reattachClone(cloneId: string): Promise<CloneHandle | undefined> {
    assertId('clone', cloneId);
    return this.cloneLock.run(cloneId, async () => {
      const known = this.clones.get(cloneId);
      if (known) return known.handle;
      const cp = this.layout.clone(cloneId);
      let rec: CloneRecord;
      let meta: SnapshotMeta;
      try {
        rec = JSON.parse(await readFile(cp.record, 'utf8')) as CloneRecord;
        meta = await this.readMeta(rec.snapshotId);
      } catch (err) {
        log.warn(`clone ${cloneId}: not reattached: ${errorMessage(err)}`);
        return undefined;
      }
      const found = await VmProcess.reattach(cloneId, cp.pidFile, cp.qmp);
      if (!found.ok) {
        log.warn(`clone ${cloneId}: not reattached: ${found.reason}`);
        return undefined;
      }
      const vm = found.vm;
      let agent: AgentClient | undefined;
      try {
        agent = await AgentClient.connect(cp.qga, { deadline: Date.now() + 5000, isAlive: () => vm.isAlive() });
        await agent.waitReady(Date.now() + 15_000);
        await this.opts.channels.open({ vmId: cloneId, kind: 'clone', headnode: meta.headnode, owner: meta.owner, group: meta.group });
      } catch (err) {
        agent?.destroy();
        vm.qmp.destroy();
        log.warn(`clone ${cloneId}: not reattached: ${errorMessage(err)}`);
        return undefined;
      }
      const handle: CloneHandle = { cloneId, snapshotId: rec.snapshotId, headnode: rec.headnode };
      this.clones.set(cloneId, { handle, paths: cp, vm, agent, execs: 0, destroyed: false, timings: {} });
      return handle;
    });
  }

  /**
   * Let go of every clone without killing it: for detached clones, which outlive gcd like
   * headnodes do (close() destroys them instead).
   */
  async detach(): Promise<void> {
    this.closed = true;
    for (const [id, c] of [...this.clones]) {
      await this.cloneLock.run(id, async () => {
        c.agent.destroy();
        c.vm.qmp.destroy();
        this.clones.delete(id);
      });
    }
    await Promise.allSettled([...this.streams.values()]);
  }

  async destroy(cloneId: string): Promise<void> {
    assertId('clone', cloneId);
    await this.cloneLock.run(cloneId, () => this.destroyNow(cloneId));
  }

  /** Kill the clone's QEMU and delete all its files; idempotent. Caller holds the clone lock. */
  private async destroyNow(cloneId: string): Promise<void> {
    const cp = this.layout.clone(cloneId);
    const c = this.clones.get(cloneId);
    if (c) {
      c.destroyed = true;
      c.agent.destroy();
      await c.vm.kill('SIGKILL');
      this.clones.delete(cloneId);
    } else {
      await killByPidFile(cp.pidFile, cloneId);
    }
    await this.opts.channels.close(cloneId).catch((err: unknown) => log.warn(`closing channel of clone ${cloneId}: ${errorMessage(err)}`));
    await rm(cp.dir, { recursive: true, force: true });
    await rm(cp.stateDir, { recursive: true, force: true });
  }

  /** CPU time and peak RSS of the clone's QEMU process (PBS resources_used.cput / mem). */
  async usage(cloneId: string): Promise<CloneUsage | undefined> {
    const c = this.clones.get(cloneId);
    if (!c) return undefined;
    return processUsage(c.vm.pid);
  }

  /** See stage-out.ts: the clone's files changed since it started go into its headnode. */
  async stageOut(clone: CloneHandle, req: StageOutRequest): Promise<StageOutResult> {
    const c = this.liveClone(clone.cloneId);
    const rec = JSON.parse(await readFile(c.paths.record, 'utf8')) as CloneRecord;
    const meta = await this.readMeta(clone.snapshotId);
    const headnode = (): Promise<AgentClient> => this.opts.headnodes.withRunning(req.headnode, async (h) => h.agent);
    return stageOutJob({ clone: c.agent, headnode, cloneStartMs: rec.createdAt, snapshotAtMs: meta.createdAt }, req);
  }

  async deliverFile(headnode: string, guestPath: string, hostFile: string, owner: string): Promise<void> {
    if (!guestPath.startsWith('/') || guestPath.includes('\0')) throw new UsageError(`guest path must be absolute: '${guestPath}'`);
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(owner)) throw new UsageError(`invalid owner '${owner}'`);
    await stat(hostFile).catch(() => {
      throw new NotFoundError(`no such file on the host: ${hostFile}`);
    });
    // Take the agent under the lock, copy outside it: a big file must not hold up snapshots.
    const agent = await this.opts.headnodes.withRunning(headnode, async (h) => h.agent);
    const tmp = `${guestPath}.copper-${randomBytes(4).toString('hex')}`;
    try {
      await copyToGuest(agent, hostFile, tmp);
      // chown before the rename: the file appears under its name with its final owner.
      const st = await agent.run('/bin/sh', ['-c', 'chown -- "$1:" "$2" && chmod 644 -- "$2" && mv -f -- "$2" "$3"', 'sh', owner, tmp, guestPath], { timeoutMs: 30_000 });
      if (st.exitCode !== 0) {
        throw new DriverError(`delivering ${guestPath} to ${headnode}: ${st.err?.toString().trim() || `status ${st.exitCode}`}`);
      }
    } catch (err) {
      await agent.run('/bin/rm', ['-f', '--', tmp], { timeoutMs: 10_000 }).catch(() => undefined);
      throw err instanceof CopperError ? err : new DriverError(`delivering ${guestPath} to ${headnode}: ${errorMessage(err)}`, { cause: err });
    }
  }

  async sweep(keep: ReadonlySet<string>): Promise<string[]> {
    const ids = new Set<string>([...this.clones.keys()]);
    for (const id of await readdirSafe(this.layout.clonesDir)) ids.add(id);
    for (const id of await readdirSafe(`${this.layout.runDir}/c`)) ids.add(id);
    const swept: string[] = [];
    for (const id of [...ids].sort()) {
      if (keep.has(id)) continue;
      try {
        assertId('clone', id);
      } catch {
        continue; // not a name we create
      }
      await this.destroy(id);
      swept.push(id);
    }
    // Snapshot RAM files whose snapshot folder is gone (a crash between the two deletions).
    for (const f of await readdirSafe(this.layout.ramSnapshotsDir)) {
      const id = f.replace(/\.ram$/, '');
      if (!f.endsWith('.ram') || this.inProgress.has(id)) continue;
      try {
        await stat(this.layout.snapshot(id).dir);
      } catch {
        await rm(`${this.layout.ramSnapshotsDir}/${f}`, { force: true });
      }
    }
    // Receivers' folders (their QEMU died with the gcd that started them).
    for (const id of await readdirSafe(`${this.layout.runDir}/t`)) {
      if (!this.inProgress.has(id)) await rm(`${this.layout.runDir}/t/${id}`, { recursive: true, force: true });
    }
    // Half-written snapshots (no meta.json) left by a crash in the middle of snapshot().
    for (const id of await readdirSafe(this.layout.snapshotsDir)) {
      if (this.inProgress.has(id)) continue;
      try {
        await stat(this.layout.snapshot(id).meta);
      } catch {
        await this.removeSnapshotFiles(id).catch(() => undefined);
      }
    }
    return swept;
  }

  /** Destroys every clone this driver runs. Headnodes are the manager's. */
  async close(): Promise<void> {
    this.closed = true;
    for (const id of [...this.clones.keys()]) await this.destroy(id);
    await Promise.allSettled([...this.streams.values(), ...this.housekeeping]);
  }

  /** The running clone's QEMU pid (for tests and diagnostics). */
  clonePid(cloneId: string): number | undefined {
    return this.clones.get(cloneId)?.vm.pid;
  }

  /** How long each step of the clone's start took. */
  cloneTimings(cloneId: string): Readonly<CloneTimings> | undefined {
    return this.clones.get(cloneId)?.timings;
  }

  private liveClone(cloneId: string): LiveClone {
    const c = this.clones.get(cloneId);
    if (!c || c.destroyed) throw new NotFoundError(`no running clone '${cloneId}'`);
    return c;
  }
}

const MiB = 1024 * 1024;

/** Text from a guest, fit for a job comment or a log line: one line, printable, bounded. */
function guestText(s: string, max = 400): string {
  const one = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max)}…` : one;
}

/** run-job's status when clone-init failed (--init) and the command never ran. */
const RUN_JOB_INIT_FAILED = 125;

/** clone-init's arguments (hostname, fresh machine-id, the host's clock) and its seed line. */
function identity(hostname: string): { args: string[]; seed: Buffer } {
  const machineId = randomBytes(16).toString('hex');
  const epoch = (Date.now() / 1000).toFixed(3);
  // The seed goes in as one line on stdin, not as an argument other guest processes could read.
  return { args: [hostname, machineId, epoch], seed: Buffer.from(randomBytes(32).toString('hex') + '\n') };
}

function frozenVm(cfg: VmConfig): FrozenVm {
  const f: FrozenVm = { accel: cfg.accel, memMiB: cfg.memMiB, vcpus: cfg.vcpus };
  if (cfg.maxVcpus !== undefined && cfg.maxVcpus > cfg.vcpus) f.maxVcpus = cfg.maxVcpus;
  if (cfg.machine !== undefined) f.machine = cfg.machine;
  if (cfg.cpu !== undefined) f.cpu = cfg.cpu;
  if (cfg.kernel !== undefined) f.kernel = cfg.kernel;
  if (cfg.initrd !== undefined) f.initrd = cfg.initrd;
  if (cfg.append !== undefined) f.append = cfg.append;
  if (cfg.tcgTbMiB !== undefined) f.tcgTbMiB = cfg.tcgTbMiB;
  if (cfg.sharedSftp !== undefined) f.sharedSftp = { dir: cfg.sharedSftp.dir };
  return f;
}

/** cp --sparse=always: on tmpfs only the guest's touched pages are copied. */
function copySparse(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('cp', ['--sparse=always', '--', from, to], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new DriverError(`copying guest RAM failed: ${err.trim() || `cp status ${code}`}`))));
  });
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Kill a clone QEMU that is not (or no longer) ours, e.g. after a gcd restart. */
async function killByPidFile(pidFile: string, vmId: string): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || !pidAlive(pid, vmId)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 100 && pidAlive(pid, vmId); i++) await sleep(50);
}
