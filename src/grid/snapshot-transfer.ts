/**
 * The two ends of snapshot transfer as gcd composes them: the server's exporter (when
 * GC_NBD_ADDR is set) and a node's cache. server/compose.ts calls these; everything else
 * about the transfer stays in snapshot-export.ts and snapshot-cache.ts.
 */
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Settings } from '../config/settings.js';
import { Layout } from '../vm/layout.js';
import type { SnapshotStore } from '../vm/snapshots/store.js';
import { RedisExportDirectory } from './export-directory.js';
import { NbdClientKey } from './nbd-fetch.js';
import { SnapshotCache } from './snapshot-cache.js';
import { nbdPskOf, parseNbdAddr } from './snapshot-export-info.js';
import { SnapshotExporter } from './snapshot-export.js';

type TransferSettings = Pick<Settings, 'stateDir' | 'ramDir' | 'keyPrefix' | 'nbdAddr'>;

/**
 * On the server: the NBD exporter, serving nodes' requests, or undefined when GC_NBD_ADDR is
 * unset or off (a single host needs none). Let each node in with
 * `exporter.allowNode(name, nbdPskOf(token))`; call `exporter.release(id)` before a snapshot's
 * files are removed, and `close()` at shutdown.
 */
export async function startSnapshotExports(o: { settings: TransferSettings; store: SnapshotStore; redis: Redis }): Promise<SnapshotExporter | undefined> {
  const addr = o.settings.nbdAddr;
  if (addr === undefined || addr === 'off') return undefined;
  const { host, port } = parseNbdAddr(addr);
  const exporter = await SnapshotExporter.start({
    layout: new Layout(o.settings),
    store: o.store,
    host,
    port,
    dir: join(o.settings.stateDir, 'run', 'nbd'),
    redis: o.redis,
    keyPrefix: o.settings.keyPrefix,
  });
  await exporter.serveRequests(o.redis.duplicate());
  return exporter;
}

/**
 * On a node: its snapshot cache, swept of whatever a former run left. `nodeToken` is the
 * node's secret with the server; its NBD key is derived from it.
 */
export async function openSnapshotCache(o: { settings: TransferSettings; redis: Redis; nodeName: string; nodeToken: string }): Promise<SnapshotCache> {
  const key = await NbdClientKey.write(join(o.settings.stateDir, 'nbd-key'), o.nodeName, nbdPskOf(o.nodeToken));
  const cache = new SnapshotCache({
    layout: new Layout(o.settings),
    directory: new RedisExportDirectory({ redis: o.redis, keyPrefix: o.settings.keyPrefix }),
    key,
  });
  await cache.sweep();
  return cache;
}
