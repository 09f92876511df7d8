/**
 * Node side of snapshot transfer: a per-host cache of the snapshots this node runs clones of.
 * acquire() makes the snapshot's folder in this node's layout exactly as vm/snapshots leaves
 * one on the server (meta.json, disk.qcow2, state.bin, and the RAM file in the RAM folder),
 * so vm/clones starts clones of it unchanged:
 *   - the RAM file is copied once into tmpfs, sparse (only the guest's touched pages);
 *   - each disk layer is copied once into <cache>/blobs and the chain rebuilt locally
 *     (qemu-img rebase -u): a layer shared by snapshots (the image's base) is fetched once
 *     for all of them; the snapshot's disk.qcow2 is a hard link to its top layer;
 *   - the kernel and initrd likewise (meta.json points at the local copies);
 *   - meta.json last, so a half-fetched folder is never a snapshot.
 * Holders are counted: the last release removes the snapshot and every layer no other cached
 * snapshot uses. One cache per node state folder (gcd --node owns it); sweep() at start
 * removes everything a former run left.
 */
import { execFile } from 'node:child_process';
import { link, mkdir, open, readFile, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { CopperError, DriverError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { writeJsonAtomic } from '../vm/json-file.js';
import { KeyedLock } from '../vm/keyed-lock.js';
import { assertId, type Layout } from '../vm/layout.js';
import type { SnapshotMeta } from '../vm/snapshots/types.js';
import { CacheOwnership } from './cache-ownership.js';
import type { ExportDirectory } from './export-directory.js';
import { fetchExport, type NbdClientKey } from './nbd-fetch.js';
import type { ExportedFile, SnapshotExportInfo } from './snapshot-export-info.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;

export interface SnapshotCacheOptions {
  /** This node's layout (its GC_STATE_DIR and GC_RAM_DIR). */
  layout: Layout;
  directory: ExportDirectory;
  /** This node's NBD credentials. */
  key: NbdClientKey;
  /** Default <stateDir>/grid-cache. */
  cacheDir?: string;
}

/** What one fetch of a snapshot cost. */
export interface FetchStats {
  snapshotId: string;
  ms: number;
  /** Bytes copied over NBD (allocated in the copies: holes are not sent). */
  bytes: number;
  /** Of those, the RAM file's. */
  ramBytes: number;
  /** Files not fetched because another cached snapshot already brought them. */
  reusedFiles: number;
}

interface Entry {
  holders: Set<string>;
  /** Blob keys this snapshot uses. */
  blobs: string[];
}

export class SnapshotCache {
  private readonly lock = new KeyedLock();
  private readonly entries = new Map<string, Entry>();
  /** Blob key -> cached snapshots that use it. */
  private readonly blobUsers = new Map<string, Set<string>>();
  /** Shared files being fetched now, by key. */
  private readonly blobFetches = new Map<string, Promise<boolean>>();
  private readonly dir: string;
  private totalBytes = 0;
  private readonly fetchLog: FetchStats[] = [];
  /** Clones run as the snapshot's uid: its files are given to it (cache-ownership.ts). */
  private readonly owners = new CacheOwnership();

  constructor(private readonly o: SnapshotCacheOptions) {
    this.dir = o.cacheDir ?? join(o.layout.runDir, '..', 'grid-cache');
  }

  /**
   * The local folder of the snapshot, fetched if this node does not hold it yet; `holder`
   * (e.g. the clone id) keeps it until released. Concurrent calls for one snapshot fetch once.
   */
  acquire(snapshotId: string, holder: string): Promise<string> {
    assertId('snapshot', snapshotId);
    return this.lock.run(snapshotId, async () => {
      const have = this.entries.get(snapshotId);
      if (have) {
        have.holders.add(holder);
        return this.o.layout.snapshot(snapshotId).dir;
      }
      const blobs = await this.fetchLocked(snapshotId);
      this.entries.set(snapshotId, { holders: new Set([holder]), blobs });
      return this.o.layout.snapshot(snapshotId).dir;
    });
  }

  /** `holder` is done with the snapshot; the last one removes it from this node. Idempotent. */
  release(snapshotId: string, holder: string): Promise<void> {
    assertId('snapshot', snapshotId);
    return this.lock.run(snapshotId, async () => {
      const e = this.entries.get(snapshotId);
      if (!e || !e.holders.delete(holder) || e.holders.size > 0) return;
      this.entries.delete(snapshotId);
      await this.removeSnapshot(snapshotId, e.blobs);
    });
  }

  /** Snapshots held on this node now (the registry's cachedSnapshots). */
  cached(): string[] {
    return [...this.entries.keys()].sort();
  }

  /** Holders of a cached snapshot (diagnostics, tests). */
  holders(snapshotId: string): string[] {
    return [...(this.entries.get(snapshotId)?.holders ?? [])].sort();
  }

  /** Every fetch so far, and the total bytes moved. */
  stats(): { fetches: FetchStats[]; bytes: number } {
    return { fetches: [...this.fetchLog], bytes: this.totalBytes };
  }

  /** At node start (nothing held): remove every snapshot, layer and partial file a former run left. */
  async sweep(): Promise<void> {
    if (this.entries.size > 0) throw new DriverError('snapshot cache: sweep while snapshots are held');
    for (const id of await readdirSafe(join(this.dir, 'marks'))) {
      try {
        assertId('snapshot', id);
      } catch {
        continue;
      }
      await this.removeFolder(id);
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private get blobsDir(): string {
    return join(this.dir, 'blobs');
  }

  /** Fetch under the in-process lock and a lock file (another process on this state folder). */
  private async fetchLocked(snapshotId: string): Promise<string[]> {
    const lockFile = join(this.dir, 'locks', `${snapshotId}.lock`);
    await mkdir(join(this.dir, 'locks'), { recursive: true, mode: 0o700 });
    await takeLockFile(lockFile);
    try {
      return await this.fetch(snapshotId);
    } finally {
      await rm(lockFile, { force: true });
    }
  }

  private async fetch(snapshotId: string): Promise<string[]> {
    const t0 = performance.now();
    const info = await this.o.directory.lookup(snapshotId);
    const layout = this.o.layout;
    const sp = layout.snapshot(snapshotId);
    // The mark first: whatever happens next, sweep() knows this folder is the cache's.
    await mkdir(join(this.dir, 'marks'), { recursive: true, mode: 0o700 });
    await (await open(join(this.dir, 'marks', snapshotId), 'w', 0o600)).close();
    const stats: FetchStats = { snapshotId, ms: 0, bytes: 0, ramBytes: 0, reusedFiles: 0 };
    const blobs: string[] = [];
    try {
      await rm(sp.dir, { recursive: true, force: true });
      await mkdir(sp.dir, { recursive: true, mode: 0o700 });
      await mkdir(layout.ramSnapshotsDir, { recursive: true, mode: 0o700 });
      await mkdir(this.blobsDir, { recursive: true, mode: 0o700 });
      // Bottom layer first: each layer is rebased onto its parent's local copy.
      let parent: { path: string; format: string } | undefined;
      for (const layer of [...info.disk].reverse()) {
        // Counted as used first: a release of another snapshot must not delete it meanwhile.
        blobs.push(layer.key);
        this.use(layer.key, snapshotId);
        const path = await this.blob(info, layer, stats, async (tmp) => {
          if (layer.format === 'qcow2' && parent) await rebaseUnsafe(tmp, parent.path, parent.format);
        });
        await this.owners.blob(layer.key, path, info.meta.vm.uid);
        parent = { path, format: layer.format };
      }
      if (!parent) throw new DriverError(`snapshot ${snapshotId}: no disk layers`);
      await link(parent.path, sp.disk);
      const meta: SnapshotMeta = { ...info.meta, vm: { ...info.meta.vm } };
      for (const part of ['kernel', 'initrd'] as const) {
        const f = info[part];
        if (f === undefined) continue;
        blobs.push(f.key);
        this.use(f.key, snapshotId);
        meta.vm[part] = await this.blob(info, f, stats);
        await this.owners.blob(f.key, meta.vm[part], info.meta.vm.uid);
      }
      await checkRamRoom(layout.ramSnapshotsDir, snapshotId, info.ram.allocated ?? info.ram.bytes);
      stats.bytes += await this.copy(info, info.state, sp.state);
      stats.ramBytes = await this.copy(info, info.ram, sp.ramFile);
      stats.bytes += stats.ramBytes;
      await this.owners.snapshot(sp, info.meta.vm.uid);
      await writeJsonAtomic(sp.meta, meta);
    } catch (err) {
      await this.removeSnapshot(snapshotId, blobs);
      throw err instanceof CopperError ? err : new DriverError(`fetching snapshot ${snapshotId}: ${errorMessage(err)}`, { cause: err });
    }
    stats.ms = Math.round(performance.now() - t0);
    this.totalBytes += stats.bytes;
    this.fetchLog.push(stats);
    log.info(`snapshot ${snapshotId} fetched from ${info.host}:${info.port}`, { ...stats });
    return blobs;
  }

  /** The local copy of a shared file: fetched unless already here; `prepare` runs on the copy before it is put in place. */
  private async blob(info: SnapshotExportInfo, f: ExportedFile, stats: FetchStats, prepare?: (tmp: string) => Promise<void>): Promise<string> {
    const path = join(this.blobsDir, f.key);
    // Another snapshot being fetched now brings the same file: wait for it. The promise is
    // registered before any await, so two fetches never write the same file.
    const inFlight = this.blobFetches.get(f.key);
    if (inFlight) {
      await inFlight;
      stats.reusedFiles++;
      return path;
    }
    const run = (async (): Promise<boolean> => {
      if (await exists(path)) return false;
      const tmp = `${path}.part-${process.pid}`;
      try {
        stats.bytes += await fetchExport({ host: info.host, port: info.port, exportName: f.export, bytes: f.bytes }, this.o.key, tmp);
        await prepare?.(tmp);
        await rename(tmp, path);
        return true;
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
    })();
    this.blobFetches.set(f.key, run);
    try {
      if (!(await run)) stats.reusedFiles++;
    } finally {
      this.blobFetches.delete(f.key);
    }
    return path;
  }

  private async copy(info: SnapshotExportInfo, f: ExportedFile, to: string): Promise<number> {
    const tmp = `${to}.part-${process.pid}`;
    try {
      const n = await fetchExport({ host: info.host, port: info.port, exportName: f.export, bytes: f.bytes }, this.o.key, tmp);
      await rename(tmp, to);
      return n;
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  private use(key: string, snapshotId: string): void {
    const users = this.blobUsers.get(key) ?? new Set<string>();
    users.add(snapshotId);
    this.blobUsers.set(key, users);
  }

  private async removeSnapshot(snapshotId: string, blobs: string[]): Promise<void> {
    await this.removeFolder(snapshotId);
    for (const key of blobs) {
      const users = this.blobUsers.get(key);
      users?.delete(snapshotId);
      if (users && users.size > 0) continue;
      this.blobUsers.delete(key);
      this.owners.forget(key);
      await rm(join(this.blobsDir, key), { force: true });
    }
  }

  /** The snapshot's folder and RAM file, meta.json first (as SnapshotStore.remove does). */
  private async removeFolder(snapshotId: string): Promise<void> {
    const sp = this.o.layout.snapshot(snapshotId);
    await rm(sp.meta, { force: true });
    await rm(sp.ramFile, { force: true });
    await rm(`${sp.ramFile}.part-${process.pid}`, { force: true });
    await rm(sp.dir, { recursive: true, force: true });
    await rm(join(this.dir, 'marks', snapshotId), { force: true });
  }
}

/** A full tmpfs met mid-copy would fail late and obscurely: say what is missing first. */
async function checkRamRoom(dir: string, snapshotId: string, need: number): Promise<void> {
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (free < need) {
    throw new DriverError(`No space left for snapshot ${snapshotId}'s RAM in ${dir}: ${Math.ceil(need / MiB)} MiB needed, ${Math.floor(free / MiB)} MiB free`);
  }
}

/** Point a copied qcow2 layer at its parent's local copy (the data is unchanged: -u). */
async function rebaseUnsafe(file: string, backing: string, format: string): Promise<void> {
  try {
    await execFileP('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', backing, '-F', format, file]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new DriverError(`qemu-img rebase ${file}: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/** Create the lock file with our pid; wait while a live process holds it, take it from a dead one. */
async function takeLockFile(file: string): Promise<void> {
  for (;;) {
    try {
      const fh = await open(file, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const text = await readFile(file, 'utf8').catch(() => '');
    const pid = Number.parseInt(text, 10);
    // Empty: its owner is between creating and writing it; a file that stays empty is stale.
    const young = text === '' && Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? 0) < 5000;
    if (young || (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))) {
      await sleep(100);
      continue;
    }
    await rm(file, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}
