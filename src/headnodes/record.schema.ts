/** Schema of `headnode.json` (HeadnodeRecord), checked whenever a record is read. */
import { z } from 'zod';
import type { HeadnodeRecord } from './record.js';
import type { HeadnodeSpec } from './types.js';

const count = z.number().int().nonnegative();

export const ACCEL = z.enum(['kvm', 'tcg']);

export const HEADNODE_SPEC: z.ZodType<HeadnodeSpec> = z.looseObject({
  name: z.string().min(1),
  owner: z.string().min(1),
  group: z.string().min(1),
  memMiB: count,
  vcpus: count,
  maxVcpus: count.optional(),
  maxMemMiB: count.optional(),
  diskGiB: count,
  image: z.string().optional(),
  kernel: z.string().optional(),
  initrd: z.string().optional(),
  sshKeys: z.array(z.string()).optional(),
});

/** Loose objects: a field this schema does not know is kept, so a read-modify-write never drops it. */
export const HEADNODE_RECORD: z.ZodType<HeadnodeRecord> = z.looseObject({
  version: z.literal(1),
  spec: HEADNODE_SPEC,
  createdAt: z.number(),
  incarnation: z.string().optional(),
  boot: z.looseObject({
    base: z.string(),
    kernel: z.string().optional(),
    initrd: z.string().optional(),
    append: z.string().optional(),
  }),
  diskGen: count,
  want: z.enum(['running', 'stopped']),
  accel: ACCEL.optional(),
  startedAt: z.number().optional(),
  crash: z.looseObject({ reason: z.string(), at: z.number() }).optional(),
  sshPort: z.number().int().min(1).max(65535).optional(),
  sshHostKey: z.string().optional(),
  vmUid: z.number().int().positive().optional(),
});
