import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { UnavailableError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { RedisTarget } from './connection.js';

/**
 * The Redis that gcd owns when no GC_REDIS_URL is given. It listens on a Unix socket (mode
 * 0700 directory) with a password: guests on QEMU user networking reach the host's loopback
 * TCP ports, so Redis is on none by default. GC_REDIS_BIND adds exactly one TCP address, for
 * the grid's nodes (an address guests cannot reach). AOF on, noeviction, as BullMQ needs.
 */
export interface EmbeddedRedis {
  target: RedisTarget;
  /** The redis-server's pid now (it changes when gcd restarts a server that died). */
  readonly pid: number;
  /** How many times a server that died was started again. */
  readonly restarts: number;
  stop(): Promise<void>;
}

export function redisServerPath(): string {
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server', '/usr/sbin/redis-server']) {
    if (existsSync(p)) return p;
  }
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const found = which.stdout.trim();
  if (which.status === 0 && found) return found;
  throw new UnavailableError('redis-server not found: install it with `apt-get install redis-server` or set GC_REDIS_URL');
}

function passwordFor(dir: string): string {
  const file = join(dir, 'password');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const pw = randomBytes(24).toString('hex');
  writeFileSync(file, pw + '\n', { mode: 0o600 });
  return pw;
}

async function ping(target: RedisTarget, timeoutMs: number): Promise<boolean> {
  const client = new Redis({
    path: target.path,
    password: target.password,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/**
 * Start (or adopt, after a gcd crash left it running) the embedded redis-server for
 * `stateDir`. The server gets SIGTERM when gcd dies (setpriv --pdeathsig), and a SIGTERM'd
 * redis flushes its AOF, so nothing acknowledged is lost.
 */
export async function startEmbeddedRedis(stateDir: string, opts: { maxMemoryMiB?: number; bind?: string } = {}): Promise<EmbeddedRedis> {
  const dir = join(stateDir, 'redis');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const sock = join(dir, 'redis.sock');
  const target: RedisTarget = { path: sock, password: passwordFor(dir) };
  const pidFile = join(dir, 'redis.pid');

  // A server left by a gcd that was killed is on its way out (it got SIGTERM with its parent):
  // never adopt it; let it finish flushing its AOF, then start afresh on the same data.
  await waitForExit(pidFile, 15_000);

  const server = redisServerPath();
  // GC_REDIS_BIND: also TCP on exactly that address, for the grid's nodes (each signs in as its own ACL user).
  const tcp = opts.bind ? splitHostPort(opts.bind) : undefined;
  const conf = [
    tcp ? `port ${tcp.port}` : `port 0`,
    ...(tcp ? [`bind ${tcp.host}`, `protected-mode yes`] : []),
    `unixsocket ${sock}`,
    `unixsocketperm 700`,
    `dir ${dir}`,
    `pidfile ${pidFile}`,
    // Users (the default one, gcd's, with the password; one per compute node) live in an ACL
    // file, so that nodes' users survive a restart of this Redis (ACL SAVE writes it).
    `aclfile ${join(dir, ACL_FILE)}`,
    `appendonly yes`,
    `appendfsync everysec`,
    // A ceiling, so a flood of records is refused (OOM error) rather than Redis killed by the
    // kernel; noeviction: never drop a key to make room.
    ...(opts.maxMemoryMiB !== undefined ? [`maxmemory ${opts.maxMemoryMiB}mb`] : []),
    `maxmemory-policy noeviction`,
    `save ""`,
    `daemonize no`,
    `logfile ${join(dir, 'redis.log')}`,
  ].join('\n');
  writeFileSync(join(dir, 'redis.conf'), conf + '\n', { mode: 0o600 });
  writeAclFile(dir, target.password ?? '');
  const first = await launch(server, dir, target);
  writeNodeUrl(dir, tcp);
  // A server that dies (kill -9, OOM killer) is started again on the same AOF, so that gcd and
  // the jobs it runs carry on: its clients wait for it (they reconnect and replay; see
  // connection.ts) instead of failing. A SIGKILLed server loses nothing it acknowledged: each
  // write reached the AOF file (the page cache) before its reply.
  let child = first;
  let stopping = false;
  let restarts = 0;
  const supervise = (c: ChildProcess): void => {
    c.once('exit', (code, sig) => {
      if (stopping) return;
      log.error('embedded redis-server died; starting it again', { pid: c.pid, exit: code ?? sig });
      const again = async (delayMs: number): Promise<void> => {
        await sleep(delayMs);
        if (stopping) return;
        try {
          child = await launch(server, dir, target);
          restarts++;
          log.info('embedded redis-server started again', { pid: child.pid, restarts });
          supervise(child);
        } catch (e) {
          log.error('embedded redis-server did not start again; retrying', { error: errorMessage(e) });
          await again(Math.min(5000, delayMs * 2));
        }
      };
      void again(100);
    });
  };
  supervise(first);
  return {
    target,
    get pid() {
      return child.pid ?? 0;
    },
    get restarts() {
      return restarts;
    },
    stop: () => {
      stopping = true;
      return stopServer(target, child.pid ?? 0);
    },
  };
}

/** Start redis-server on the written configuration and wait until it answers. */
async function launch(server: string, dir: string, target: RedisTarget): Promise<ChildProcess> {
  const sock = target.path ?? '';
  // umask 077: what Redis writes (the ACL file on ACL SAVE, the AOF) is its owner's alone.
  const child = spawn('setpriv', ['--pdeathsig', 'SIGTERM', '--', 'sh', '-c', 'umask 077 && exec "$0" "$@"', server, join(dir, 'redis.conf')], {
    stdio: 'ignore',
    detached: false,
  });
  let exited: string | undefined;
  child.on('exit', (code, sig) => {
    exited = `exit ${code ?? sig}`;
  });
  child.on('error', (e) => {
    exited = e.message;
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (exited) {
      throw new UnavailableError(`embedded redis-server failed to start (${exited}); see ${join(dir, 'redis.log')}`);
    }
    if (existsSync(sock) && (await ping(target, 300))) return child;
    await sleep(30);
  }
  child.kill('SIGKILL');
  throw new UnavailableError(`embedded redis-server did not answer within 10 s; see ${join(dir, 'redis.log')}`);
}

/** The ACL file of the embedded Redis, in its folder (0700). */
export const ACL_FILE = 'users.acl';

/**
 * The default user (gcd's own, every right) with the password, then the users a former run
 * saved (nodes'), kept as they were: the server re-applies them from the node tokens at start.
 */
function writeAclFile(dir: string, password: string): void {
  const file = join(dir, ACL_FILE);
  const kept = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('user ') && !l.startsWith('user default '))
    : [];
  const hash = createHash('sha256').update(password).digest('hex');
  const lines = [`user default on #${hash} ~* &* +@all`, ...kept];
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, lines.join('\n') + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

function splitHostPort(bind: string): { host: string; port: number } {
  const i = bind.lastIndexOf(':');
  return { host: bind.slice(0, i), port: Number(bind.slice(i + 1)) };
}

/**
 * The GC_REDIS_URL a node uses (`redis://host:port`), in the redis folder; removed when Redis
 * is not on TCP, so no stale address is handed out. It holds no password: a node signs in as
 * its own ACL user, `node-<name>`, with the password its GC_NODE_TOKEN gives it
 * (src/grid/node-redis-users.ts).
 */
function writeNodeUrl(dir: string, tcp: { host: string; port: number } | undefined): void {
  const file = join(dir, 'node-url');
  if (!tcp) {
    rmSync(file, { force: true });
    return;
  }
  writeFileSync(file, `redis://${tcp.host}:${tcp.port}\n`, { mode: 0o600 });
}

function isRedis(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server');
  } catch {
    return false;
  }
}

async function waitForExit(pidFile: string, timeoutMs: number): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim()) || 0;
  if (!pid || !isRedis(pid)) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (isRedis(pid)) {
    if (Date.now() > deadline) throw new UnavailableError(`the previous redis-server (pid ${pid}) did not exit; stop it and start gcd again`);
    await sleep(20);
  }
}

async function stopServer(target: RedisTarget, pid: number): Promise<void> {
  const client = new Redis({ path: target.path, password: target.password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.call('SHUTDOWN');
  } catch {
    // SHUTDOWN closes the connection under us; that is the success case.
  } finally {
    client.disconnect();
  }
  const deadline = Date.now() + 5000;
  while (pid > 0 && Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(20);
  }
}
