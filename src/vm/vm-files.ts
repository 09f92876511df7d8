/**
 * The files each kind of QEMU opens after it started, given to its uid before the spawn
 * (vm-uid.ts): a QEMU running as that uid can open these and nothing else of the state folder.
 * Folders on the way are root's 0711 (traversable, not listable); VM files are the uid's 0600;
 * folders QEMU makes files in (its sockets) are the uid's 0700.
 */
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ClonePaths, HeadnodePaths, Layout, SnapshotPaths } from './layout.js';
import type { VmConfig } from './vm-args.js';
import { giveToVm, openStateDir, placeForVm, traversable, vmUidsEnabled } from './vm-uid.js';

/** A headnode: its disk layers, console log, RAM file, socket folder and API socket. */
export async function giveHeadnodeFiles(layout: Layout, paths: HeadnodePaths, gen: number, cfg: VmConfig): Promise<void> {
  const uid = cfg.uid;
  if (uid === undefined || !vmUidsEnabled()) return;
  await openStateDir(layout.stateDir);
  await traversable(paths.stateDir);
  // Every layer still in the folder: the active one and, until a stream ends, the frozen one it backs onto.
  for (const f of await readdir(paths.stateDir)) {
    if (/^disk-\d+\.qcow2$/.test(f)) await giveToVm(join(paths.stateDir, f), uid);
  }
  await giveToVm(paths.disk(gen), uid);
  await placeForVm(paths.consoleLog, uid);
  await placeForVm(paths.ramFile, uid);
  await giveToVm(paths.dir, uid);
  await giveApiSocket(cfg);
}

/** A clone: its overlay, console log, socket folder and API socket; the snapshot it starts from is its uid's already. */
export async function giveCloneFiles(layout: Layout, cp: ClonePaths, cfg: VmConfig): Promise<void> {
  const uid = cfg.uid;
  if (uid === undefined || !vmUidsEnabled()) return;
  await openStateDir(layout.stateDir);
  await traversable(cp.stateDir);
  await giveToVm(cp.disk, uid);
  if (cfg.consoleLog !== undefined) await placeForVm(cfg.consoleLog, uid);
  await giveToVm(cp.dir, uid);
  await giveApiSocket(cfg);
}

/**
 * A snapshot folder about to be written by its VM's uid: the device state `cat` writes (and a
 * clone's `cat` reads), the RAM file (a receiver's QEMU writes it, clones map it), the disk layer.
 */
export async function giveSnapshotFiles(layout: Layout, sp: SnapshotPaths, uid: number | undefined): Promise<void> {
  if (uid === undefined || !vmUidsEnabled()) return;
  await openStateDir(layout.stateDir);
  await traversable(sp.dir);
  await placeForVm(sp.state, uid);
  await placeForVm(sp.ramFile, uid);
}

/** A file that exists already (a disk layer, a copied RAM file) given to the uid, if any. */
export async function giveFile(path: string, uid: number | undefined): Promise<void> {
  await giveToVm(path, uid);
}

/**
 * gcd's API socket of this VM: the VM's socat (a child of QEMU, same uid) connects to it.
 * Also after a gcd restart, when the channel of a VM that kept running is listened on again.
 */
export async function giveApiSocket(cfg: Pick<VmConfig, 'apiSocket' | 'uid'>): Promise<void> {
  if (cfg.uid === undefined || !vmUidsEnabled()) return;
  // A channel that does not listen (tests' stand-ins) has nothing to give.
  await traversable(dirname(cfg.apiSocket)).catch(ignoreMissing);
  await giveToVm(cfg.apiSocket, cfg.uid, 0o600).catch(ignoreMissing);
}

/**
 * A RamReceiver's private folder (sockets, migration socket), its blank disk and the RAM file
 * it fills: its uid's. The folder's parent (`run/t`) is made traversable by openStateDir.
 */
export async function giveReceiverDir(dir: string, disk: string, ramFile: string, uid: number | undefined): Promise<void> {
  if (uid === undefined || !vmUidsEnabled()) return;
  await traversable(dirname(dir));
  await giveToVm(dir, uid);
  await giveToVm(disk, uid);
  await placeForVm(ramFile, uid);
}

function ignoreMissing(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
}
