/**
 * The admin quota file (`<configDir>/quotas.yaml`): every key it may hold, once.
 *
 * The tables below are the single source of truth: `quota-reader.ts` validates the file by them and
 * `QUOTA_SCHEMA` (JSON Schema 2020-12, for editors and for docs) is generated from them, so
 * the two cannot drift apart. Values are written as a PBS administrator would: sizes as PBS
 * sizes (`8gb`, `512mb`), durations as `HH:MM:SS`, `7d`, `12h` or whole seconds.
 */

/** How a value is written and checked. */
export type FieldKind =
  /** A whole number >= 0, or `unlimited`. */
  | 'count'
  /** A PBS size with a unit (`8gb`, `512mb`, `2t`), or `unlimited`. Bare numbers are refused. */
  | 'size'
  /** A duration > 0: `HH:MM:SS`, `MM:SS`, `7d`, `1d12h`, `90m`, or whole seconds; or `unlimited`. */
  | 'duration'
  /** A duration >= 0 (0 allowed), never `unlimited`. */
  | 'ttl'
  /** A whole number >= 1 (a default cpu count). */
  | 'ncpus'
  /** A duration > 0 with no `unlimited` (a default walltime). */
  | 'walltime'
  | 'boolean'
  /** PBS priority, a whole number -1024..1023, higher first. */
  | 'priority'
  /** Fair-share weight: a number > 0 (fractions allowed). */
  | 'shares'
  /** The name of a queue defined under `queues`. */
  | 'queueName';

export interface FieldSpec {
  /** The key as written in the file. */
  key: string;
  /** The property of the parsed configuration it lands in. */
  prop: string;
  kind: FieldKind;
  description: string;
}

const limit = (key: string, prop: string, kind: FieldKind, description: string): FieldSpec => ({ key, prop, kind, description });

/** Limits that every entity (default user, user, group, queue, a queue's per-user block, the system) may set. */
export const LIMIT_FIELDS: readonly FieldSpec[] = [
  limit(
    'max_queued',
    'maxQueued',
    'count',
    'Most jobs not yet finished (queued, held, waiting, running, exiting), as PBS counts max_queued. Each subjob of an array counts as one. A submission that would go above it is refused.',
  ),
  limit('max_running', 'maxRunning', 'count', 'Most jobs running at once. A job over it stays queued with a reason such as UserMaxRun (PBS max_run).'),
  limit('max_running_ncpus', 'maxRunningNcpus', 'count', 'Most cpus held by running jobs at once (PBS max_run_res.ncpus, Slurm GrpTRES=cpu).'),
  limit('max_running_mem', 'maxRunningMemMiB', 'size', 'Most memory held by running jobs at once (PBS max_run_res.mem), e.g. 256gb.'),
  limit('max_job_ncpus', 'maxJobNcpus', 'count', 'Most cpus one job may ask for (PBS resources_max.ncpus). Checked at submission.'),
  limit(
    'max_job_mem',
    'maxJobMemMiB',
    'size',
    'Most memory one job may ask for (PBS resources_max.mem), e.g. 64gb. Checked at submission when the job size is known.',
  ),
  limit(
    'max_job_walltime',
    'maxJobWalltimeSec',
    'duration',
    'Longest walltime one job may ask for (PBS resources_max.walltime), e.g. 48:00:00. A job that asks none gets the smallest such maximum.',
  ),
];

/** Live `gc clone` VMs (interactive clones, not the clones that run batch jobs). */
export const CLONE_FIELD: FieldSpec = limit(
  'max_clones',
  'maxClones',
  'count',
  'Most live `gc clone` VMs at once (clones made by hand; batch jobs are counted by max_running).',
);

export const SHARES_FIELD: FieldSpec = limit(
  'shares',
  'shares',
  'shares',
  'Fair-share weight: when cpus are short, users get turns in proportion to their shares. Default 1 (see defaults.shares).',
);

/** A user's /shared volume: the size of the filesystem it lives on (vm/shared-quota.ts). */
export const SHARED_FIELD: FieldSpec = limit(
  'shared_bytes',
  'sharedMiB',
  'size',
  "Size of a user's /shared volume (a filesystem of its own: writes beyond it fail with ENOSPC), e.g. 20gb. Left out: /shared shares the state folder's disk.",
);

/**
 * Bytes one user may hold on the host (issue 13 item 9), per user (`defaults`, `users`).
 * Sizes as everywhere (`20gb`); stored in MiB. `shared_bytes` is SHARED_FIELD (the /shared volume's).
 */
export const BYTE_FIELDS: readonly FieldSpec[] = [
  limit(
    'snapshot_bytes',
    'snapshotMiB',
    'size',
    "Most bytes of snapshots (disk layer and RAM file on tmpfs) held by a user's unfinished jobs. A submission whose snapshot would go above it is refused, and its snapshot dropped.",
  ),
  limit(
    'stageout_bytes',
    'stageoutMiB',
    'size',
    'Most bytes one job of the user brings home by stage-out; above it (as above GC_STAGEOUT_MAX) the rest is kept on the host and counts as undelivered.',
  ),
  limit(
    'undelivered_bytes',
    'undeliveredMiB',
    'size',
    "Most bytes of a user's output kept on the host (output that could not be delivered, stage-out excess). Output that would go above it is dropped, and the job's comment says so.",
  ),
  limit(
    'headnode_disk_bytes',
    'headnodeDiskMiB',
    'size',
    "Most bytes of disk (the virtual sizes, which a qcow2 never grows past) of all a user's headnodes together. A `gc headnode create` that would go above it is refused.",
  ),
];

