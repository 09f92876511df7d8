/**
 * Stage-out through the guest agents: pack in the clone (pack.sh), stream the archive from the
 * clone's agent straight into the headnode's (no copy on the host), unpack there as the job's
 * account (place.py). The host never parses or unpacks the archive: the clone is the job's and
 * its tar is untrusted. Only what exceeds the size cap is kept on the host, as a tar file.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DriverError, errorMessage } from '../../errors.js';
import type { StageOutRequest, StageOutResult } from '../../stageout/types.js';
import type { AgentClient } from '../../vm/agent.js';
import { DEFAULT_CHUNK } from '../../vm/guest-files.js';

export class StageOutError extends DriverError {}

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

/** Where the clone side packs (on the clone's disk, not tmpfs: a job's output may be large). */
const CLONE_OUT = '/var/tmp/.copper-stageout';
/** The most a file time (coarse kernel clock) lags the precise clock guest-get-time reads. */
const COARSE_CLOCK_NS = 10_000_000n;
const ACCOUNT = /^[a-z_][a-z0-9_-]{0,31}$/;

let scripts: { pack: string; place: string } | undefined;

/** The guest scripts, read from src/stageout/guest of this checkout (sent with each run). */
export function stageOutScripts(): { pack: string; place: string } {
  if (scripts) return scripts;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const g = join(dir, 'src', 'stageout', 'guest');
    if (existsSync(join(g, 'pack.sh'))) {
      scripts = { pack: readFileSync(join(g, 'pack.sh'), 'utf8'), place: readFileSync(join(g, 'place.py'), 'utf8') };
      return scripts;
    }
    dir = dirname(dir);
  }
  throw new StageOutError('cannot find the stage-out guest scripts (src/stageout/guest)');
}

export async function stageOutJob(ctx: StageOutContext, req: StageOutRequest): Promise<StageOutResult> {
  if (!ACCOUNT.test(req.account)) throw new StageOutError(`invalid account '${req.account}'`);
  const { pack, place } = stageOutScripts();
  const timeoutMs = ctx.timeoutMs ?? 30 * 60_000;
  const chunk = ctx.chunk ?? DEFAULT_CHUNK;
  const since = (ctx.cloneStartMs / 1000).toFixed(3);
  const timings: NonNullable<StageOutResult['timingsMs']> = {};
  let t = performance.now();
  const lap = (): number => {
    const n = performance.now();
    const d = Math.round(n - t);
    t = n;
    return d;
  };
  const packed = await ctx.clone.run('/bin/bash', ['-c', pack, 'pack', since, String(req.capBytes), CLONE_OUT, ...req.paths], { timeoutMs });
  const line = packed.out?.toString().trim().split('\n').pop() ?? '';
  const m = /^(\d+) (\d+) (\d+) (\d+)$/.exec(line);
  if (packed.exitCode !== 0 || !m) {
    throw new StageOutError(`packing in the clone failed (${packed.exitCode ?? `signal ${packed.signal}`}): ${oneLine(packed.err?.toString() ?? line)}`);
  }
  const [nd, , nx, xb] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
  const result: StageOutResult = { placed: 0, bytes: 0, conflicts: [], conflictCount: 0, errors: [], timingsMs: timings };
  timings.pack = lap();

  if (nd > 0) {
    const agent = await ctx.headnode();
    const archive = `/var/tmp/.copper-stageout-${randomBytes(6).toString('hex')}.tar`;
    // The tar adds 512 bytes a member and padding: the bound leaves room for that, no more.
    const bound = req.capBytes + Math.max(64 * 1024 * 1024, Math.ceil(req.capBytes / 4));
    try {
      result.bytes = await streamBetween(ctx.clone, `${CLONE_OUT}/d.tar`, agent, archive, bound, chunk);
      timings.stream = lap();
      // One guest process: it becomes the account itself (-I -S: no PYTHON* variables, faster start).
      // The recorded freeze time less one kernel tick: file times come from the coarse clock,
      // which may lag the agent's precise one by up to a tick (10 ms at HZ=100).
      const snapNs =
        ctx.frozenAtGuestMs !== undefined
          ? BigInt(Math.floor(ctx.frozenAtGuestMs * 1000)) * 1000n - COARSE_CLOCK_NS
          : await snapshotInGuestClock(agent, ctx.snapshotAtMs);
      const args = ['-I', '-S', '-c', place, archive, req.jobId, snapNs.toString(), req.account, ...req.paths];
      const st = await agent.run('/usr/bin/python3', args, { timeoutMs });
      const text = st.out?.toString().trim().split('\n').pop() ?? '';
      const report = parseReport(text);
      if (!report)
        throw new StageOutError(`unpacking in the headnode failed (${st.exitCode ?? `signal ${st.signal}`}): ${oneLine(st.err?.toString() ?? text)}`);
      Object.assign(result, report);
      timings.place = lap();
    } catch (err) {
      await agent.run('/bin/rm', ['-f', '--', archive], { timeoutMs: 10_000 }).catch(() => undefined);
      throw err;
    }
  }

  if (nx > 0) {
    result.excess = { entries: nx, bytes: xb };
    const keptAt = join(req.keepDir, 'stageout-excess.tar');
    await mkdir(req.keepDir, { recursive: true });
    await rm(keptAt, { force: true }); // an earlier run of the same job
    try {
      await copyBounded(ctx.clone, `${CLONE_OUT}/x.tar`, keptAt, req.keepMaxBytes + 64 * 1024 * 1024, chunk);
      result.excess.keptAt = keptAt;
      timings.excess = lap();
    } catch (err) {
      await rm(keptAt, { force: true });
      result.errors.push(`the excess could not be kept on the host: ${errorMessage(err)}`);
    }
  }
  return result;
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

interface PlaceReport {
  placed: number;
  conflicts: string[];
  conflictCount: number;
  errors: string[];
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

/** Guest text fit for a comment: one printable line, bounded. */
function oneLine(s: string, max = 300): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what goes
  const t = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
}
