/** Schema of `clusters/registry.json`, checked when gcd loads it. */
import { z } from 'zod';
import type { CloneEntry, ClusterEntry, RegistryFile, SnapshotEntry } from './registry.js';

const count = z.number().int().nonnegative();

const CLONE_ENTRY: z.ZodType<CloneEntry> = z.looseObject({
  id: count,
  vmId: z.string().min(1),
  generation: count,
  parent: count,
  snapshotId: z.string().min(1),
  diskBase: z.string().min(1),
  createdAt: z.number(),
  expiresAt: z.number().optional(),
  state: z.enum(['creating', 'running', 'killing']),
});

const CLUSTER_ENTRY: z.ZodType<ClusterEntry> = z.looseObject({
  headnode: z.string().min(1),
  owner: z.string().min(1),
  group: z.string().min(1),
  network: count,
  clones: z.array(CLONE_ENTRY),
});

const SNAPSHOT_ENTRY: z.ZodType<SnapshotEntry> = z.looseObject({
  id: z.string().min(1),
  headnode: z.string().min(1),
  parent: z.string().optional(),
  createdAt: z.number(),
});

export const REGISTRY_FILE: z.ZodType<RegistryFile> = z.looseObject({
  version: z.literal(1),
  clusters: z.array(CLUSTER_ENTRY),
  snapshots: z.array(SNAPSHOT_ENTRY),
});
