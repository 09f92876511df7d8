/**
 * The shape of a parsed quotas file (`QuotaConfig`) and the few helpers every reader of it
 * shares: the empty configuration, freezing, and writing a limit back as the file would.
 *
 * A limit left out is `undefined` (inherit / no limit); a limit written as `unlimited` is
 * `Infinity` (it overrides what would be inherited).
 */
import { formatSize, formatWalltime } from '../pbs/units.js';
import { DEFAULT_HISTORY_TTL_SEC } from './schema.js';

/** Limits any entity may set. undefined: not set here; Infinity: written `unlimited`. */
export interface Limits {
  /** Jobs not finished yet (queued, held, waiting, running, exiting). */
  maxQueued?: number;
  maxRunning?: number;
  maxRunningNcpus?: number;
  maxRunningMemMiB?: number;
  maxJobNcpus?: number;
  maxJobMemMiB?: number;
  maxJobWalltimeSec?: number;
}

/** A user, a group, or the default user. */
export interface EntityLimits extends Limits {
  /** Live `gc clone` VMs. */
  maxClones?: number;
  /** Fair-share weight (> 0). */
  shares?: number;
  /** Byte quotas of one user, MiB (schema.ts BYTE_FIELDS; defaults and users only). */
  snapshotMiB?: number;
  stageoutMiB?: number;
  undeliveredMiB?: number;
  /** Virtual disk sizes of all the user's headnodes (headnodes/disk-quota.ts). */
  headnodeDiskMiB?: number;
  /** /shared (the shared-volume sandbox enforces it). */
  sharedMiB?: number;
}

export type SystemLimits = Omit<EntityLimits, 'shares'>;

export interface QueueConfig extends Limits {
  name: string;
  /** Accepts new jobs. */
  enabled: boolean;
  /** Its jobs may start. */
  started: boolean;
  /** -1024..1023, higher first. */
  priority: number;
  defaultWalltimeSec?: number;
  defaultNcpus?: number;
  /** Limits for each user inside this queue. */
  perUser: Limits;
}

export interface QuotaConfig {
  /** The file it was read from (or a label such as `(built-in defaults)`). */
  source: string;
  /** u:PBS_GENERIC. */
  defaults: EntityLimits;
  /** o:PBS_ALL. */
  system: SystemLimits;
  users: ReadonlyMap<string, EntityLimits>;
  groups: ReadonlyMap<string, EntityLimits>;
  /** Empty: no queue is defined, any queue name is accepted and no queue limit applies. */
  queues: ReadonlyMap<string, QueueConfig>;
  /** The queue of a job submitted without -q; set whenever `queues` is not empty. */
  defaultQueue?: string;
  historyTtlSec: number;
  /** Custom `-l` resources jobs may ask for (recorded, not enforced); others are refused. */
  resources: readonly string[];
}

/** The file name QuotaWatcher reads inside the config folder. */
export const QUOTA_FILE_NAME = 'quotas.yaml';

/** No limits, no queues: what a machine without a quotas file runs with. */
export function emptyQuotaConfig(source = '(built-in defaults)'): QuotaConfig {
  return freezeConfig({
    source,
    defaults: {},
    system: {},
    users: new Map(),
    groups: new Map(),
    queues: new Map(),
    historyTtlSec: DEFAULT_HISTORY_TTL_SEC,
    resources: [],
  });
}

/** Freezes a configuration and everything in it: readers share one object. */
export function freezeConfig(c: QuotaConfig): QuotaConfig {
  Object.freeze(c.defaults);
  Object.freeze(c.system);
  Object.freeze(c.resources);
  for (const v of c.users.values()) Object.freeze(v);
  for (const v of c.groups.values()) Object.freeze(v);
  for (const q of c.queues.values()) Object.freeze(Object.freeze(q).perUser);
  return Object.freeze(c);
}

/** A limit as the file would write it: `unlimited`, `8gb`, `01:00:00`, `10`. */
export function formatLimit(kind: 'count' | 'size' | 'duration', value: number): string {
  if (value === Infinity) return 'unlimited';
  if (kind === 'size') return formatSize(value);
  if (kind === 'duration') return formatWalltime(value);
  return String(value);
}
