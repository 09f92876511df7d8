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
import { errorMessage } from '../../errors.js';
import { ReadAhead } from './read-ahead.js';
import { archiveBound, StageOutError } from './stage-out-common.js';
import { CLONE_ARCHIVE, keepExcess, packInClone } from './stage-out-clone.js';
import { headnodeArchivePath, placeInHeadnode, type PlaceReport } from './stage-out-headnode.js';
import type { ArchiveOffers } from '../../stageout/archive-offers.js';

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
  /**
   * gcd's one-time archive offers on the headnode's API channel: the headnode fetches the
   * archive over HTTP (fast) instead of taking it through guest-file-write (slow under TCG).
   * Without them (a grid node's relayed channels), the agent path.
   */
  archives?: ArchiveOffers;
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
    const place = {
      headnode: agent,
      snapshotAtMs: ctx.snapshotAtMs,
      timeoutMs,
      ...(ctx.frozenAtGuestMs !== undefined ? { frozenAtGuestMs: ctx.frozenAtGuestMs } : {}),
    };
    if (ctx.archives) {
      const fetched = await fetchedByHeadnode(ctx.clone, ctx.archives, req.headnode, archiveBound(req.capBytes), chunk, (path) =>
        placeInHeadnode(place, '-', req, path),
      );
      result.bytes = fetched.bytes;
      Object.assign(result, fetched.report);
      timings.place = lap();
      await keepExcess(packCtx, req, packed, result);
      if (result.excess) timings.excess = lap();
      return result;
    }
    const archive = headnodeArchivePath();
    try {
      result.bytes = await streamBetween(ctx.clone, CLONE_ARCHIVE, agent, archive, archiveBound(req.capBytes), chunk);
      timings.stream = lap();
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

/**
 * The clone's archive offered to the headnode over its API channel, read from the clone's agent
 * while the headnode fetches it; `place` runs place.py with the offer's path. The length is the
 * clone file's at offer time, at most maxBytes: the headnode gets exactly that many bytes or a
 * short body (then places nothing), however the clone's file changes meanwhile.
 */
/** How much of the clone's archive may wait on the host for the headnode. */
const READ_AHEAD_BYTES = 32 * 1024 * 1024;

export async function fetchedByHeadnode(
  clone: AgentClient,
  archives: ArchiveOffers,
  headnodeVmId: string,
  maxBytes: number,
  chunk: number,
  place: (fetchPath: string) => Promise<PlaceReport>,
): Promise<{ bytes: number; report: PlaceReport }> {
  const rh = await clone.fileOpen(CLONE_ARCHIVE, 'rb');
  const readers: ReadAhead[] = [];
  try {
    const size = await guestFileSize(clone, rh);
    if (size > maxBytes) throw new StageOutError(`the clone's archive is larger than ${maxBytes} bytes`);
    // Read from the clone while place.py starts in the headnode; the headnode drains it.
    const reader = new ReadAhead(clone, rh, size, chunk, READ_AHEAD_BYTES);
    readers.push(reader);
    const offer = archives.offer(headnodeVmId, size, async (sink) => {
      let total = 0;
      for (let part = await reader.next(); part; part = await reader.next()) {
        await sink.write(part);
        total += part.length;
      }
      return total;
    });
    let report: PlaceReport;
    try {
      report = await place(offer.path);
    } finally {
      offer.withdraw();
    }
    const bytes = await offer.served.catch((err: unknown) => {
      throw new StageOutError(`the archive did not reach the headnode: ${errorMessage(err)}${report.errors.length ? `; ${report.errors.join('; ')}` : ''}`);
    });
    return { bytes, report };
  } finally {
    for (const r of readers) {
      r.stop();
      await r.finished;
    }
    await clone.fileClose(rh).catch(() => undefined);
  }
}

/** A guest file's size through its open handle (guest-file-seek to the end and back). */
async function guestFileSize(agent: AgentClient, handle: number): Promise<number> {
  const end = await agent.request<{ position?: unknown }>('guest-file-seek', { handle, offset: 0, whence: 2 });
  await agent.request('guest-file-seek', { handle, offset: 0, whence: 0 });
  const n = end?.position;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new StageOutError('the clone gave no size for its archive');
  return n;
}
