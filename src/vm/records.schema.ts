/** Schemas of a snapshot's `meta.json` and a clone's record, checked whenever one is read. */
import { z } from 'zod';
import type { CloneRecord } from './clones/types.js';
import type { FrozenVm, SnapshotMeta } from './snapshots/types.js';
import type { ClusterNic } from './vm-args.js';

const ACCEL = z.enum(['kvm', 'tcg']);

const count = z.number().int().nonnegative();

const CLUSTER_NIC: z.ZodType<ClusterNic> = z.discriminatedUnion('kind', [
  z.looseObject({ kind: z.literal('mcast'), mcast: z.string(), mac: z.string(), localaddr: z.string().optional() }),
  z.looseObject({ kind: z.literal('tap'), ifname: z.string(), mac: z.string() }),
  z.looseObject({ kind: z.literal('isolated'), mac: z.string() }),
]);

const FROZEN_VM: z.ZodType<FrozenVm> = z.looseObject({
  accel: ACCEL,
  memMiB: count,
  vcpus: count,
  maxVcpus: count.optional(),
  maxMemMiB: count.optional(),
  memSlots: count.optional(),
  machine: z.string().optional(),
  cpu: z.string().optional(),
  kernel: z.string().optional(),
  initrd: z.string().optional(),
  append: z.string().optional(),
  tcgTbMiB: count.optional(),
  clusterNic: CLUSTER_NIC.optional(),
  sharedSftp: z.looseObject({ dir: z.string() }).optional(),
  uid: z.number().int().positive().optional(),
});

export const SNAPSHOT_META: z.ZodType<SnapshotMeta> = z.looseObject({
  version: z.literal(1),
  id: z.string().min(1),
  headnode: z.string().min(1),
  owner: z.string().min(1),
  group: z.string().min(1),
  createdAt: z.number(),
  pauseMs: z.number().nonnegative(),
  vm: FROZEN_VM,
  frozenAtGuestMs: z.number().positive().optional(),
});

export const CLONE_RECORD: z.ZodType<CloneRecord> = z.looseObject({
  version: z.literal(1),
  cloneId: z.string().min(1),
  snapshotId: z.string().min(1),
  headnode: z.string().min(1),
  createdAt: z.number(),
});
