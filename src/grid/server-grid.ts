/**
 * The server's half of the grid wired together (server/compose.ts calls this once): the NBD
 * exporter of snapshots (GC_NBD_ADDR) with every node that has a token let in, `gc node token`
 * letting nodes in and out of it too, and the job driver wrapped so that a snapshot stops being
 * exported before its files are removed (the daemon must not keep deleted files open, nor serve
 * a snapshot that is gone).
 */
import type { Redis } from 'ioredis';
import type { CliAnswer, CliCall } from '../api/cli-call.js';
import type { Settings } from '../config/settings.js';
import type { Driver } from '../drivers/driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { Layout } from '../vm/layout.js';
import { SnapshotStore } from '../vm/snapshots/store.js';
import { nodeTokenTool } from './node-token-cmd.js';
import type { NodeTokens } from './node-tokens.js';
import { nbdPskOf } from './snapshot-export-info.js';
import type { SnapshotExporter } from './snapshot-export.js';
import { startSnapshotExports } from './snapshot-transfer.js';

export interface ServerGrid {
  /** The job driver to give the scheduler and the node API (releases unexport first). */
  driver: Driver;
  /** undefined when GC_NBD_ADDR is unset or off. */
  exporter: SnapshotExporter | undefined;
  /** `gc node token [--revoke] NAME`, which also lets the node in or out of the NBD exports. */
  tokenTool(call: Pick<CliCall, 'actor' | 'argv'>): Promise<CliAnswer>;
  close(): Promise<void>;
}

/** `driver` whose releaseSnapshot first stops the export of that snapshot. */
export function unexportingFirst(driver: Driver, exporter: Pick<SnapshotExporter, 'release'>): Driver {
  const releaseSnapshot = async (snapshotId: string, jobId?: string): Promise<void> => {
    await exporter
      .release(snapshotId)
      .catch((e: unknown) => log.warn('unexporting a snapshot before its release failed', { snapshot: snapshotId, error: errorMessage(e) }));
    return driver.releaseSnapshot(snapshotId, jobId);
  };
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === 'releaseSnapshot') return releaseSnapshot;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export async function startServerGrid(o: {
  settings: Pick<Settings, 'stateDir' | 'ramDir' | 'keyPrefix' | 'nbdAddr'>;
  redis: Redis;
  tokens: NodeTokens;
  driver: Driver;
}): Promise<ServerGrid> {
  const exporter = await startSnapshotExports({ settings: o.settings, store: new SnapshotStore(new Layout(o.settings)), redis: o.redis });
  if (!exporter) return { driver: o.driver, exporter, tokenTool: (call) => nodeTokenTool(call, o.tokens), close: async () => undefined };
  try {
    for (const name of await o.tokens.list()) {
      const token = await o.tokens.get(name);
      if (token) await exporter.allowNode(name, nbdPskOf(token));
    }
  } catch (e) {
    await exporter.close();
    throw e;
  }
  return {
    driver: unexportingFirst(o.driver, exporter),
    exporter,
    async tokenTool(call) {
      const answer = await nodeTokenTool(call, o.tokens);
      const rest = call.argv.slice(2);
      const name = rest[0] === '--revoke' ? rest[1] : rest[0];
      const token = name === undefined ? undefined : await o.tokens.get(name);
      // A new token replaces the node's key; a revoked one takes it out.
      if (token) await exporter.allowNode(name, nbdPskOf(token));
      else if (name !== undefined) await exporter.revokeNode(name);
      return answer;
    },
    close: () => exporter.close(),
  };
}
