/**
 * How a node learns where a snapshot is exported: the server's record in Redis
 * (`<prefix>:snapexport:<id>`). When there is none yet, the node asks for it on the want
 * channel and waits for the record to appear: exports are made on demand, by the first node
 * that needs the snapshot, and Redis stays the only thing both sides talk through.
 */
import type { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, NotFoundError } from '../errors.js';
import { SNAPSHOT_META } from '../vm/records.schema.js';
import { snapExportKey, snapExportWantChannel, type SnapshotExportInfo } from './snapshot-export-info.js';

/** Where a snapshot's files can be fetched from (a stand-in in unit tests). */
export interface ExportDirectory {
  /** The export record; NotFoundError when the server does not export the snapshot. */
  lookup(snapshotId: string): Promise<SnapshotExportInfo>;
}

export interface RedisExportDirectoryOptions {
  redis: Redis;
  keyPrefix?: string;
  /** How long to wait for the server to export a snapshot asked for. */
  waitMs?: number;
}

export class RedisExportDirectory implements ExportDirectory {
  constructor(private readonly o: RedisExportDirectoryOptions) {}

  async lookup(snapshotId: string): Promise<SnapshotExportInfo> {
    const prefix = this.o.keyPrefix ?? 'copper';
    const key = snapExportKey(prefix, snapshotId);
    const deadline = Date.now() + (this.o.waitMs ?? 15_000);
    let asked = 0;
    for (;;) {
      const raw = await this.o.redis.hget(key, 'info');
      if (raw !== null) return parseExportInfo(snapshotId, raw);
      if (Date.now() >= deadline) break;
      // Ask again now and then: a request sent while the server restarted is lost.
      if (Date.now() - asked > 2000) {
        await this.o.redis.publish(snapExportWantChannel(prefix), snapshotId);
        asked = Date.now();
      }
      await sleep(100);
    }
    throw new NotFoundError(`snapshot '${snapshotId}' is not exported by the server (no ${key})`);
  }
}

/** Check the record's shape: it crosses hosts, so a mismatch must fail here, not in QEMU. */
export function parseExportInfo(snapshotId: string, raw: string): SnapshotExportInfo {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new DriverError(`export record of snapshot '${snapshotId}' is not JSON`);
  }
  const r = v as Partial<SnapshotExportInfo>;
  const fileOk = (f: unknown): boolean => {
    const x = f as { key?: unknown; export?: unknown; bytes?: unknown; allocated?: unknown } | undefined;
    return (
      typeof x?.key === 'string' &&
      /^[0-9a-f]{8,64}$/.test(x.key) &&
      typeof x.export === 'string' &&
      Number.isInteger(x.bytes) &&
      (x.allocated === undefined || Number.isInteger(x.allocated))
    );
  };
  const ok =
    r.version === 1 &&
    r.snapshotId === snapshotId &&
    typeof r.host === 'string' &&
    Number.isInteger(r.port) &&
    SNAPSHOT_META.safeParse(r.meta).success &&
    r.meta?.id === snapshotId &&
    fileOk(r.ram) &&
    fileOk(r.state) &&
    Array.isArray(r.disk) &&
    r.disk.length > 0 &&
    r.disk.every((l) => fileOk(l) && (l.format === 'qcow2' || l.format === 'raw')) &&
    (r.kernel === undefined || fileOk(r.kernel)) &&
    (r.initrd === undefined || fileOk(r.initrd));
  if (!ok) throw new DriverError(`export record of snapshot '${snapshotId}' is malformed`);
  return r as SnapshotExportInfo;
}
