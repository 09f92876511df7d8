/**
 * Server side of snapshot transfer: the snapshot's files (RAM, device state, each disk layer
 * of its backing chain, kernel and initrd) exported read-only over NBD by the server's
 * qemu-storage-daemon, on demand, and the export record published in Redis for nodes to read.
 *
 * Every file is exported as raw bytes (a qcow2 layer as its file, not its guest view): a node
 * copies the files sparsely and rebuilds the same chain locally (snapshot-cache.ts). A file
 * shared by several snapshots (the image's base layer, the kernel) is exported once, named by
 * its identity, and closed with the last snapshot that uses it.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import { DriverError, NotFoundError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { KeyedLock } from '../vm/keyed-lock.js';
import { assertId, type Layout } from '../vm/layout.js';
import { backingChain } from '../vm/qemu-img.js';
import type { SnapshotStore } from '../vm/snapshots/store.js';
import { NbdDaemon } from './nbd-daemon.js';
import { snapExportKey, snapExportWantChannel, type ExportedFile, type ExportedLayer, type SnapshotExportInfo } from './snapshot-export-info.js';

export interface SnapshotExporterOptions {
  layout: Layout;
  store: SnapshotStore;
  /** GC_NBD_ADDR, parsed. */
  host: string;
  port: number;
  /** Private folder for the daemon (sockets, keys.psk). */
  dir: string;
  /** Where the export records go; without it, callers pass ensure()'s record on themselves. */
  redis?: Redis;
  keyPrefix?: string;
}

interface OpenFile {
  file: ExportedFile;
  users: Set<string>;
}

export class SnapshotExporter {
  private readonly lock = new KeyedLock();
  private readonly exported = new Map<string, SnapshotExportInfo>();
  private readonly files = new Map<string, OpenFile>();
  private subscriber: Redis | undefined;

  private constructor(
    private readonly o: SnapshotExporterOptions,
    private readonly daemon: NbdDaemon,
  ) {}

  static async start(o: SnapshotExporterOptions): Promise<SnapshotExporter> {
    const daemon = await NbdDaemon.start({ dir: o.dir, host: o.host, port: o.port });
    const ex = new SnapshotExporter(o, daemon);
    // Records of a former run point at exports this daemon does not have.
    if (o.redis) await ex.dropStaleRecords(o.redis);
    return ex;
  }

  /** Let a node fetch snapshots with its key (nbdPskOf(its token)). */
  allowNode(node: string, pskHex: string): Promise<void> {
    return this.daemon.allowNode(node, pskHex);
  }

  revokeNode(node: string): Promise<void> {
    return this.daemon.revokeNode(node);
  }

  /** Snapshots exported now. */
  list(): string[] {
    return [...this.exported.keys()].sort();
  }

  /** Export a snapshot's files (once; later calls return the same record) and publish the record. */
  ensure(snapshotId: string): Promise<SnapshotExportInfo> {
    assertId('snapshot', snapshotId);
    return this.lock.run(snapshotId, async () => {
      const known = this.exported.get(snapshotId);
      if (known) return known;
      const info = await this.exportNow(snapshotId);
      this.exported.set(snapshotId, info);
      if (this.o.redis) {
        await this.o.redis.hset(snapExportKey(this.prefix, snapshotId), { info: JSON.stringify(info), at: String(Date.now()) });
      }
      return info;
    });
  }

  /** Stop exporting a snapshot (call before its files are removed); idempotent. */
  release(snapshotId: string): Promise<void> {
    assertId('snapshot', snapshotId);
    return this.lock.run(snapshotId, async () => {
      if (this.o.redis) await this.o.redis.del(snapExportKey(this.prefix, snapshotId));
      if (!this.exported.delete(snapshotId)) return;
      await this.closeFilesOf(snapshotId);
    });
  }

