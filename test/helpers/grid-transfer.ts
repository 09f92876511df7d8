/**
 * Set-up shared by the snapshot-transfer tests and bench (test/integration/grid-snapshot-cache,
 * grid-node-stack, test/vm/grid-snapshots, bench/grid-transfer): a free loopback port, snapshot
 * folders made with qemu-img, the server's NBD exporter on loopback serving a Redis-announced
 * directory, and a node's cache holding its NBD key.
 */
import { execFile } from 'node:child_process';
import { access, mkdir, open, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { RedisExportDirectory } from '../../src/grid/export-directory.js';
import { NbdClientKey } from '../../src/grid/nbd-fetch.js';
import { SnapshotCache } from '../../src/grid/snapshot-cache.js';
import { SnapshotExporter } from '../../src/grid/snapshot-export.js';
import { nbdPskOf } from '../../src/grid/snapshot-export-info.js';
import type { Layout } from '../../src/vm/layout.js';
import type { SnapshotMeta } from '../../src/vm/snapshots/types.js';
import { SnapshotStore } from '../../src/vm/snapshots/store.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;

/** A TCP port free on 127.0.0.1 now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

export interface SnapshotFolderSpec {
  /** The qcow2 the snapshot's disk layer is backed by. */
  base: string;
  /** Byte written over 512 KiB at 1 MiB of the disk layer (omitted: the layer stays empty). */
  diskPattern?: number;
  stateBytes: number;
  stateByte: number;
  /** A sparse RAM file of ramMiB with one MiB of `ramByte` at ramDataAtMiB. */
  ramMiB: number;
  ramByte: number;
  ramDataAtMiB: number;
  meta: Omit<SnapshotMeta, 'version' | 'id' | 'createdAt' | 'pauseMs'>;
}

/** A snapshot folder as vm/snapshots leaves it: disk layer, device state, sparse RAM file, meta.json. */
export async function writeSnapshotFolder(layout: Layout, id: string, s: SnapshotFolderSpec): Promise<void> {
  const sp = layout.snapshot(id);
  await mkdir(sp.dir, { recursive: true });
  await mkdir(layout.ramSnapshotsDir, { recursive: true });
  await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', s.base, '-F', 'qcow2', sp.disk]);
  if (s.diskPattern !== undefined) await execFileP('qemu-io', ['-c', `write -P ${s.diskPattern} 1M 512k`, sp.disk]);
  await writeFile(sp.state, Buffer.alloc(s.stateBytes, s.stateByte));
  const ram = await open(sp.ramFile, 'w');
  await ram.truncate(s.ramMiB * MiB);
  await ram.write(Buffer.alloc(MiB, s.ramByte), 0, MiB, s.ramDataAtMiB * MiB);
  await ram.close();
  const meta: SnapshotMeta = { version: 1, id, createdAt: Date.now(), pauseMs: 1, ...s.meta };
  await writeFile(sp.meta, JSON.stringify(meta));
}

/**
 * The server's exporter on 127.0.0.1 (a free port), answering nodes' export requests on a
 * duplicate of `redis` (closed with it by the caller: `sub.disconnect()`).
 */
export async function startLoopbackExporter(o: {
  layout: Layout;
  stateDir: string;
  redis: Redis;
  keyPrefix: string;
}): Promise<{ exporter: SnapshotExporter; sub: Redis; port: number }> {
  const sub = o.redis.duplicate();
  const port = await freePort();
  const exporter = await SnapshotExporter.start({
    layout: o.layout,
    store: new SnapshotStore(o.layout),
    host: '127.0.0.1',
    port,
    dir: join(o.stateDir, 'run', 'nbd'),
    redis: o.redis,
    keyPrefix: o.keyPrefix,
  });
  await exporter.serveRequests(sub);
  return { exporter, sub, port };
}

/** A node's snapshot cache: its NBD key (from its token) in its state folder, the directory in Redis. */
export async function openNodeCache(o: {
  layout: Layout;
  stateDir: string;
  redis: Redis;
  keyPrefix: string;
  nodeName: string;
  nodeToken: string;
  waitMs?: number;
}): Promise<SnapshotCache> {
  const key = await NbdClientKey.write(join(o.stateDir, 'nbd-key'), o.nodeName, nbdPskOf(o.nodeToken));
  const directory = new RedisExportDirectory({ redis: o.redis, keyPrefix: o.keyPrefix, ...(o.waitMs !== undefined ? { waitMs: o.waitMs } : {}) });
  return new SnapshotCache({ layout: o.layout, directory, key });
}
