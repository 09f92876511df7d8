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
import { type NodeRedisUsers, RedisAclError, nodeRedisPassword, nodeRedisUser, setUserCommand } from './node-redis-users.js';
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

/** The node a `gc node token [--revoke] NAME` call names. */
function tokenCallNode(argv: readonly string[]): string | undefined {
  const rest = argv.slice(2);
  return rest[0] === '--revoke' ? rest[1] : rest[0];
}

/**
 * Every node holding a token gets its Redis user, none other keeps one. On a Redis where gcd
 * may not change users (an external one), said once in the log: the administrator makes them.
 */
async function reconcileRedisUsers(users: NodeRedisUsers, tokens: NodeTokens): Promise<void> {
  const held = new Map<string, string>();
  for (const name of await tokens.list()) {
    const token = await tokens.get(name);
    if (token) held.set(name, token);
  }
  try {
    await users.reconcile(held);
  } catch (e) {
    if (!(e instanceof RedisAclError)) throw e;
    log.warn('nodes’ Redis users not managed by gcd: create them on the Redis (docs/scale.md)', { error: e.message });
  }
}

/** `gc node token`'s Redis half: the node's user made, re-keyed or removed; what happened, for its stderr. */
async function syncRedisUser(users: NodeRedisUsers, prefix: string, name: string, token: string | undefined): Promise<string> {
  const user = nodeRedisUser(name);
  try {
    if (token) await users.apply(name, token);
    else await users.remove(name);
  } catch (e) {
    if (!(e instanceof RedisAclError)) throw e;
    if (!token) return `Redis user ${user} not removed (${e.reason}): run ACL DELUSER ${user} on the Redis\n`;
    return `Redis user ${user} not made (${e.reason}): run on the Redis: ${setUserCommand(prefix, name, nodeRedisPassword(token))}\n`;
  }
  return token
    ? `Redis user ${user} ready: the node signs in with its GC_NODE_TOKEN (GC_REDIS_URL without a password)\n`
    : `Redis user ${user} removed and its connections cut\n`;
}

export async function startServerGrid(o: {
  settings: Pick<Settings, 'stateDir' | 'ramDir' | 'keyPrefix' | 'nbdAddr'>;
  redis: Redis;
  tokens: NodeTokens;
  driver: Driver;
  /** The nodes' Redis ACL users (node-redis-users.ts); the server's Redis, as gcd's user reaches it. */
  redisUsers?: NodeRedisUsers;
}): Promise<ServerGrid> {
  const users = o.redisUsers;
  if (users) await reconcileRedisUsers(users, o.tokens);
  const exporter = await startSnapshotExports({ settings: o.settings, store: new SnapshotStore(new Layout(o.settings)), redis: o.redis });
  /** The token tool with the node's Redis user kept in step. */
  const tokenTool = async (call: Pick<CliCall, 'actor' | 'argv'>): Promise<{ answer: CliAnswer; name?: string; token?: string }> => {
    const answer = await nodeTokenTool(call, o.tokens);
    const name = tokenCallNode(call.argv);
    if (name === undefined) return { answer };
    const token = await o.tokens.get(name);
    if (users) answer.stderr += await syncRedisUser(users, o.settings.keyPrefix, name, token);
    return { answer, name, token };
  };
  if (!exporter) return { driver: o.driver, exporter, tokenTool: async (call) => (await tokenTool(call)).answer, close: async () => undefined };
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
      const { answer, name, token } = await tokenTool(call);
      // A new token replaces the node's key; a revoked one takes it out.
      if (name === undefined) return answer;
      if (token) await exporter.allowNode(name, nbdPskOf(token));
      else await exporter.revokeNode(name);
      return answer;
    },
    close: () => exporter.close(),
  };
}
