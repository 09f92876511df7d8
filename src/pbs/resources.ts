/**
 * `-l` resource lists: `walltime=`, `ncpus=`, `mem=`, PBS Pro `select=` chunks, Torque
 * `nodes=N:ppn=C`, `procs=`, `vmem`/`pmem`/`pvmem`, and the resources old scripts carry.
 * A Copper job runs in one clone VM, so chunks are summed into one CPU count and one
 * memory size; the chunk list is kept for the record. Resources with no meaning here are
 * recorded and named in a warning; unknown ones are refused unless the admin declared them.
 */
import { UsageError } from '../errors.js';
import type { Resources } from '../queue/job.js';
import { parseSize, parseWalltime } from './units.js';

/** One `select` chunk group (or Torque node group): `count` chunks of this shape. */
export interface ChunkRequest {
  count: number;
  ncpus: number;
  memMiB?: number;
  mpiprocs?: number;
  ompthreads?: number;
}

/** What `-l` options asked for; each key set only when given (later sources override per key). */
export interface ResourceRequest {
  walltimeSec?: number;
  ncpus?: number;
  memMiB?: number;
  /** Torque/PBS memory forms used when `mem` is absent: vmem for the job, pmem/pvmem per CPU. */
  vmemMiB?: number;
  pmemMiB?: number;
  pvmemMiB?: number;
  /** From `select=` or Torque `nodes=`; the two replace each other. */
  chunks?: ChunkRequest[];
  chunkSyntax?: 'select' | 'nodes';
  place?: string;
  /** Recorded as asked for gcqstat's Resource_List: every resource other than the ones above. */
  extras?: Record<string, string>;
}

/** The resolved request: what the job gets, plus notes for the user. */
export interface ResolvedResources {
  resources: Resources;
  walltimeSec?: number;
  chunks?: ChunkRequest[];
  warnings: string[];
}

/** How a `-l` list is read: the admin's custom resources, and where notes go. */
export interface ResourceParseOptions {
  /** Resource names the admin declared (quotas.yaml `resources:`): accepted and recorded. */
  custom?: readonly string[];
  /** One-line notes for the user (what Copper does instead). */
  warnings?: string[];
}

export const SUPPORTED_RESOURCES = ['walltime', 'ncpus', 'mem', 'select', 'nodes', 'procs', 'vmem', 'pmem', 'pvmem', 'place'] as const;

/**
 * Resources PBS Pro, Torque and Moab scripts carry that mean nothing for one clone VM:
 * accepted, recorded in Resource_List and named in a warning saying what Copper does instead.
 */
const RECORDED: Readonly<Record<string, string>> = {
  cput: 'not enforced; the job is limited by its walltime',
  pcput: 'not enforced; the job is limited by its walltime',
  file: 'not enforced; the clone\'s disk is a copy of the headnode\'s',
  software: 'the clone has the software installed in your headnode',
  host: 'ignored; the job runs in a clone of your headnode',
  vnode: 'ignored; the job runs in a clone of your headnode',
  arch: 'ignored; the clone has the host\'s architecture',
  nice: 'ignored; the clone\'s CPUs are the job\'s own',
  other: 'ignored',
  feature: 'ignored; every clone has the same features',
  partition: 'ignored; Copper has no partitions',
  qos: 'ignored; use -q and -p',
  naccesspolicy: 'ignored; a clone is never shared',
  epilogue: 'ignored; Copper runs no epilogue scripts',
  prologue: 'ignored; Copper runs no prologue scripts',
  signal: 'ignored; gcqdel sends TERM, then KILL',
  flags: 'ignored',
  tpn: 'ignored; the job runs in one clone VM',
  mpiprocs: 'recorded; the job runs in one clone VM',
  ompthreads: 'recorded; OMP_NUM_THREADS is set from ncpus',
};

/** GPUs and other devices: no host has them, so a job asking them could never run. */
const DEVICES = new Set(['ngpus', 'gpus', 'naccelerators', 'accelerator', 'accelerator_model', 'gres', 'mic', 'mics']);

const CHUNK_RESOURCES = ['ncpus', 'mem', 'vmem', 'mpiprocs', 'ompthreads'] as const;
const PLACE_WORDS = new Set(['free', 'pack', 'scatter', 'vscatter', 'excl', 'shared', 'exclhost']);
/** Enough for any VM; stops absurd values before they reach the scheduler. */
const MAX_CPUS = 100_000;

