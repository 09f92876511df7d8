/**
 * headnode_disk_bytes (issue 13 item 9): the disks of all a user's headnodes together. A
 * headnode's disk is a qcow2 overlay created with a virtual size of diskGiB, which it can never
 * grow past, so the sum of the virtual sizes bounds what the user's headnodes can ever write to
 * the host's disk, whatever the guest does. Checked by `gc headnode create` (the only command
 * that makes or grows a headnode disk), before anything is made.
 */
import type { QuotaConfig } from '../config/quotas.js';
import { byteQuotaError, sizeText, userBytes } from '../scheduler/byte-quotas.js';
import type { HeadnodeSpec } from './types.js';

const GiB = 1024 ** 3;

/** A user's headnode_disk_bytes in bytes (own value, else `defaults`); undefined: none. */
export type HeadnodeDiskLimit = (owner: string) => number | undefined;

/** The limit as quotas.yaml says it now (read at each create, so a reload applies at once). */
export function headnodeDiskLimit(quotas: () => QuotaConfig): HeadnodeDiskLimit {
  return (owner) => userBytes(quotas(), owner, 'headnodeDiskMiB');
}

/** The most bytes one headnode's disk can hold: its virtual size. */
export function headnodeDiskBytes(spec: Pick<HeadnodeSpec, 'diskGiB'>): number {
  return spec.diskGiB * GiB;
}

/** What `owner`'s headnodes hold, and how many there are. */
export function ownerDiskUse(all: ReadonlyArray<Pick<HeadnodeSpec, 'owner' | 'diskGiB'>>, owner: string): { bytes: number; count: number } {
  const mine = all.filter((h) => h.owner === owner);
  return { bytes: mine.reduce((s, h) => s + headnodeDiskBytes(h), 0), count: mine.length };
}

/**
 * Refuse a new headnode disk that would take its owner above headnode_disk_bytes: a one-line
 * QuotaError naming the quota, its limit and what the owner holds now.
 */
export function checkHeadnodeDisk(
  limit: number | undefined,
  all: ReadonlyArray<Pick<HeadnodeSpec, 'owner' | 'diskGiB'>>,
  spec: Pick<HeadnodeSpec, 'owner' | 'diskGiB'>,
): void {
  if (limit === undefined) return;
  const use = ownerDiskUse(all, spec.owner);
  const adding = headnodeDiskBytes(spec);
  if (use.bytes + adding <= limit) return;
  const holds = use.count === 0 ? 'holds no headnode' : `holds ${sizeText(use.bytes)} in ${use.count} headnode${use.count === 1 ? '' : 's'}`;
  throw byteQuotaError('headnodeDiskMiB', spec.owner, limit, holds, adding);
}