/** Keys of `defaults:` (PBS u:PBS_GENERIC, every user without a value of their own). */
export const DEFAULTS_FIELDS: readonly FieldSpec[] = [...LIMIT_FIELDS, CLONE_FIELD, SHARES_FIELD, ...BYTE_FIELDS, SHARED_FIELD];
/** Keys of `users.<name>:` (PBS u:<name>). */
export const USER_FIELDS: readonly FieldSpec[] = [...LIMIT_FIELDS, CLONE_FIELD, SHARES_FIELD, ...BYTE_FIELDS, SHARED_FIELD];
/** Keys of `groups.<name>:` (PBS g:<name>); counts are the sum over the group's members. */
export const GROUP_FIELDS: readonly FieldSpec[] = [...LIMIT_FIELDS, CLONE_FIELD, SHARES_FIELD];
/** Keys of `system:` (PBS o:PBS_ALL): totals over everybody. */
export const SYSTEM_FIELDS: readonly FieldSpec[] = [...LIMIT_FIELDS, CLONE_FIELD];
/** Keys of `queues.<name>.per_user:`: limits for each user inside that queue (Slurm QOS MaxJobsPerUser). */
export const PER_USER_FIELDS: readonly FieldSpec[] = LIMIT_FIELDS;

/** Keys of `queues.<name>:` besides its limits. `per_user` is a nested block of PER_USER_FIELDS. */
export const QUEUE_OWN_FIELDS: readonly FieldSpec[] = [
  limit('enabled', 'enabled', 'boolean', 'The queue accepts new jobs (qmgr enabled). Default true.'),
  limit('started', 'started', 'boolean', 'Jobs of the queue may start (qmgr started); false keeps them queued with reason QueueStopped. Default true.'),
  limit('priority', 'priority', 'priority', 'Queue priority -1024..1023 (default 0): jobs of a higher-priority queue are picked first, before fair share.'),
  limit('default_walltime', 'defaultWalltimeSec', 'walltime', 'Walltime given to a job that asks none (PBS resources_default.walltime).'),
  limit('default_ncpus', 'defaultNcpus', 'ncpus', 'Cpus given to a job that asks none (PBS resources_default.ncpus). Default 1.'),
];
export const QUEUE_FIELDS: readonly FieldSpec[] = [...QUEUE_OWN_FIELDS, ...LIMIT_FIELDS];

/** Top-level scalar keys. */
export const TOP_FIELDS: readonly FieldSpec[] = [
  limit('default_queue', 'defaultQueue', 'queueName', 'The queue of a job submitted without -q. Required when more than one queue is defined.'),
  limit(
    'history_ttl',
    'historyTtlSec',
    'ttl',
    'How long finished jobs stay visible to gcqstat -x (PBS job_history_duration). Default 14d; 0 drops them at once.',
  ),
];

/** Every top-level key, in the order the documentation lists them. */
export const TOP_KEYS = ['defaults', 'system', 'users', 'groups', 'queues', 'default_queue', 'history_ttl', 'resources'] as const;

/** Names of users and groups (keys under users:/groups:). */
export const ENTITY_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.@-]*$/;
/** Queue names, as PBS allows them: a letter, then letters, digits, `_`, `.`, `-`. */
export const QUEUE_NAME = /^[A-Za-z][A-Za-z0-9_.-]*$/;
/** A PBS size with a unit: N followed by k|m|g|t|p and/or b|w (a bare number would be bytes: refused). */
export const SIZE_WITH_UNIT = /^\d+(?:[kmgtp][bw]?|[bw])$/i;
/** `HH:MM:SS`, `MM:SS`, or unit parts `1d12h30m`, `90s`, `2w`. */
export const DURATION_TEXT = /^(?:\d+(?::\d+){1,2}(?:\.\d+)?|(?:\d+[smhdw])+)$/i;

/** Default for history_ttl: two weeks, as PBS job_history_duration. */
export const DEFAULT_HISTORY_TTL_SEC = 14 * 24 * 3600;

/**
 * Names admins bring from PBS or Slurm, and what they are called here: used for did-you-mean
 * suggestions when they are too far from the right key for the edit-distance check.
 */
