/**
 * Stage-out, headnode half: an archive packed in a clone (stage-out-clone.ts) is unpacked in the
 * headnode as the job's account (place.py). The host never parses or unpacks it: the clone is
 * the job's and its tar is untrusted. The archive either streams from the clone's agent (one
 * host, stage-out.ts) or arrives as a host file from a compute node (placeHostArchive).
 */
import { randomBytes } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import type { StageOutRequest } from '../../stageout/types.js';
import type { AgentClient } from '../../vm/agent.js';
import { copyToGuest, DEFAULT_CHUNK } from '../../vm/guest-files.js';
import { GUEST_GCD_ADDR, type ArchiveOffers } from '../../stageout/archive-offers.js';
import { errorMessage } from '../../errors.js';
import { ACCOUNT, archiveBound, oneLine, stageOutScripts, StageOutError } from './stage-out-common.js';

export interface PlaceContext {
  headnode: AgentClient;
  /** Host time of the snapshot (ms): a headnode file changed after this is the user's. */
  snapshotAtMs: number;
  /**
   * The freeze instant in the headnode's own clock (snapshot meta frozenAtGuestMs), when the
   * snapshot recorded it: then used as it is, no clock offset estimated.
   */
  frozenAtGuestMs?: number;
  /** Guest command deadline. */
  timeoutMs?: number;
}

export interface PlaceReport {
  placed: number;
  conflicts: string[];
  conflictCount: number;
  errors: string[];
}

/** What placing needs of the request (the server rebuilds it from the job record on a relay). */
export type PlaceRequest = Pick<StageOutRequest, 'jobId' | 'account' | 'paths'>;

/** The most a file time (coarse kernel clock) lags the precise clock guest-get-time reads. */
const COARSE_CLOCK_NS = 10_000_000n;

/** A fresh archive path in the headnode. */
export function headnodeArchivePath(): string {
  return `/var/tmp/.copper-stageout-${randomBytes(6).toString('hex')}.tar`;
}

/**
 * Unpack `archive` (already in the headnode) with place.py; the caller removes it on a throw.
 * With `fetchPath`, there is no archive file: place.py GETs it from gcd over the headnode's API
 * channel at that one-time path (src/stageout/archive-offers.ts) and unpacks it as it comes.
 */
