/** The server's side of the grid relay, as gcd composes it (server/compose.ts calls this). */
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Settings } from '../config/settings.js';
import { NodeApi, type NodeApiOptions } from './node-api.js';

/** The node API when GC_NODE_API_ADDR is set, listening; undefined otherwise. */
export async function startNodeApi(
  settings: Pick<Settings, 'nodeApiAddr' | 'stateDir' | 'maxOutputMiB'>,
  deps: Pick<NodeApiOptions, 'tokens' | 'store' | 'driver' | 'guestApi' | 'dependents'>,
): Promise<NodeApi | undefined> {
  if (!settings.nodeApiAddr) return undefined;
  const api = new NodeApi({
    ...deps,
    addr: settings.nodeApiAddr,
    incomingDir: join(settings.stateDir, 'grid', 'incoming'),
    undeliveredDir: join(settings.stateDir, 'undelivered'),
    maxOutputBytes: settings.maxOutputMiB * 1024 * 1024,
  });
  await api.listen();
  return api;
}

/** A host's control URL as its registry record has it (`<prefix>:node:<name>`, field controlUrl). */
export function registryControlUrl(redis: Pick<Redis, 'hget'>, keyPrefix: string): (node: string) => Promise<string | undefined> {
  return async (node) => (await redis.hget(`${keyPrefix}:node:${node}`, 'controlUrl')) ?? undefined;
}
