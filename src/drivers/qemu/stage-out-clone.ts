/**
 * Stage-out, clone half: pack what the job wrote (pack.sh in the clone), and keep what exceeds
 * the cap on the host. On a compute node the archive is then copied to a host file
 * (packToHostFile) that travels to the server, which places it (stage-out-headnode.ts).
 */
import { performance } from 'node:perf_hooks';
import { mkdir, rm } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../../errors.js';
import type { StageOutRequest, StageOutResult } from '../../stageout/types.js';
import type { AgentClient } from '../../vm/agent.js';
import { DEFAULT_CHUNK } from '../../vm/guest-files.js';
import { ACCOUNT, archiveBound, oneLine, stageOutScripts, StageOutError } from './stage-out-common.js';

export interface PackContext {
  clone: AgentClient;
  /** Host time the clone was started (ms): its command's files changed after this. */
  cloneStartMs: number;
  /** Bytes per agent read/write (tests and benchmarks). */
  chunk?: number;
  /** Guest command deadline. */
  timeoutMs?: number;
}

/** pack.sh's summary: entries (and bytes) in the archive for the headnode, and beyond the cap. */
export interface Packed {
  entries: number;
  excessEntries: number;
  excessBytes: number;
}

/** Where the clone side packs (on the clone's disk, not tmpfs: a job's output may be large). */
export const CLONE_OUT = '/var/tmp/.copper-stageout';
/** The archive for the headnode, in the clone. */
export const CLONE_ARCHIVE = `${CLONE_OUT}/d.tar`;

export async function packInClone(ctx: PackContext, req: StageOutRequest): Promise<Packed> {
  if (!ACCOUNT.test(req.account)) throw new StageOutError(`invalid account '${req.account}'`);
  const { pack } = stageOutScripts();
  const since = (ctx.cloneStartMs / 1000).toFixed(3);
  const packed = await ctx.clone.run('/bin/bash', ['-c', pack, 'pack', since, String(req.capBytes), CLONE_OUT, ...req.paths], {
    timeoutMs: ctx.timeoutMs ?? 30 * 60_000,
  });
  const line = packed.out?.toString().trim().split('\n').pop() ?? '';
  const m = /^(\d+) (\d+) (\d+) (\d+)$/.exec(line);
  if (packed.exitCode !== 0 || !m) {
    throw new StageOutError(`packing in the clone failed (${packed.exitCode ?? `signal ${packed.signal}`}): ${oneLine(packed.err?.toString() ?? line)}`);
  }
  return { entries: Number(m[1]), excessEntries: Number(m[3]), excessBytes: Number(m[4]) };
}

/** What exceeds the cap goes to req.keepDir on this host as a tar; a failure is one of result.errors. */
export async function keepExcess(ctx: PackContext, req: StageOutRequest, packed: Packed, result: StageOutResult): Promise<void> {
  if (packed.excessEntries <= 0) return;
  result.excess = { entries: packed.excessEntries, bytes: packed.excessBytes };
  const keptAt = join(req.keepDir, 'stageout-excess.tar');
  await mkdir(req.keepDir, { recursive: true });
  await rm(keptAt, { force: true }); // an earlier run of the same job
  try {
    await copyBounded(ctx.clone, `${CLONE_OUT}/x.tar`, keptAt, req.keepMaxBytes + 64 * 1024 * 1024, ctx.chunk ?? DEFAULT_CHUNK);
    result.excess.keptAt = keptAt;
  } catch (err) {
    await rm(keptAt, { force: true });
    result.errors.push(`the excess could not be kept on the host: ${errorMessage(err)}`);
  }
}

/**
 * The clone half on its own: pack, copy the archive for the headnode to `hostArchive` (bounded:
 * the clone is not trusted to stop), keep the excess. `archiveBytes` is 0 when there is nothing
 * to place (then no file is written). The result's placed/conflicts are the headnode half's.
 */
export async function packToHostFile(ctx: PackContext, req: StageOutRequest, hostArchive: string): Promise<{ result: StageOutResult; archiveBytes: number }> {
  const timings: NonNullable<StageOutResult['timingsMs']> = {};
  let t = performance.now();
  const packed = await packInClone(ctx, req);
  timings.pack = Math.round(performance.now() - t);
  const result: StageOutResult = { placed: 0, bytes: 0, conflicts: [], conflictCount: 0, errors: [], timingsMs: timings };
  let archiveBytes = 0;
  if (packed.entries > 0) {
    t = performance.now();
    await rm(hostArchive, { force: true });
    try {
      archiveBytes = await copyBounded(ctx.clone, CLONE_ARCHIVE, hostArchive, archiveBound(req.capBytes), ctx.chunk ?? DEFAULT_CHUNK);
    } catch (err) {
      await rm(hostArchive, { force: true });
      throw err;
    }
    timings.stream = Math.round(performance.now() - t);
  }
  t = performance.now();
  await keepExcess(ctx, req, packed, result);
  if (result.excess) timings.excess = Math.round(performance.now() - t);
  return { result, archiveBytes };
}

/** Copy a guest file to a new host file, at most maxBytes. */
export async function copyBounded(agent: AgentClient, guestPath: string, hostPath: string, maxBytes: number, chunk: number): Promise<number> {
  const rh = await agent.fileOpen(guestPath, 'rb');
  const out = await open(hostPath, 'wx', 0o600);
  let total = 0;
  try {
    for (;;) {
      const { data, eof } = await agent.fileRead(rh, chunk);
      if (data.length) {
        total += data.length;
        if (total > maxBytes) throw new StageOutError(`larger than ${maxBytes} bytes`);
        await out.write(data);
      }
      if (eof || data.length === 0) break;
    }
    return total;
  } finally {
    await out.close();
    await agent.fileClose(rh).catch(() => undefined);
  }
}