function positiveInt(text: string, what: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > MAX_CPUS) {
    throw new UsageError(`-l ${what}: "${text}" must be a whole number from 1 to ${MAX_CPUS}`);
  }
  return Number(text);
}

function deviceError(name: string, where: string): UsageError {
  return new UsageError(`${where}: "${name}" asks for GPUs or accelerators, which no Copper host has`);
}

function unknownResource(name: string, where: string): UsageError {
  return new UsageError(`${where}: unknown resource "${name}"; an administrator can declare it in quotas.yaml (resources: [${name}])`);
}

function isCustom(name: string, opts: ResourceParseOptions): boolean {
  return opts.custom?.includes(name) === true;
}

/** `N:ncpus=C:mem=M:mpiprocs=P:ompthreads=T` (N optional, default 1). */
function parseChunk(text: string, opts: ResourceParseOptions): ChunkRequest {
  const parts = text.split(':');
  const count = /^\d+$/.test(parts[0] as string) ? positiveInt(parts.shift() as string, 'select count') : 1;
  const chunk: ChunkRequest = { count, ncpus: 1 };
  for (const part of parts) {
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (value === '') throw new UsageError(`-l select: ${name} needs a value, e.g. ${name}=4`);
    if (name === 'mem' || name === 'vmem') {
      // vmem stands for mem when the chunk gives no mem (a clone has no swap).
      const mib = parseSize(value, `-l select ${name}`);
      if (name === 'mem' || chunk.memMiB === undefined) chunk.memMiB = mib;
    } else if ((CHUNK_RESOURCES as readonly string[]).includes(name)) {
      chunk[name as 'ncpus' | 'mpiprocs' | 'ompthreads'] = positiveInt(value, `select ${name}`);
    } else if (isCustom(name, opts)) {
      continue;
    } else if (DEVICES.has(name)) {
      throw deviceError(name, '-l select');
    } else if (RECORDED[name] !== undefined) {
      opts.warnings?.push(`-l select ${name}=${value}: ${RECORDED[name]}`);
    } else {
      throw unknownResource(name, '-l select');
    }
  }
  return chunk;
}

/**
 * Torque `N[:ppn=C][:property...]` or `host[:ppn=C]`: a host name counts as one node,
 * and host names and node properties are ignored with a warning (a clone has no node list).
 */
function parseNodeSpec(text: string, opts: ResourceParseOptions): ChunkRequest {
  const [first, ...rest] = text.split(':');
  let count = 1;
  if (/^\d+$/.test(first)) count = positiveInt(first, 'nodes');
  else opts.warnings?.push(`-l nodes: host "${first}" ignored; the job runs in a clone of your headnode`);
  const chunk: ChunkRequest = { count, ncpus: 1 };
  for (const part of rest) {
    const m = /^([A-Za-z_]+)=(.*)$/.exec(part);
    if (m && m[1] === 'ppn') chunk.ncpus = positiveInt(m[2], 'nodes ppn');
    else if (m && DEVICES.has(m[1]) && !isCustom(m[1], opts)) throw deviceError(m[1], '-l nodes');
    else opts.warnings?.push(`-l nodes: node property "${part}" ignored; every clone is alike`);
  }
  return chunk;
}

function checkPlace(value: string): void {
  for (const word of value.split(':')) {
    if (!PLACE_WORDS.has(word) && !/^group=\w+$/.test(word)) {
      throw new UsageError(`-l place: unknown placement "${word}" (use free, pack, scatter, vscatter, excl, shared, exclhost or group=RES)`);
    }
  }
}

function record(req: ResourceRequest, name: string, value: string): void {
  req.extras = { ...req.extras, [name]: value };
}

