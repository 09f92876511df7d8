/**
 * Snapshot folders on disk (layout.ts): list, read, remove, and sweep what a crash left.
 * A snapshot exists once its meta.json does; it is removed meta.json first.
 */
import { parseRecord, RecordError } from '../../json-record.js';
import { SNAPSHOT_META } from '../records.schema.js';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError, NotFoundError, errorMessage } from '../../errors.js';
import { assertId, type Layout } from '../layout.js';
import type { SnapshotMeta, SnapshotSummary } from './types.js';

export class SnapshotStore {
  constructor(private readonly layout: Layout) {}

  async list(): Promise<string[]> {
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

  /** A snapshot's metadata (NotFoundError when there is none). */
  async meta(snapshotId: string): Promise<SnapshotMeta> {
    const sp = this.layout.snapshot(snapshotId);
    try {
      return parseRecord(sp.meta, 'snapshot metadata', await readFile(sp.meta, 'utf8'), SNAPSHOT_META);
    } catch (err) {
      if (err instanceof RecordError) throw err;
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`no snapshot '${snapshotId}'`);
      throw new DriverError(`snapshot '${snapshotId}' metadata unreadable: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Snapshot metadata with its owner, or NotFoundError. */
  async info(snapshotId: string): Promise<SnapshotSummary & { owner: string; group: string }> {
    const m = await this.meta(snapshotId);
    return { ...summaryOf(m), owner: m.owner, group: m.group };
  }

  async release(snapshotId: string): Promise<void> {
    assertId('snapshot', snapshotId);
    await this.remove(snapshotId);
  }

  async remove(id: string): Promise<void> {
    const sp = this.layout.snapshot(id);
    // meta.json first: from then on the snapshot no longer exists for list and clone.
    await rm(sp.meta, { force: true });
    await rm(sp.ramFile, { force: true });
    await rm(sp.dir, { recursive: true, force: true });
  }

  /** Free a snapshot's RAM while its disk layer stays (a clone's disk still backs onto it). */
  async removeRam(id: string): Promise<void> {
    await rm(this.layout.snapshot(id).ramFile, { force: true });
  }

  /**
   * After a crash: RAM files whose folder is gone, receivers' folders (their QEMU died with the
   * process that started them) and half-written snapshots (no meta.json). `inProgress`: being
   * written now, not touched.
   */
  async sweep(inProgress: ReadonlySet<string>): Promise<void> {
    const ramDir = this.layout.ramSnapshotsDir;
    for (const f of await readdirSafe(ramDir)) {
      const id = f.replace(/\.ram$/, '');
      if (!f.endsWith('.ram') || inProgress.has(id)) continue;
      try {
        await stat(this.layout.snapshot(id).dir);
      } catch {
        await rm(`${ramDir}/${f}`, { force: true });
      }
    }
    for (const id of await readdirSafe(`${this.layout.runDir}/t`)) {
      if (!inProgress.has(id)) await rm(`${this.layout.runDir}/t/${id}`, { recursive: true, force: true });
    }
    for (const id of await readdirSafe(this.layout.snapshotsDir)) {
      if (inProgress.has(id)) continue;
      try {
        await stat(this.layout.snapshot(id).meta);
      } catch {
        await this.remove(id).catch(() => undefined);
      }
    }
  }

  /** Every receiver folder and whole-state stream file of a clone snapshot cut short (none may run now). */
  async sweepTransfers(): Promise<void> {
    await rm(join(this.layout.runDir, 't'), { recursive: true, force: true });
    for (const f of await readdirSafe(this.layout.ramSnapshotsDir)) {
      if (f.endsWith('.full')) await rm(join(this.layout.ramSnapshotsDir, f), { force: true });
    }
  }
}

export function summaryOf(m: SnapshotMeta): SnapshotSummary {
  return {
    id: m.id, headnode: m.headnode, createdAt: m.createdAt, pauseMs: m.pauseMs, memMiB: m.vm.memMiB, vcpus: m.vm.vcpus,
    maxVcpus: m.vm.maxVcpus ?? m.vm.vcpus, maxMemMiB: m.vm.maxMemMiB ?? m.vm.memMiB,
  };
}

export async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}