export async function placeInHeadnode(ctx: PlaceContext, archive: string, req: PlaceRequest, fetchPath?: string): Promise<PlaceReport> {
  if (!ACCOUNT.test(req.account)) throw new StageOutError(`invalid account '${req.account}'`);
  const { place } = stageOutScripts();
  const agent = ctx.headnode;
  // The recorded freeze time less one kernel tick: file times come from the coarse clock,
  // which may lag the agent's precise one by up to a tick (10 ms at HZ=100).
  const snapNs =
    ctx.frozenAtGuestMs !== undefined
      ? BigInt(Math.floor(ctx.frozenAtGuestMs * 1000)) * 1000n - COARSE_CLOCK_NS
      : await snapshotInGuestClock(agent, ctx.snapshotAtMs);
  // One guest process: it becomes the account itself (-I -S: no PYTHON* variables, faster start).
  const args = ['-I', '-S', '-c', place, fetchPath === undefined ? archive : '-', req.jobId, snapNs.toString(), req.account, ...req.paths];
  // The fetch path goes in the environment, not argv: other accounts in the headnode can read
  // a process's argv, not its environment.
  const env = fetchPath === undefined ? undefined : { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', COPPER_STAGEOUT_FETCH: `${GUEST_GCD_ADDR}${fetchPath}` };
  const st = await agent.run('/usr/bin/python3', args, { timeoutMs: ctx.timeoutMs ?? 30 * 60_000, ...(env ? { env } : {}) });
  const text = st.out?.toString().trim().split('\n').pop() ?? '';
  const report = parseReport(text);
  if (!report) throw new StageOutError(`unpacking in the headnode failed (${st.exitCode ?? `signal ${st.signal}`}): ${oneLine(st.err?.toString() ?? text)}`);
  return report;
}

/**
 * The headnode half for an archive that came from a compute node as a host file: copy it into
 * the headnode, place it. Bounded by the same cap as the clone half (a node relays what a
 * hostile clone packed).
 */
export async function placeHostArchive(
  ctx: PlaceContext,
  hostArchive: string,
  req: PlaceRequest & Pick<StageOutRequest, 'capBytes'>,
  chunk = DEFAULT_CHUNK,
  archives?: { offers: ArchiveOffers; headnodeVmId: string },
): Promise<PlaceReport & { bytes: number }> {
  const size = (await stat(hostArchive)).size;
  if (size > archiveBound(req.capBytes)) throw new StageOutError(`the clone's archive is larger than ${archiveBound(req.capBytes)} bytes`);
  if (archives) return placeFetched(ctx, archives.offers, archives.headnodeVmId, hostArchive, size, req);
  const archive = headnodeArchivePath();
  try {
    const bytes = await copyToGuest(ctx.headnode, hostArchive, archive, chunk);
    return { ...(await placeInHeadnode(ctx, archive, req)), bytes };
  } catch (err) {
    await ctx.headnode.run('/bin/rm', ['-f', '--', archive], { timeoutMs: 10_000 }).catch(() => undefined);
    throw err;
  }
}

/** A host archive of `size` bytes offered to the headnode, which fetches it over its channel. */
async function placeFetched(
  ctx: PlaceContext,
  offers: ArchiveOffers,
  headnodeVmId: string,
  hostArchive: string,
  size: number,
  req: PlaceRequest,
): Promise<PlaceReport & { bytes: number }> {
  const fh = await open(hostArchive, 'r');
  try {
    const offer = offers.offer(headnodeVmId, size, async (sink) => {
      let total = 0;
      while (total < size) {
        const buf = Buffer.allocUnsafe(Math.min(4 * 1024 * 1024, size - total));
        const { bytesRead } = await fh.read(buf, 0, buf.length, total);
        if (bytesRead === 0) throw new StageOutError(`the archive ended after ${total} of ${size} bytes`);
        await sink.write(buf.subarray(0, bytesRead));
        total += bytesRead;
      }
      return total;
    });
    let report: PlaceReport;
    try {
      report = await placeInHeadnode(ctx, '-', req, offer.path);
    } finally {
      offer.withdraw();
    }
    const bytes = await offer.served.catch((err: unknown) => {
      throw new StageOutError(`the archive did not reach the headnode: ${errorMessage(err)}${report.errors.length ? `; ${report.errors.join('; ')}` : ''}`);
    });
    return { ...report, bytes };
  } finally {
    await fh.close();
  }
}

/**
 * For a snapshot that did not record its freeze time in the guest's clock: the snapshot's time
 * in the headnode's clock (ns), which may differ from the host's: the offset
 * comes from guest-get-time, answered by the agent itself (no program started, so no start-up
 * delay in it). Moved earlier by the round trip and 1 s more: an error then keeps a user's
 * change (the job's copy goes beside it) rather than overwriting it.
 */
async function snapshotInGuestClock(agent: AgentClient, snapshotAtMs: number): Promise<bigint> {
  const t0 = Date.now();
  const guestNs = await agent.request<number>('guest-get-time', undefined, 30_000);
  const t1 = Date.now();
  const hostMidNs = BigInt(Math.round((t0 + t1) / 2)) * 1_000_000n;
  const offset = typeof guestNs === 'number' && Number.isFinite(guestNs) ? BigInt(Math.round(guestNs)) - hostMidNs : 0n;
  return BigInt(snapshotAtMs) * 1_000_000n + offset - BigInt(t1 - t0 + 1000) * 1_000_000n;
}

/** place.py's JSON line, checked field by field (it comes from a guest). */
function parseReport(text: string): PlaceReport | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const strings = (x: unknown, max: number): string[] =>
    Array.isArray(x)
      ? x
          .filter((s): s is string => typeof s === 'string')
          .slice(0, max)
          .map((s) => oneLine(s, 300))
      : [];
  const num = (x: unknown): number => (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0 ? x : 0);
  return { placed: num(o.placed), conflicts: strings(o.conflicts, 20), conflictCount: num(o.nconflicts), errors: strings(o.errors, 5) };
}