/** Applies one `name=value` to the request. */
function applyResource(req: ResourceRequest, name: string, value: string, opts: ResourceParseOptions): void {
  if (value === '') throw new UsageError(`-l ${name}: missing value; write ${name}=VALUE`);
  switch (name) {
    case 'walltime':
      req.walltimeSec = parseWalltime(value, '-l walltime');
      return;
    case 'ncpus':
    case 'procs':
      req.ncpus = positiveInt(value, name);
      return;
    case 'mem':
      req.memMiB = parseSize(value, '-l mem');
      return;
    case 'vmem':
    case 'pmem':
    case 'pvmem':
      req[`${name}MiB`] = parseSize(value, `-l ${name}`);
      record(req, name, value);
      return;
    case 'select':
      req.chunks = value.split('+').map((c) => parseChunk(c, opts));
      req.chunkSyntax = 'select';
      return;
    case 'nodes':
      req.chunks = value.split('+').map((c) => parseNodeSpec(c, opts));
      req.chunkSyntax = 'nodes';
      return;
    case 'place':
      checkPlace(value);
      req.place = value;
      return;
    default:
      if (isCustom(name, opts)) {
        record(req, name, value);
        return;
      }
      if (DEVICES.has(name)) throw deviceError(name, `-l ${name}`);
      if (RECORDED[name] === undefined) throw unknownResource(name, '-l');
      record(req, name, value);
      opts.warnings?.push(`-l ${name}=${value}: ${RECORDED[name]}`);
  }
}

/** One `-l` value: comma-separated `name=value` items; later items override earlier ones. */
export function parseResourceList(value: string, into: ResourceRequest = {}, opts: ResourceParseOptions = {}): ResourceRequest {
  for (const item of value.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`-l: "${item}" is not name=value, e.g. walltime=01:00:00`);
    applyResource(into, item.slice(0, eq), item.slice(eq + 1), opts);
  }
  return into;
}

/** Per-key override: everything `over` sets replaces `base`; recorded extras merge by name. */
export function mergeResources(base: ResourceRequest, over: ResourceRequest): ResourceRequest {
  const out: ResourceRequest = { ...base };
  for (const [k, v] of Object.entries(over) as [keyof ResourceRequest, unknown][]) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  if (base.extras || over.extras) out.extras = { ...base.extras, ...over.extras };
  return out;
}

function chunkTotals(chunks: ChunkRequest[]): { ncpus: number; memMiB?: number } {
  const ncpus = chunks.reduce((acc, c) => acc + c.count * c.ncpus, 0);
  const withMem = chunks.filter((c) => c.memMiB !== undefined);
  if (withMem.length === 0) return { ncpus };
  return { ncpus, memMiB: withMem.reduce((acc, c) => acc + c.count * (c.memMiB as number), 0) };
}

/** Memory when no `mem` is given: vmem for the job, else pmem/pvmem times the CPUs. */
function impliedMemory(req: ResourceRequest, ncpus: number): number | undefined {
  if (req.vmemMiB !== undefined) return req.vmemMiB;
  const per = req.pmemMiB ?? req.pvmemMiB;
  return per === undefined ? undefined : per * ncpus;
}

/**
 * The job's CPUs and memory. Chunks are added up; a job-wide `ncpus` next to chunks is
 * ambiguous and refused, a job-wide `mem` is accepted when the chunks carry none (the
 * usual Torque `nodes=1:ppn=8,mem=16gb`). Defaults: 1 CPU, memory 0 (the headnode's).
 */
export function resolveResources(req: ResourceRequest): ResolvedResources {
  const warnings: string[] = [];
  let ncpus = req.ncpus ?? 1;
  let memMiB = req.memMiB;
  const resolved: ResolvedResources = { resources: { ncpus, memMiB: 0 }, warnings };
  if (req.walltimeSec !== undefined) resolved.walltimeSec = req.walltimeSec;
  if (req.chunks) {
    const syntax = req.chunkSyntax ?? 'select';
    if (req.ncpus !== undefined) {
      throw new UsageError(`-l ncpus cannot be combined with -l ${syntax}; give the CPUs inside the ${syntax === 'select' ? 'chunk (select=1:ncpus=8)' : 'node spec (nodes=1:ppn=8)'}`);
    }
    const totals = chunkTotals(req.chunks);
    if (totals.memMiB !== undefined && req.memMiB !== undefined) {
      throw new UsageError('-l mem cannot be combined with mem= inside -l select; give one of them');
    }
    ncpus = totals.ncpus;
    memMiB = totals.memMiB ?? req.memMiB;
    resolved.chunks = req.chunks;
    const count = req.chunks.reduce((acc, c) => acc + c.count, 0);
    if (count > 1) warnings.push(`-l ${syntax}: ${count} chunks are run as one job with ${totals.ncpus} CPUs in a single clone VM`);
  }
  memMiB ??= impliedMemory(req, ncpus);
  resolved.resources = { ncpus, memMiB: memMiB ?? 0 };
  if (req.place !== undefined) warnings.push(`-l place=${req.place} ignored: a Copper job runs in a single clone VM`);
  return resolved;
}
