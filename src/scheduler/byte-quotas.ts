/**
 * Byte quotas of one user (issue 13 item 9; quotas.yaml `snapshot_bytes`, `stageout_bytes`,
 * `undelivered_bytes`, in `defaults` and `users`): what a user holds on the host's disk and
 * tmpfs is bounded, so one user cannot fill them for everybody. A refusal names the quota.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EntityLimits, QuotaConfig } from '../config/quotas.js';
import { formatLimit } from '../config/quotas.js';
import type { Driver, SnapshotInfo } from '../drivers/driver.js';
import { QuotaError } from '../errors.js';
import { treeBytes } from '../tree-bytes.js';
import { KeyedLock } from '../vm/keyed-lock.js';

export { treeBytes };
import type { JobRecord, JobSpec } from '../queue/job.js';

const MiB = 1024 * 1024;

type ByteProp = 'snapshotMiB' | 'stageoutMiB' | 'undeliveredMiB' | 'headnodeDiskMiB';
const KEY: Record<ByteProp, string> = {
  snapshotMiB: 'snapshot_bytes',
  stageoutMiB: 'stageout_bytes',
  undeliveredMiB: 'undelivered_bytes',
  headnodeDiskMiB: 'headnode_disk_bytes',
};

/** The user's limit in bytes (own value, else `defaults`); undefined or Infinity: none. */
export function userBytes(cfg: QuotaConfig, user: string, prop: ByteProp): number | undefined {
  const own: EntityLimits | undefined = cfg.users.get(user);
  const mib = own?.[prop] ?? cfg.defaults[prop];
  return mib === undefined || mib === Infinity ? undefined : mib * MiB;
}

/** "512mb" as the file writes it, for bytes. */
export function sizeText(bytes: number): string {
  return bytes >= MiB ? formatLimit('size', Math.ceil(bytes / MiB)) : `${Math.ceil(bytes / 1024)}kb`;
}

/** The QuotaError of one byte quota, one line. */
export function byteQuotaError(prop: ByteProp, user: string, limit: number, holds: string, adding: number): QuotaError {
  const key = KEY[prop];
  const max = formatLimit('size', limit / MiB);
  return new QuotaError(`would exceed ${key}=${max} for user ${user} (${holds}, adding ${sizeText(adding)})`, {
    limit: key,
    max,
    entity: `user ${user}`,
    amount: adding,
  });
}

/** A snapshot's size and owner, as the snapshot check needs them. */
export interface HeldSnapshot {
  id: string;
  bytes: number;
}

/**
 * Refuse new snapshots that would take `user` above snapshot_bytes. `held`: the distinct
 * snapshots the user's unfinished jobs hold now; `fresh`: the ones this submission took.
 */
export function checkSnapshotBytes(cfg: QuotaConfig, user: string, held: HeldSnapshot[], fresh: HeldSnapshot[]): void {
  const limit = userBytes(cfg, user, 'snapshotMiB');
  if (limit === undefined) return;
  const has = held.reduce((s, h) => s + h.bytes, 0);
  const adding = fresh.reduce((s, h) => s + h.bytes, 0);
  if (has + adding > limit) {
    throw byteQuotaError('snapshotMiB', user, limit, `holds ${sizeText(has)} in ${held.length} snapshot${held.length === 1 ? '' : 's'}`, adding);
  }
}

/** The file in a job's undelivered folder naming its user (the record may have expired). */
export const OWNER_FILE = '.user';

/**
 * Bytes of output kept on the host for `user`: the folders under `undeliveredDir` (one per
 * job) whose OWNER_FILE names the user, or, without one, whose job `ownerOf` says is theirs.
 */
export async function undeliveredBytes(undeliveredDir: string, user: string, ownerOf: (jobId: string) => Promise<string | undefined>): Promise<number> {
  let names: string[];
  try {
    names = await readdir(undeliveredDir);
  } catch {
    return 0;
  }
  let total = 0;
  for (const id of names) {
    const dir = join(undeliveredDir, id);
    const owner = await readFile(join(dir, OWNER_FILE), 'utf8').then(
      (t) => t.trim(),
      () => ownerOf(id),
    );
    if (owner === user) total += await treeBytes(dir);
  }
  return total;
}

/** The snapshot_bytes check of a submission: what the user's unfinished jobs hold, plus the new snapshots. */
export class SnapshotBytesCheck {
  /** Sizes of snapshots seen (a snapshot does not grow once taken). */
  private readonly sizes = new Map<string, number>();

  constructor(
    private readonly store: { list(): Promise<JobRecord[]> },
    private readonly driver: Pick<Driver, 'snapshotBytes'>,
    private readonly quotas: () => QuotaConfig,
  ) {}

  async check(specs: JobSpec[], snapshots: SnapshotInfo[]): Promise<void> {
    const cfg = this.quotas();
    for (const user of new Set(specs.map((s) => s.user))) {
      if (userBytes(cfg, user, 'snapshotMiB') === undefined) continue;
      const heldIds = new Set<string>();
      for (const j of await this.store.list()) if (j.spec.user === user && j.state !== 'F' && j.snapshotId) heldIds.add(j.snapshotId);
      if (this.sizes.size > 10_000) this.sizes.clear();
      const held: HeldSnapshot[] = [];
      for (const id of heldIds) {
        const bytes = this.sizes.get(id) ?? (await this.driver.snapshotBytes?.(id));
        if (bytes === undefined) continue;
        this.sizes.set(id, bytes);
        held.push({ id, bytes });
      }
      const mine = new Set(specs.filter((s) => s.user === user).map((s) => s.headnode));
      const fresh = snapshots.filter((s) => mine.has(s.headnode) && s.bytes !== undefined && !heldIds.has(s.id)).map((s) => ({ id: s.id, bytes: s.bytes! }));
      checkSnapshotBytes(cfg, user, held, fresh);
    }
  }
}

const keeping = new KeyedLock();

/**
 * `fn` (an undeliveredRoom check and the write it allows) alone for `user` in this gcd: two
 * jobs of one user ending at once cannot both pass on a count that holds neither's output.
 */
export function keepingOutput<T>(user: string, fn: () => Promise<T>): Promise<T> {
  return keeping.run(user, fn);
}

/**
 * Room for `adding` more bytes of `user`'s output on the host under undelivered_bytes: a
 * QuotaError when it would go above, else undefined. `ownerOf` names the user of a job folder
 * that has no OWNER_FILE (one made before this check existed).
 */
export async function undeliveredRoom(
  cfg: QuotaConfig,
  user: string,
  undeliveredDir: string,
  adding: number,
  ownerOf: (jobId: string) => Promise<string | undefined>,
  exceptJob?: string,
): Promise<QuotaError | undefined> {
  const limit = userBytes(cfg, user, 'undeliveredMiB');
  if (limit === undefined) return undefined;
  let has = await undeliveredBytes(undeliveredDir, user, ownerOf);
  // What this job already put there is counted in `adding` by the caller, not twice.
  if (exceptJob !== undefined) has -= await treeBytes(join(undeliveredDir, exceptJob));
  if (has + adding <= limit) return undefined;
  return byteQuotaError('undeliveredMiB', user, limit, `holds ${sizeText(has)} of output on the host`, adding);
}
