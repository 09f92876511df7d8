/**
 * Stage-out through the guest agents on one host: pack in the clone (stage-out-clone.ts), stream
 * the archive from the clone's agent straight into the headnode's (no copy on the host), unpack
 * there as the job's account (stage-out-headnode.ts). Only what exceeds the size cap is kept on
 * the host, as a tar file. A compute node uses the two halves apart (src/grid).
 */
import { performance } from 'node:perf_hooks';
import type { StageOutRequest, StageOutResult } from '../../stageout/types.js';
import type { AgentClient } from '../../vm/agent.js';
import { DEFAULT_CHUNK } from '../../vm/guest-files.js';
import { archiveBound, StageOutError } from './stage-out-common.js';
import { CLONE_ARCHIVE, keepExcess, packInClone } from './stage-out-clone.js';
import { headnodeArchivePath, placeInHeadnode } from './stage-out-headnode.js';

export { StageOutError, stageOutScripts } from './stage-out-common.js';
export { copyBounded } from './stage-out-clone.js';

export interface StageOutContext {
  clone: AgentClient;
  /** The headnode's agent, taken only when there is something to write. */
  headnode: () => Promise<AgentClient>;
  /** Host time the clone was started (ms): its command's files changed after this. */
  cloneStartMs: number;
  /** Host time of the snapshot (ms): a headnode file changed after this is the user's. */
  snapshotAtMs: number;
  /**
   * The freeze instant in the headnode's own clock (snapshot meta frozenAtGuestMs), when the
   * snapshot recorded it: then used as it is, no clock offset estimated.
   */
  frozenAtGuestMs?: number;
  /** Bytes per agent read/write (tests and benchmarks). */
  chunk?: number;
  /** Guest command deadline. */
  timeoutMs?: number;
}

export async function stageOutJob(ctx: StageOutContext, req: StageOutRequest): Promise<StageOutResult> {
  const timeoutMs = ctx.timeoutMs ?? 30 * 60_000;
  const chunk = ctx.chunk ?? DEFAULT_CHUNK;
  const timings: NonNullable<StageOutResult['timingsMs']> = {};
  let t = performance.now();
  const lap = (): number => {
    const n = performance.now();
    const d = Math.round(n - t);
    t = n;
    return d;
  };
  const packCtx = { clone: ctx.clone, cloneStartMs: ctx.cloneStartMs, chunk, timeoutMs };
  const packed = await packInClone(packCtx, req);
  const result: StageOutResult = { placed: 0, bytes: 0, conflicts: [], conflictCount: 0, errors: [], timingsMs: timings };
  timings.pack = lap();

  if (packed.entries > 0) {
    const agent = await ctx.headnode();
    const archive = headnodeArchivePath();
    try {
      result.bytes = await streamBetween(ctx.clone, CLONE_ARCHIVE, agent, archive, archiveBound(req.capBytes), chunk);
      timings.stream = lap();
      const place = {
        headnode: agent,
        snapshotAtMs: ctx.snapshotAtMs,
        timeoutMs,
        ...(ctx.frozenAtGuestMs !== undefined ? { frozenAtGuestMs: ctx.frozenAtGuestMs } : {}),
      };
      Object.assign(result, await placeInHeadnode(place, archive, req));
      timings.place = lap();
    } catch (err) {
      await agent.run('/bin/rm', ['-f', '--', archive], { timeoutMs: 10_000 }).catch(() => undefined);
      throw err;
    }
  }

  await keepExcess(packCtx, req, packed, result);
  if (result.excess) timings.excess = lap();
  return result;
}

/**
 * Copy a file from one guest to another, reading the next chunk while the last is written.
 * More than maxBytes is an error (the sending guest is not trusted to stop).
 */
export async function streamBetween(from: AgentClient, fromPath: string, to: AgentClient, toPath: string, maxBytes: number, chunk: number): Promise<number> {
  const rh = await from.fileOpen(fromPath, 'rb');
  let wh: number | undefined;
  let pending: Promise<void> = Promise.resolve();
  let total = 0;
  try {
    wh = await to.fileOpen(toPath, 'wb');
    const handle = wh;
    for (;;) {
      const { data, eof } = await from.fileRead(rh, chunk);
      if (data.length) {
        total += data.length;
        if (total > maxBytes) throw new StageOutError(`the clone's archive is larger than ${maxBytes} bytes`);
        await pending;
        pending = writeAll(to, handle, data);
        pending.catch(() => undefined);
      }
      if (eof || data.length === 0) break;
    }
    await pending;
    return total;
  } finally {
    await from.fileClose(rh).catch(() => undefined);
    if (wh !== undefined) await to.fileClose(wh).catch(() => undefined);
  }
}

async function writeAll(agent: AgentClient, handle: number, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) off += await agent.fileWrite(handle, data.subarray(off));
}