  /**
   * Serve nodes' requests: a node that finds no record publishes the snapshot's id on the
   * want channel, and the snapshot is exported if this server has it. `sub` is a connection of
   * its own (subscriber mode).
   */
  async serveRequests(sub: Redis): Promise<void> {
    this.subscriber = sub;
    sub.on('message', (_channel: string, id: string) => {
      void (async () => {
        await this.o.store.meta(id); // NotFoundError: not ours (or released); the node times out and says so
        await this.ensure(id);
      })().catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) log.warn(`export of snapshot ${id} asked by a node: ${errorMessage(err)}`);
      });
    });
    await sub.subscribe(snapExportWantChannel(this.prefix));
  }

  /** Bytes the NBD server has read from exported files (sent to nodes) since it started. */
  bytesServed(): Promise<number> {
    return this.daemon.bytesRead();
  }

  /** Unexport everything, drop the records, stop the daemon. */
  async close(): Promise<void> {
    if (this.subscriber) {
      await this.subscriber.unsubscribe().catch(() => undefined);
      this.subscriber.disconnect();
    }
    for (const id of this.list()) await this.release(id).catch((err: unknown) => log.warn(`unexporting ${id}: ${errorMessage(err)}`));
    await this.daemon.stop();
  }

  private get prefix(): string {
    return this.o.keyPrefix ?? 'copper';
  }

  private async exportNow(snapshotId: string): Promise<SnapshotExportInfo> {
    const meta = await this.o.store.meta(snapshotId);
    const sp = this.o.layout.snapshot(snapshotId);
    const chain = await backingChain(sp.disk);
    try {
      const ram = await this.open(snapshotId, sp.ramFile);
      const state = await this.open(snapshotId, sp.state);
      const disk: ExportedLayer[] = [];
      for (const layer of chain) {
        if (layer.format !== 'qcow2' && layer.format !== 'raw')
          throw new DriverError(`snapshot ${snapshotId}: disk layer ${layer.filename} is ${layer.format}`);
        disk.push({ ...(await this.open(snapshotId, layer.filename)), format: layer.format });
      }
      const info: SnapshotExportInfo = { version: 1, snapshotId, host: this.o.host, port: this.o.port, meta, ram, state, disk };
      if (meta.vm.kernel !== undefined) info.kernel = await this.open(snapshotId, meta.vm.kernel);
      if (meta.vm.initrd !== undefined) info.initrd = await this.open(snapshotId, meta.vm.initrd);
      log.info(`snapshot ${snapshotId} exported over NBD (${chain.length} disk layers)`);
      return info;
    } catch (err) {
      await this.closeFilesOf(snapshotId);
      throw err instanceof NotFoundError || err instanceof DriverError
        ? err
        : new DriverError(`exporting snapshot ${snapshotId}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Export `path` for `snapshotId`, or count one more user of an export of the same file. */
  private async open(snapshotId: string, path: string): Promise<ExportedFile> {
    const st = await stat(path).catch((err: unknown) => {
      throw new NotFoundError(`snapshot ${snapshotId}: ${path} is missing (${errorMessage(err)})`);
    });
    // A file is immutable once it belongs to a snapshot: its identity names its content.
    const key = createHash('sha256').update(`${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${path}`).digest('hex').slice(0, 24);
    const have = this.files.get(key);
    if (have) {
      have.users.add(snapshotId);
      return have.file;
    }
    const file: ExportedFile = { key, export: `f-${key}`, bytes: st.size, allocated: st.blocks * 512 };
    await this.daemon.exportFile(file.export, `n-${key}`, path);
    this.files.set(key, { file, users: new Set([snapshotId]) });
    return file;
  }

  private async closeFilesOf(snapshotId: string): Promise<void> {
    for (const [key, f] of [...this.files]) {
      if (!f.users.delete(snapshotId) || f.users.size > 0) continue;
      this.files.delete(key);
      await this.daemon.unexportFile(f.file.export, `n-${key}`);
    }
  }

  private async dropStaleRecords(redis: Redis): Promise<void> {
    const stale: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', snapExportKey(this.prefix, '*'), 'COUNT', 200);
      cursor = next;
      stale.push(...keys);
    } while (cursor !== '0');
    if (stale.length > 0) await redis.del(...stale);
  }
}
