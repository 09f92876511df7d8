import { hostname } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * Where things live and how the daemon is reached. Everything has a default so a fresh
 * machine needs no configuration; each default can be moved by one environment variable.
 */
export interface Settings {
  /** Root of all durable state: Redis data, headnodes, snapshots, job output. */
  stateDir: string;
  /** Guest RAM files live on tmpfs so that guest memory is never written back to disk. */
  ramDir: string;
  /** External Redis, or undefined for the embedded one gcd starts. */
  redisUrl: string | undefined;
  /** PBS "server" part of job ids: `<seq>.<server>`. */
  serverName: string;
  /** The admin API socket on the host. */
  socketPath: string;
  /** Prefix of every Redis key Copper owns (BullMQ keys included). */
  keyPrefix: string;
  /** Admin config folder (quotas, queues). */
  configDir: string;
  /** GC_METRICS_ADDR: where Prometheus scrapes GET /metrics (HOST:PORT), or undefined: off. */
  metricsAddr: string | undefined;
  /** GC_ACCOUNTING_DIR: PBS accounting files (YYYYMMDD); undefined when set to "off". */
  accountingDir: string | undefined;
}

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const stateDir = resolve(env.GC_STATE_DIR ?? '/var/lib/copper');
  return {
    stateDir,
    ramDir: resolve(env.GC_RAM_DIR ?? join('/dev/shm/copper', stateDir.replace(/[^A-Za-z0-9]+/g, '_'))),
    redisUrl: env.GC_REDIS_URL || undefined,
    serverName: env.GC_SERVER_NAME ?? (hostname().split('.')[0] || 'copper'),
    socketPath: resolve(env.GC_SOCKET ?? join(stateDir, 'gcd.sock')),
    keyPrefix: env.GC_KEY_PREFIX ?? 'copper',
    configDir: resolve(env.GC_CONFIG_DIR ?? join(stateDir, 'config')),
    metricsAddr: env.GC_METRICS_ADDR || undefined,
    accountingDir: env.GC_ACCOUNTING_DIR === 'off' ? undefined : resolve(env.GC_ACCOUNTING_DIR || join(stateDir, 'accounting')),
  };
}
