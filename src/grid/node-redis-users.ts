/**
 * One Redis ACL user per compute node (`node-<name>`), so that a stolen node credential is a
 * node's and no more: no admin command (CONFIG, ACL, FLUSHALL, SHUTDOWN, DEBUG, MODULE, SCRIPT,
 * KEYS...), no key outside what a node's runner, dispatcher, heartbeat and snapshot cache
 * touch, and no write to another node's registry record. Its password is derived from the
 * node's token (the one secret `gc node token NAME` hands out), so the node needs nothing more
 * than GC_NODE_TOKEN and the server's Redis address.
 *
 * What Redis key patterns cannot stop: job records, BullMQ's keys, the usage counts and the
 * transition stream are shared by every host (any host may take any job), so a node can still
 * write any job's record there; the node API (node-api.ts) is what holds a node to its own jobs.
 */
import { createHash, createHmac } from 'node:crypto';
import type { Redis } from 'ioredis';
import { UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { checkNodeName } from './node-tokens.js';

/** The Redis ACL user of a node. */
export function nodeRedisUser(node: string): string {
  return `node-${checkNodeName(node)}`;
}

/** A node's Redis password: derived from its token (a node computes it; the server too). */
export function nodeRedisPassword(nodeToken: string): string {
  if (nodeToken.length < 16) throw new UsageError('a node token must be at least 16 characters');
  return createHmac('sha256', nodeToken).update('copper redis acl v1').digest('hex');
}

/**
 * The ACL rules of a node's user (after `reset`), for keys under `prefix`. Commands: the data
 * commands (BullMQ's scripts use most of them), scripts (EVAL/EVALSHA), blocking pops,
 * transactions, pub/sub and the connection commands ioredis sends; never an admin or
 * dangerous one, except INFO (BullMQ and ioredis read the server's version and state from it).
 * SCAN stays (the usage recount at start runs it): it lists key names, never their values.
 */
export function nodeAclRules(prefix: string, node: string): string[] {
  checkNodeName(node);
  if (!/^[A-Za-z0-9_.-]+$/.test(prefix)) throw new UsageError(`key prefix '${prefix}' cannot be put in an ACL pattern`);
  const p = prefix;
  return [
    '-@all',
    '+@read',
    '+@write',
    '+@keyspace',
    '+@scripting',
    '+@transaction',
    '+@blocking',
    '+@connection',
    '+@pubsub',
    '+@fast',
    '-@admin',
    '-@dangerous',
    '-script',
    '-function',
    '-acl',
    '-randomkey',
    '-swapdb',
    '-move',
    '+info',
    // Read-write: what any host that runs jobs writes.
    `~${p}:job:*`,
    `~${p}:jobs`,
    `~${p}:jobs:top`,
    `~${p}:deps:*`,
    `~${p}:snaprefs`,
    `~${p}:mail:*`,
    `~${p}:usage`,
    `~${p}:usage:*`,
    `~${p}:bull:*`,
    `~${p}:placement:*`,
    `~${p}:events`,
    // Its own registry record and heartbeat; the other hosts' are read only (placement, largest host).
    `~${p}:node:${node}`,
    `~${p}:node:${node}:*`,
    `%R~${p}:node:*`,
    `%R~${p}:nodes`,
    // Where snapshots are exported: read only; asking for an export is a message.
    `%R~${p}:snapexport:*`,
    'resetchannels',
    `&${p}:snapexport:want`,
    // Joining the grid adds its name to the set of hosts (a script given its own record, its
    // heartbeat and the set): only SADD, and only in that set, writes it.
    `(+sadd +evalsha +eval ~${p}:nodes ~${p}:node:${node} ~${p}:node:${node}:*)`,
  ];
}

/** The `ACL SETUSER` an administrator runs on a Redis that gcd may not change (docs/scale.md). */
export function setUserCommand(prefix: string, node: string, password: string): string {
  const quote = (r: string): string => (/[\s()~%&*]/.test(r) ? `'${r}'` : r);
  return ['ACL', 'SETUSER', nodeRedisUser(node), 'reset', 'on', `>${password}`, ...nodeAclRules(prefix, node)].map(quote).join(' ');
}

/** Why gcd could not read or change the users of a Redis (its own user lacks the ACL rights); node '*': all. */
export class RedisAclError extends Error {
  constructor(
    readonly node: string,
    readonly reason: string,
  ) {
    super(`Redis user ${node === '*' ? 'list' : nodeRedisUser(node)} not read or changed: ${reason}`);
    this.name = 'RedisAclError';
  }
}

/**
 * The server's side: creates, re-keys and removes nodes' users on its Redis, then ACL SAVE.
 * `persist`: that save must work (the embedded Redis has an ACL file; an external one may not).
 */
export class NodeRedisUsers {
  constructor(
    private readonly redis: Pick<Redis, 'call'>,
    private readonly prefix: string,
    private readonly persist: boolean,
  ) {}

  /** Create or re-key the node's user; connections still on an older password are cut. */
  async apply(node: string, token: string): Promise<void> {
    const user = nodeRedisUser(node);
    const hash = createHash('sha256').update(nodeRedisPassword(token)).digest('hex');
    try {
      await this.redis.call('ACL', 'SETUSER', user, 'reset', 'on', `#${hash}`, ...nodeAclRules(this.prefix, node));
    } catch (e) {
      throw new RedisAclError(node, errorMessage(e));
    }
    // A re-keyed node's old connections (an earlier token, perhaps a stolen one) end now.
    await this.killConnections(user);
    await this.save();
  }

  /** Remove the node's user; its open connections are cut (ACL DELUSER does, CLIENT KILL too). */
  async remove(node: string): Promise<void> {
    const user = nodeRedisUser(node);
    try {
      await this.redis.call('ACL', 'DELUSER', user);
    } catch (e) {
      throw new RedisAclError(node, errorMessage(e));
    }
    await this.killConnections(user);
    await this.save();
  }

  /** Names of the nodes that have a user now. */
  async list(): Promise<string[]> {
    let users: string[];
    try {
      users = (await this.redis.call('ACL', 'USERS')) as string[];
    } catch (e) {
      throw new RedisAclError('*', errorMessage(e));
    }
    return users.filter((u) => u.startsWith('node-')).map((u) => u.slice('node-'.length));
  }

  /**
   * At the server's start: every node with a token has its user with today's rules, and no
   * user is left for a node whose token was revoked (the token files are the truth).
   */
  async reconcile(tokens: ReadonlyMap<string, string>): Promise<void> {
    for (const [node, token] of tokens) await this.apply(node, token);
    for (const node of await this.list()) if (!tokens.has(node)) await this.remove(node);
  }

  private async killConnections(user: string): Promise<void> {
    // "No such user" once DELUSER has run: nothing is connected as it then.
    await this.redis.call('CLIENT', 'KILL', 'USER', user).catch(() => undefined);
  }

  private async save(): Promise<void> {
    try {
      await this.redis.call('ACL', 'SAVE');
    } catch (e) {
      // A site's Redis may have no ACL file: gcd's start re-applies the users then.
      if (this.persist) log.error('Redis ACL file not saved: node users last until Redis restarts', { error: errorMessage(e) });
      else log.debug('Redis ACL SAVE refused (no aclfile?)', { error: errorMessage(e) });
    }
  }
}

/**
 * A node's GC_REDIS_URL with its credentials: a URL that names no user and no password (the
 * server's `redis/node-url`) gets `node-<name>` and the password its token gives; a URL that
 * carries its own (an administrator's set-up) is used as it is.
 */
export function nodeRedisUrl(url: string, node: string, nodeToken: string | undefined): string {
  const u = new URL(url);
  if (u.username || u.password) return url;
  if (!nodeToken) {
    throw new UsageError(
      `GC_REDIS_URL names no user: a compute node signs in to Redis as ${nodeRedisUser(node)} with its GC_NODE_TOKEN (on the server: gc node token ${node})`,
    );
  }
  u.username = nodeRedisUser(node);
  u.password = nodeRedisPassword(nodeToken);
  return u.toString();
}
