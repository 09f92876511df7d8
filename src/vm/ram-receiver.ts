/**
 * A receiver: a QEMU that never runs a vCPU, only takes in a migration stream so that a
 * snapshot's RAM lands in the snapshot's own shared RAM file, then writes the device state
 * the way a headnode snapshot does (x-ignore-shared). Used where the source's RAM cannot be
 * copied as a file at the right instant:
 *   - a headnode snapshotted with background-snapshot (RAM streamed while the headnode runs);
 *   - a cluster clone (its RAM is a private copy-on-write mapping no other process can read).
 * It has the source's machine and devices (the stream must match), a blank disk and no
 * network peer; it is killed as soon as the state is saved.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError } from '../errors.js';
import { enableIgnoreShared, saveDeviceState, setMigrationCaps, shellQuote, waitMigration } from './migration.js';
import type { QmpClient } from './qmp.js';
import { createBlank } from './qemu-img.js';
import { buildVmArgs, type VmConfig } from './vm-args.js';
import { VmProcess } from './vm-process.js';
import { giveReceiverDir } from './vm-files.js';

/** The machine layout a receiver needs; the same as a snapshot's FrozenVm. */
export type ReceiverVm = Omit<
  VmConfig,
  'vmId' | 'ramFile' | 'ramShare' | 'disk' | 'qmpSocket' | 'qgaSocket' | 'consoleSocket' | 'consoleLog' | 'apiSocket' | 'incoming' | 'pidFile'
>;

export interface ReceiverOptions {
  /** Unique per receiver; names its folder and QEMU. */
  id: string;
  vm: ReceiverVm;
  /** The snapshot's new RAM file (created by QEMU, share=on: what it receives is written there). */
  ramFile: string;
  /** A private folder for its sockets, disk and log; removed by close(). */
  dir: string;
  /** Virtual size of the source's disk: the receiver's blank disk must match it. */
  diskBytes: number;
}

/** Streams over a Unix socket; a whole guest RAM through TCG hosts: be generous. */
const RECEIVE_TIMEOUT_MS = 300_000;

export class RamReceiver {
  private constructor(
    private readonly vm: VmProcess,
    private readonly dir: string,
    /** Where the source sends its stream (`migrate uri=...`). */
    readonly uri: string,
  ) {}

  get qmp(): QmpClient {
    return this.vm.qmp;
  }

  /**
   * Start the receiver and make it listen on a Unix socket in `dir`; `source` (optional) is a
   * ready stream instead, e.g. `exec:cat FILE`.
   */
  static async start(opts: ReceiverOptions, source?: string): Promise<RamReceiver> {
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    const disk = join(opts.dir, 'blank.qcow2');
    let vm: VmProcess | undefined;
    try {
      await createBlank(disk, opts.diskBytes);
      // It runs as its source VM's uid (vm-uid.ts): its folder (sockets), disk and the RAM file are that uid's.
      await giveReceiverDir(opts.dir, disk, opts.ramFile, opts.vm.uid);
      const cfg: VmConfig = {
        ...opts.vm,
        vmId: `recv.${opts.id}`,
        ramFile: opts.ramFile,
        ramShare: true,
        disk,
        qmpSocket: join(opts.dir, 'qmp.sock'),
        qgaSocket: join(opts.dir, 'qga.sock'),
        consoleSocket: join(opts.dir, 'console.sock'),
        apiSocket: join(opts.dir, 'api.sock'), // never runs: nothing connects
        incoming: true,
      };
      // Not on the source's L2: a receiver must never say anything under its MAC.
      if (cfg.clusterNic) cfg.clusterNic = { kind: 'isolated', mac: cfg.clusterNic.mac };
      delete cfg.ramPrealloc; // the stream fills it; preallocating would only cost time
      vm = await VmProcess.spawn({
        vmId: cfg.vmId,
        args: buildVmArgs(cfg),
        lifetime: 'job',
        uid: cfg.uid,
        qmpSocket: cfg.qmpSocket,
        logFile: join(opts.dir, 'qemu.log'),
        pidFile: join(opts.dir, 'qemu.pid'),
      });
      await setMigrationCaps(vm.qmp, { ignoreShared: false });
      const uri = source ?? `unix:${join(opts.dir, 'mig.sock')}`;
      await vm.qmp.execute('migrate-incoming', { uri });
      return new RamReceiver(vm, opts.dir, uri);
    } catch (err) {
      await vm?.kill('SIGKILL');
      await rm(opts.dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Wait until the whole stream is in (the RAM file now holds the source's RAM at the instant
   * it was stopped), then write the device state to `stateFile`.
   */
  async finish(what: string, stateFile: string): Promise<void> {
    await waitMigration(this.vm.qmp, `${what}: receiving`, RECEIVE_TIMEOUT_MS);
    const st = await this.vm.qmp.execute<{ status: string }>('query-status');
    // The source was paused when its devices were saved, so the receiver stays paused.
    if (st.status === 'running') throw new DriverError(`${what}: the receiver started running`);
    await enableIgnoreShared(this.vm.qmp);
    await saveDeviceState(this.vm.qmp, stateFile);
  }

  /** Kill it and delete its folder; idempotent. */
  async close(): Promise<void> {
    await this.vm.kill('SIGKILL');
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** `exec:cat FILE` as a migration source for RamReceiver.start. */
export function fileSource(file: string): string {
  return `exec:cat ${shellQuote(file)}`;
}
