/**
 * `-l` resource lists: `walltime=`, `ncpus=`, `mem=`, PBS Pro `select=` chunks, Torque
 * `nodes=N:ppn=C` and `place=`. A Copper job runs in one clone VM, so chunks are summed
 * into one CPU count and one memory size; the chunk list is kept for the record.
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
  /** From `select=` or Torque `nodes=`; the two replace each other. */
  chunks?: ChunkRequest[];
  chunkSyntax?: 'select' | 'nodes';
  place?: string;
}

/** The resolved request: what the job gets, plus notes for the user. */
export interface ResolvedResources {
  resources: Resources;
  walltimeSec?: number;
  chunks?: ChunkRequest[];
  warnings: string[];
}

export const SUPPORTED_RESOURCES = ['walltime', 'ncpus', 'mem', 'select', 'nodes', 'place'] as const;
const CHUNK_RESOURCES = ['ncpus', 'mem', 'mpiprocs', 'ompthreads'] as const;
const PLACE_WORDS = new Set(['free', 'pack', 'scatter', 'vscatter', 'excl', 'shared', 'exclhost']);
/** Enough for any VM; stops absurd values before they reach the scheduler. */
const MAX_CPUS = 100_000;

function positiveInt(text: string, what: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > MAX_CPUS) {
    throw new UsageError(`-l ${what}: "${text}" must be a whole number from 1 to ${MAX_CPUS}`);
  }
  return Number(text);
}

/** `N:ncpus=C:mem=M:mpiprocs=P:ompthreads=T` (N optional, default 1). */
function parseChunk(text: string): ChunkRequest {
  const parts = text.split(':');
  const count = /^\d+$/.test(parts[0] as string) ? positiveInt(parts.shift() as string, 'select count') : 1;
  const chunk: ChunkRequest = { count, ncpus: 1 };
  for (const part of parts) {
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (!(CHUNK_RESOURCES as readonly string[]).includes(name)) {
      throw new UsageError(`-l select: unsupported chunk resource "${name}" (supported: ${CHUNK_RESOURCES.join(', ')})`);
    }
    if (value === '') throw new UsageError(`-l select: ${name} needs a value, e.g. ${name}=4`);
    if (name === 'mem') chunk.memMiB = parseSize(value, '-l select mem');
    else chunk[name as 'ncpus' | 'mpiprocs' | 'ompthreads'] = positiveInt(value, `select ${name}`);
  }
  return chunk;
}

/** Torque `N[:ppn=C]`; host names and node properties have no meaning for a clone. */
function parseNodeSpec(text: string): ChunkRequest {
  const [first, ...rest] = text.split(':');
  if (!/^\d+$/.test(first as string)) {
    throw new UsageError(`-l nodes: "${first}" names a host; give a node count, e.g. nodes=1:ppn=8`);
  }
  const chunk: ChunkRequest = { count: positiveInt(first as string, 'nodes'), ncpus: 1 };
  for (const part of rest) {
    const m = /^ppn=(.*)$/.exec(part);
    if (!m) throw new UsageError(`-l nodes: unsupported node property "${part}" (supported: ppn)`);
    chunk.ncpus = positiveInt(m[1] as string, 'nodes ppn');
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

/** Applies one `name=value` to the request. */
function applyResource(req: ResourceRequest, name: string, value: string): void {
  if (value === '') throw new UsageError(`-l ${name}: missing value; write ${name}=VALUE`);
  switch (name) {
    case 'walltime':
      req.walltimeSec = parseWalltime(value, '-l walltime');
      return;
    case 'ncpus':
      req.ncpus = positiveInt(value, 'ncpus');
      return;
    case 'mem':
      req.memMiB = parseSize(value, '-l mem');
      return;
    case 'select':
      req.chunks = value.split('+').map(parseChunk);
      req.chunkSyntax = 'select';
      return;
    case 'nodes':
      req.chunks = value.split('+').map(parseNodeSpec);
      req.chunkSyntax = 'nodes';
      return;
    case 'place':
      checkPlace(value);
      req.place = value;
      return;
    default:
      throw new UsageError(`-l: unsupported resource "${name}" (supported: ${SUPPORTED_RESOURCES.join(', ')})`);
  }
}

/** One `-l` value: comma-separated `name=value` items; later items override earlier ones. */
export function parseResourceList(value: string, into: ResourceRequest = {}): ResourceRequest {
  for (const item of value.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`-l: "${item}" is not name=value, e.g. walltime=01:00:00`);
    applyResource(into, item.slice(0, eq), item.slice(eq + 1));
  }
  return into;
}

/** Per-key override: everything `over` sets replaces `base`. */
export function mergeResources(base: ResourceRequest, over: ResourceRequest): ResourceRequest {
  const out: ResourceRequest = { ...base };
  for (const [k, v] of Object.entries(over) as [keyof ResourceRequest, unknown][]) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

function chunkTotals(chunks: ChunkRequest[]): { ncpus: number; memMiB?: number } {
  const ncpus = chunks.reduce((acc, c) => acc + c.count * c.ncpus, 0);
  const withMem = chunks.filter((c) => c.memMiB !== undefined);
  if (withMem.length === 0) return { ncpus };
  return { ncpus, memMiB: withMem.reduce((acc, c) => acc + c.count * (c.memMiB as number), 0) };
}

/**
 * The job's CPUs and memory. Chunks are added up; a job-wide `ncpus` next to chunks is
 * ambiguous and refused, a job-wide `mem` is accepted when the chunks carry none (the
 * usual Torque `nodes=1:ppn=8,mem=16gb`). Defaults: 1 CPU, memory 0 (the headnode's).
 */
export function resolveResources(req: ResourceRequest): ResolvedResources {
  const warnings: string[] = [];
  const resolved: ResolvedResources = { resources: { ncpus: req.ncpus ?? 1, memMiB: req.memMiB ?? 0 }, warnings };
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
    resolved.resources = { ncpus: totals.ncpus, memMiB: totals.memMiB ?? req.memMiB ?? 0 };
    resolved.chunks = req.chunks;
    const count = req.chunks.reduce((acc, c) => acc + c.count, 0);
    if (count > 1) warnings.push(`-l ${syntax}: ${count} chunks are run as one job with ${totals.ncpus} CPUs in a single clone VM`);
  }
  if (req.place !== undefined) warnings.push(`-l place=${req.place} ignored: a Copper job runs in a single clone VM`);
  return resolved;
}
