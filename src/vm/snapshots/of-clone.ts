/**
 * Snapshot a running cluster clone, so that it can be forked in turn (a deeper generation).
 *
 * A headnode's RAM is a shared file (share=on) that a snapshot copies; a clone's RAM is a
 * private copy-on-write mapping of its snapshot's frozen file, which nothing outside its QEMU
 * can read. So the clone's whole state, RAM included, goes through a migration:
 *
 *   clone:    its active disk file gets a second name in the snapshot folder, and a new qcow2
 *             layer is made on that name (so every backing path on disk points into a snapshot
 *             folder, never into a clone's folder, which dies with the clone); stop;
 *             blockdev-snapshot (the clone goes on on the new layer, the old one is frozen);
 *             migrate with x-ignore-shared off (RAM is sent) to a file on tmpfs; cont.
 *   receiver: a paused QEMU with the same machine and a new shared RAM file (the snapshot's
 *             frozen RAM) loads that stream, then saves its device state with x-ignore-shared,
 *             exactly as a headnode snapshot does; it is killed and never runs (RamReceiver).
 *
 * The result is an ordinary snapshot folder (meta.json, disk.qcow2, state.bin + RAM file) that
 * Clones.start() forks like a headnode's. meta.json is written as soon as the disk layer is
 * frozen, because the clone's disk depends on it from then on: if the receiver step fails the
 * snapshot stays as a disk layer only (no state.bin), which the registry keeps while the clone
 * lives.
 */
import { execFile } from 'node:child_process';
import { link, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CopperError, DriverError, errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import type { LiveCloneAccess } from '../clones/types.js';
import { activeNode, virtualSize } from '../disk-chain.js';
import { writeJsonAtomic } from '../json-file.js';
import { ensurePrivateDir } from '../private-dir.js';
import { giveFile, giveSnapshotFiles } from '../vm-files.js';
import { placeForVm, vmDirMode } from '../vm-uid.js';
import type { Layout } from '../layout.js';
import { setMigrationCaps, shellQuote, waitMigration, whilePaused } from '../migration.js';
import { fileSource, RamReceiver } from '../ram-receiver.js';
import type { SnapshotMeta } from './types.js';

const execFileP = promisify(execFile);

/** Lends a running clone under its lock (Clones). */
export interface CloneLender {
  withClone<T>(cloneId: string, fn: (c: LiveCloneAccess) => Promise<T>): Promise<T>;
}

export interface CloneSnapshot {
  id: string;
  /** How long the clone was paused. */
  pauseMs: number;
}

/** Migrating a whole guest RAM through a pipe: generous, TCG hosts are slow. */
const MIGRATION_TIMEOUT_MS = 180_000;

/** A disk layer name in the clone's folder that is not taken yet. */
async function nextLayer(dir: string): Promise<{ file: string; node: string }> {
  const taken = new Set(await readdir(dir));
  for (let k = 1; ; k++) {
    if (!taken.has(`layer-${k}.qcow2`)) return { file: join(dir, `layer-${k}.qcow2`), node: `layer${k}` };
  }
}

/** qemu-img create -u: the backing file is open read-write by QEMU, so it must not be opened. */
async function createOverlayUnsafe(path: string, backing: string, sizeBytes: number): Promise<void> {
  try {
    await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'qcow2', path, String(sizeBytes)]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new DriverError(`qemu-img create failed: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/**
 * Snapshot the running clone `vmId` (lent by `clones`) as snapshot `id`; `origin` is the metadata of
 * the snapshot it was started from (machine layout, owner). The clone runs on in every case.
 * Throws DriverError; when that happens after the disk layer froze, the folder stays with its
 * disk layer and meta.json but no state.bin: the caller keeps it while the clone lives (its
 * disk backs onto it) and never forks it.
 */
export async function snapshotClone(layout: Layout, clones: CloneLender, vmId: string, origin: SnapshotMeta, id: string): Promise<CloneSnapshot> {
  const sp = layout.snapshot(id);
  const fullState = join(layout.ramSnapshotsDir, `${id}.full`);
  await mkdir(sp.dir, { recursive: true, mode: 0o700 });
  await ensurePrivateDir(layout.ramSnapshotsDir, vmDirMode());
  // The clone's QEMU (its headnode's uid, vm-uid.ts) writes the state file and the next layer.
  const uid = origin.vm.uid;
  await giveSnapshotFiles(layout, sp, uid);
  await placeForVm(fullState, uid);
  let diskFrozen = false;
  let diskBytes = 0;
  try {
    const pauseMs = await clones.withClone(vmId, async (c) => {
      const qmp = c.vm.qmp;
      const { node: top, file: topFile } = await activeNode(qmp);
      diskBytes = await virtualSize(qmp, top);
      const next = await nextLayer(c.paths.stateDir);
      await link(topFile, sp.disk);
      let added = false;
      try {
        await createOverlayUnsafe(next.file, sp.disk, diskBytes);
        await giveFile(next.file, uid);
        await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': next.node, file: { driver: 'file', filename: next.file }, backing: null });
        added = true;
        await setMigrationCaps(qmp, { ignoreShared: false });
      } catch (err) {
        if (added) await qmp.execute('blockdev-del', { 'node-name': next.node }).catch(() => undefined);
        await rm(next.file, { force: true });
        throw err;
      }
      const { pauseMs: pause, failure } = await whilePaused(qmp, `clone ${vmId}`, async () => {
        await qmp.execute('blockdev-snapshot', { node: top, overlay: next.node });
        diskFrozen = true;
        await waitMigration(qmp, `saving clone ${vmId}`, MIGRATION_TIMEOUT_MS, qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(fullState)}` }));
      });
      if (!diskFrozen) {
        await qmp.execute('blockdev-del', { 'node-name': next.node }).catch(() => undefined);
        await rm(next.file, { force: true });
      } else {
        // From now on the clone's disk depends on this snapshot's disk layer.
        await writeMeta(sp.meta, origin, id, pause);
        await rm(topFile, { force: true }); // QEMU keeps it open; the snapshot has the other name
      }
      if (failure !== undefined)
        throw failure instanceof Error ? failure : new DriverError(`clone ${vmId}: snapshot failed: ${JSON.stringify(failure) ?? 'unknown'}`);
      return pause;
    });

    // The receiver loads the whole state into the snapshot's new shared RAM file.
    const receiver = await RamReceiver.start({ id, vm: origin.vm, ramFile: sp.ramFile, dir: join(layout.runDir, 't', id), diskBytes }, fileSource(fullState));
    try {
      await receiver.finish(`snapshot of clone ${vmId}`, sp.state);
    } finally {
      await receiver.close();
    }
    log.info(`snapshot ${id} of clone ${vmId}: paused ${pauseMs} ms`);
    return { id, pauseMs };
  } catch (err) {
    await rm(sp.ramFile, { force: true });
    if (diskFrozen) await rm(sp.state, { force: true });
    else await rm(sp.dir, { recursive: true, force: true });
    throw err instanceof CopperError ? err : new DriverError(`snapshot of clone ${vmId} failed: ${errorMessage(err)}`, { cause: err });
  } finally {
    await rm(fullState, { force: true });
  }
}

async function writeMeta(path: string, origin: SnapshotMeta, id: string, pauseMs: number): Promise<void> {
  const meta: SnapshotMeta = {
    version: 1,
    id,
    headnode: origin.headnode,
    owner: origin.owner,
    group: origin.group,
    createdAt: Date.now(),
    pauseMs,
    vm: origin.vm,
  };
  await writeJsonAtomic(path, meta);
}