export const KEY_ALIASES: Readonly<Record<string, string>> = {
  max_run: 'max_running',
  max_jobs: 'max_running',
  maxjobs: 'max_running',
  max_submit: 'max_queued',
  max_submit_jobs: 'max_queued',
  maxsubmitjobs: 'max_queued',
  max_queue: 'max_queued',
  max_run_res_ncpus: 'max_running_ncpus',
  max_run_ncpus: 'max_running_ncpus',
  max_ncpus: 'max_running_ncpus',
  max_cpus: 'max_running_ncpus',
  max_run_mem: 'max_running_mem',
  max_mem: 'max_running_mem',
  ncpus: 'max_job_ncpus',
  mem: 'max_job_mem',
  walltime: 'max_job_walltime',
  max_walltime: 'max_job_walltime',
  max_wall: 'max_job_walltime',
  clones: 'max_clones',
  share: 'shares',
  fairshare: 'shares',
  fair_share: 'shares',
  pbs_generic: 'defaults',
  generic: 'defaults',
  default: 'defaults',
  pbs_all: 'system',
  all: 'system',
  server: 'system',
  user: 'users',
  group: 'groups',
  queue: 'queues',
  peruser: 'per_user',
  user_limits: 'per_user',
  job_history_duration: 'history_ttl',
  resources_default_walltime: 'default_walltime',
  resources_default_ncpus: 'default_ncpus',
};

// ------------------------------------------------------------------- JSON Schema

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const UNLIMITED: Json = { const: 'unlimited', description: 'No limit; overrides an inherited value.' };

function fieldSchema(f: FieldSpec): Json {
  const d = f.description;
  switch (f.kind) {
    case 'count':
      return { description: d, anyOf: [{ type: 'integer', minimum: 0 }, UNLIMITED] };
    case 'ncpus':
      return { description: d, type: 'integer', minimum: 1 };
    case 'size':
      return { description: d, anyOf: [{ type: 'string', pattern: SIZE_WITH_UNIT.source }, UNLIMITED] };
    case 'duration':
      return { description: d, anyOf: [{ type: 'integer', minimum: 1 }, { type: 'string', pattern: DURATION_TEXT.source }, UNLIMITED] };
    case 'walltime':
      return {
        description: d,
        anyOf: [
          { type: 'integer', minimum: 1 },
          { type: 'string', pattern: DURATION_TEXT.source },
        ],
      };
    case 'ttl':
      return {
        description: d,
        anyOf: [
          { type: 'integer', minimum: 0 },
          { type: 'string', pattern: DURATION_TEXT.source },
        ],
      };
    case 'boolean':
      return { description: d, type: 'boolean' };
    case 'priority':
      return { description: d, type: 'integer', minimum: -1024, maximum: 1023 };
    case 'shares':
      return { description: d, type: 'number', exclusiveMinimum: 0 };
    case 'queueName':
      return { description: d, type: 'string', pattern: QUEUE_NAME.source };
  }
}

function block(description: string, fields: readonly FieldSpec[], extra: Record<string, Json> = {}): Json {
  const properties: Record<string, Json> = {};
  for (const f of fields) properties[f.key] = fieldSchema(f);
  return { type: 'object', description, additionalProperties: false, properties: { ...properties, ...extra } };
}

function named(description: string, pattern: RegExp, ref: string): Json {
  return { type: 'object', description, propertyNames: { pattern: pattern.source }, additionalProperties: { $ref: ref } };
}

/**
 * JSON Schema (draft 2020-12) of quotas.yaml. Beyond what a schema can say, the loader also
 * refuses contradictions: max_running above max_queued in one entity (a user's own values
 * merged with `defaults`), max_job_ncpus above max_running_ncpus, max_job_mem above
 * max_running_mem, a queue default above a maximum that applies to it, an unknown default_queue.
 */
export const QUOTA_SCHEMA: Json = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'copper:quotas.yaml',
  title: 'Copper quotas and queues',
  description:
    'Admin limits (PBS qmgr max_queued/max_run/resources_max), queues and fair-share weights. Every key is optional; an empty file means no limits and one queue-less system.',
  type: 'object',
  additionalProperties: false,
  properties: {
    defaults: block('The default user (PBS u:PBS_GENERIC): each limit applies to every user who has no value of their own for it.', DEFAULTS_FIELDS),
    system: block('The whole system (PBS o:PBS_ALL): totals over all users.', SYSTEM_FIELDS),
    users: named('Per-user limits (PBS u:<name>); a key set here replaces the same key of defaults for that user.', ENTITY_NAME, '#/$defs/user'),
    groups: named('Per-group limits (PBS g:<name>), counted over all the members of the group together.', ENTITY_NAME, '#/$defs/group'),
    queues: named('Queues (qsub -q). When none is defined any queue name is accepted and no queue limit applies.', QUEUE_NAME, '#/$defs/queue'),
    ...Object.fromEntries(TOP_FIELDS.map((f) => [f.key, fieldSchema(f)])),
    resources: {
      description:
        'Custom -l resources jobs may ask for (PBS custom resources, e.g. licences): recorded in Resource_List, not enforced. Any other unknown resource is refused at gcqsub.',
      type: 'array',
      items: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
    },
  },
  $defs: {
    user: block('Limits and shares of one user.', USER_FIELDS),
    group: block('Limits of one group (sums over its members) and its shares.', GROUP_FIELDS),
    queue: block('One queue: its state, defaults, limits on the whole queue, and per-user limits inside it.', QUEUE_FIELDS, {
      per_user: block('Limits for each user inside this queue (each user separately).', PER_USER_FIELDS),
    }),
  },
};
