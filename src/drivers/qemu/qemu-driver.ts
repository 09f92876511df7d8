/**
 * QemuDriver: the job driver, the Driver seam over the VM floor (src/vm). Snapshots, clones,
 * sweeping and the rest are VmHost's; this adds what only jobs need: running a job command in
 * a clone through the guest's run-job (output read back into host files, signals to its
 * process group) and delivering a file into a headnode.
 */
import { randomBytes } from 'node:crypto';
import { appendFile, readFile, stat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { CopperError, DriverError, NotFoundError, StateError, UsageError, errorMessage } from '../../errors.js';
import { parseRecord } from '../../json-record.js';
import { log } from '../../log.js';
import type { StageOutRequest, StageOutResult } from '../../stageout/types.js';
import type { AgentClient } from '../../vm/agent.js';
import { guestText, identity } from '../../vm/clones/identity.js';
import { copyFromGuest, copyToGuest, readGuestFile, writeGuestFile } from '../../vm/guest-files.js';
import { GUEST_RUN_JOB } from '../../vm/guest-programs.js';
import { readGuestFileAt } from '../../vm/guest-peek.js';
import { VmHost, type VmHostOptions } from '../../vm/host.js';
import { CLONE_RECORD } from '../../vm/records.schema.js';
import { stageOutJob } from './stage-out.js';
import { archiveOffersOf, optionalArchives, optionalHeadnodeOffers } from '../../stageout/archive-offers.js';
import { packToHostFile } from './stage-out-clone.js';
import { placeHostArchive } from './stage-out-headnode.js';
import { treeBytes } from '../../tree-bytes.js';
import { DELIVER_STAGE_DIR, deliverScript } from './deliver-script.js';
import type {
  CloneHandle,
  Driver,
  EnterResult,
  PackedStageOut,
  EnterSpec,
  ExecResult,
  ExecSpec,
  JobTerminal,
  KillSignal,
  OutputStream,
  PeekResult,
  RunningCommand,
  SnapshotInfo,
  TerminalSession,
  TerminalSpec,
} from '../driver.js';
import { readHostFileAt } from '../read-at.js';
import { enterClone } from './job-enter.js';
import { bridgeArgs, openTerminal, printedSize, typeInto } from './job-terminal.js';
import { parseCommandUsage } from './command-usage.js';
import { PauseGate } from './pause-gate.js';

export interface QemuDriverOptions extends VmHostOptions {
  /** Most bytes of a job's stdout (and of its stderr) brought home; the rest is cut and said so. */
  maxOutputBytes?: number;
}

/** A .pgid holds a number: anything longer is the guest's doing (docs/security.md). */
const MAX_PGID_BYTES = 64;
/** Default cap of a job's output stream brought home (GC_MAX_OUTPUT_MIB). */
const DEFAULT_MAX_OUTPUT_BYTES = 4096 * 1024 * 1024;

/** Where a clone's job writes its output: run-job's files in the guest, then the host's copies. */
interface JobOutput {
  guestFiles: string;
  join: boolean;
  hostStdout: string;
  hostStderr: string;
  /** The command ended and its output was copied to the host files. */
  copied: boolean;
  /** An interactive job: its terminal bridge's files (job-terminal.ts), ID.out and ID.in. */
  tty?: string;
}

/** run-job's status when clone-init failed (--init) and the command never ran. */
const RUN_JOB_INIT_FAILED = 125;

export class QemuDriver extends VmHost implements Driver {
  readonly name = 'qemu';
  private readonly maxOutputBytes: number;

  constructor(opts: QemuDriverOptions) {
    super(opts);
    this.maxOutputBytes = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  }

  /** Clones that gcqsig -s suspend may pause, by clone id (made at their first exec). */
  private readonly gates = new Map<string, PauseGate>();

  private gate(cloneId: string): PauseGate {
    let g = this.gates.get(cloneId);
    if (!g) this.gates.set(cloneId, (g = new PauseGate()));
    return g;
  }

  /** QMP `stop` once no guest-agent call is in flight; the poller waits until resume. */
  async pause(cloneId: string): Promise<void> {
    const c = this.runningClone(cloneId);
    const g = this.gate(cloneId);
    await g.close();
    try {
      await c.vm.qmp.execute('stop');
    } catch (e) {
      g.open();
      throw e;
    }
  }

  async resume(cloneId: string): Promise<void> {
    const c = this.runningClone(cloneId);
    await c.vm.qmp.execute('cont');
    this.gate(cloneId).open();
  }

  /** The job command of each clone that runs one (for peek and enter). */
  private readonly jobOutput = new Map<string, JobOutput>();

  async exec(clone: CloneHandle, spec: ExecSpec): Promise<RunningCommand> {
    const c = this.runningClone(clone.cloneId);
    if (spec.argv.length === 0 && spec.script === undefined && !spec.terminal) throw new UsageError('nothing to run: empty argv and no script');
    const key = `${clone.cloneId}.${++c.execs}`;
    const files = `/run/copper/${key}`; // run-job's ${files}.stdout, .stderr, .pgid, .exit
    const join = spec.stdoutFile === spec.stderrFile;
    const args = ['--job', key, '--cwd', spec.cwd, '--user', spec.user];
    if (join) args.push('--join');
    // An interactive job: the bridge runs its command on a pseudo-terminal, as the job's account
    // (run-job made it so), its files in /tmp where that account can make them.
    const tty = spec.terminal ? `/tmp/.copper-tty-${key}` : undefined;
    if (spec.terminal && tty) {
      if (spec.script !== undefined) throw new UsageError('an interactive job runs no script');
      args.push('--', '/usr/bin/python3', ...bridgeArgs(tty, spec.user, spec.cwd, spec.terminal.rows, spec.terminal.cols, spec.argv));
    } else if (spec.script !== undefined) {
      // Not under /run/copper (mode 0700): a non-root job user must be able to read it.
      const scriptPath = `/tmp/.copper-job-${key}.sh`;
      await writeGuestFile(c.agent, scriptPath, Buffer.from(spec.script));
      args.push('--script', scriptPath, '--', ...(spec.scriptArgs ?? []));
    } else {
      args.push('--', ...spec.argv);
    }
    // A fresh clone takes its identity in the same guest exec (run-job --init runs clone-init).
    const init = c.pendingInit !== undefined ? identity(c.pendingInit) : undefined;
    if (init) args.unshift('--init', ...init.args);
    const pid = await c.agent.exec(GUEST_RUN_JOB, args, spec.env, init?.seed ?? null, true);
    // Only once the guest took the exec: a refused one leaves the identity for the next.
    // (Two exec() calls at once on a fresh clone are not ordered: the second may start first.)
    if (init) c.pendingInit = undefined;
    const output: JobOutput = { guestFiles: files, join, hostStdout: spec.stdoutFile, hostStderr: spec.stderrFile, copied: false, ...(tty ? { tty } : {}) };
    this.jobOutput.set(clone.cloneId, output);

    const started = performance.now();
    const gate = this.gate(clone.cloneId);
    let finished = false;
    const polled = (async (): Promise<ExecResult> => {
      let wait = 20;
      for (;;) {
        if (c.destroyed) throw new DriverError(`clone '${clone.cloneId}' was destroyed while the command ran`);
        if (!gate.enter()) {
          await sleep(200); // suspended (gcqsig): the paused guest cannot answer
          continue;
        }
        let st: Awaited<ReturnType<typeof c.agent.execStatus>>;
        try {
          st = await c.agent.execStatus(pid);
        } finally {
          gate.leave();
        }
        if (st.exited) {
          finished = true;
          // run-job's own stderr (not the job's: that goes to files) says so; a job's 125 does not.
          const own = st.err?.toString() ?? '';
          if (init && st.exitCode === RUN_JOB_INIT_FAILED && own.startsWith('run-job: clone-init failed')) {
            throw new DriverError(guestText(own.replace(/^run-job: /, '')));
          }
          // Capped: the guest may have made .stdout a link to /dev/zero (docs/security.md).
          const cuts: string[] = [];
          const copy = { missingOk: true, maxBytes: this.maxOutputBytes };
          const out = await copyFromGuest(c.agent, `${files}.stdout`, spec.stdoutFile, copy);
          if (out.cut) cuts.push(`stdout cut: ${out.cut}`);
          if (!join) {
            const err = await copyFromGuest(c.agent, `${files}.stderr`, spec.stderrFile, copy);
            if (err.cut) cuts.push(`stderr cut: ${err.cut}`);
          }
          // run-job's own complaints (misuse, exit 2) are on its stderr, not in the job's files.
          if (st.err && st.err.length) {
            await appendFile(spec.stderrFile, st.err);
          }
          output.copied = true;
          // Small and the guest's: read at most 4 KiB of it.
          const usage = parseCommandUsage((await readGuestFile(c.agent, `${files}.usage`, { maxBytes: 4096 }).catch(() => undefined))?.toString());
          const res: ExecResult = { exitCode: st.signal !== null ? null : st.exitCode, signal: st.signal, ...(usage ? { usage } : {}) };
          if (cuts.length) res.note = guestText(cuts.join('; '));
          return res;
        }
        // Each poll is a guest-agent round trip (~15 ms of guest CPU under TCG, taken from the
        // job): every 100 ms at most while a short job may be ending, every second later on.
        await sleep(wait);
        wait = Math.min(wait * 1.5, performance.now() - started < 5000 ? 100 : 1000);
      }
    })();
    const done = polled.catch((err: unknown) => {
      throw err instanceof CopperError ? err : new DriverError(`command in clone '${clone.cloneId}': ${errorMessage(err)}`, { cause: err });
    });
    done.catch(() => undefined); // the caller may never await it (clone destroyed)

    const kill = async (signal: KillSignal): Promise<void> => {
      // Signal the job's process group, which run-job writes to ID.pgid once the command runs.
      // Until then (the clone may still be taking its identity) wait for it rather than signal
      // run-job, whose shell may be in a command substitution; if it never comes (run-job
      // stuck), signal run-job itself after 30 s. Never guest-exec-status here: the poller
      // above must be the one to see the exit.
      const deadline = Date.now() + 30_000;
      let target: string | undefined;
      for (;;) {
        const pgid = (await readGuestFile(c.agent, `${files}.pgid`, { maxBytes: MAX_PGID_BYTES }))?.toString().trim();
        if (pgid && /^\d+$/.test(pgid)) {
          target = `-${pgid}`;
          break;
        }
        if (finished || c.destroyed) return;
        if (Date.now() > deadline) {
          target = String(pid);
          break;
        }
        await sleep(100);
      }
      const st = await c.agent.run('/bin/kill', ['-s', signal, '--', target], { timeoutMs: 10_000 });
      log.debug(`clone ${clone.cloneId}: kill -s ${signal} -- ${target}: ${st.exitCode ?? `signal ${st.signal}`} ${guestText(st.err?.toString() ?? '')}`);
    };
    return { done, kill };
  }

  /** See stage-out.ts: the clone's files changed since it started go into its headnode. */
  async stageOut(clone: CloneHandle, req: StageOutRequest): Promise<StageOutResult> {
    const c = this.runningClone(clone.cloneId);
    const rec = parseRecord(c.paths.record, 'clone record', await readFile(c.paths.record, 'utf8'), CLONE_RECORD);
    const meta = await this.snapshotMeta(clone.snapshotId);
    const headnode = (): Promise<AgentClient> => this.opts.headnodes.withRunning(req.headnode, async (h) => h.agent);
    return stageOutJob(
      {
        clone: c.agent,
        headnode,
        cloneStartMs: rec.createdAt,
        snapshotAtMs: meta.createdAt,
        ...optionalArchives(archiveOffersOf(this.opts.channels)),
        ...(meta.frozenAtGuestMs !== undefined ? { frozenAtGuestMs: meta.frozenAtGuestMs } : {}),
      },
      req,
    );
  }

  /** The clone half alone (a compute node): the archive for the headnode goes to hostArchive. */
  async packStageOut(clone: CloneHandle, req: StageOutRequest, hostArchive: string): Promise<PackedStageOut> {
    const c = this.runningClone(clone.cloneId);
    const rec = parseRecord(c.paths.record, 'clone record', await readFile(c.paths.record, 'utf8'), CLONE_RECORD);
    return packToHostFile({ clone: c.agent, cloneStartMs: rec.createdAt }, req, hostArchive);
  }

  /** The headnode half alone (the server): an archive a compute node packed, placed in req.headnode. */
  async placeStageOut(req: StageOutRequest, snapshotId: string, hostArchive: string): Promise<StageOutResult> {
    const meta = await this.snapshotMeta(snapshotId);
    const agent = await this.opts.headnodes.withRunning(req.headnode, async (h) => h.agent);
    const t0 = performance.now();
    const placed = await placeHostArchive(
      { headnode: agent, snapshotAtMs: meta.createdAt, ...(meta.frozenAtGuestMs !== undefined ? { frozenAtGuestMs: meta.frozenAtGuestMs } : {}) },
      hostArchive,
      req,
      undefined,
      ...optionalHeadnodeOffers(archiveOffersOf(this.opts.channels), req.headnode),
    );
    return { ...placed, timingsMs: { place: Math.round(performance.now() - t0) } };
  }

  async peek(cloneId: string, stream: OutputStream, offset: number, maxBytes: number): Promise<PeekResult> {
    const c = this.runningClone(cloneId);
    const o = this.jobOutput.get(cloneId);
    if (!o) return { data: Buffer.alloc(0), next: offset, started: false };
    // A joined job (-j oe/eo) has one file: both streams read it.
    const file = o.join ? 'stdout' : stream;
    let data: Buffer | undefined;
    if (o.copied) {
      data = await readHostFileAt(file === 'stdout' ? o.hostStdout : o.hostStderr, offset, maxBytes);
    } else {
      data = await readGuestFileAt(c.agent, `${o.guestFiles}.${file}`, offset, maxBytes);
    }
    data ??= Buffer.alloc(0);
    return { data, next: offset + data.length, started: true };
  }

  async enter(cloneId: string, spec: EnterSpec): Promise<EnterResult> {
    const c = this.runningClone(cloneId);
    // Before the job's own command went in, the clone may not have its identity yet.
    if (!this.jobOutput.has(cloneId)) throw new StateError(`the job has not started its command yet in clone '${cloneId}'`);
    return enterClone(c, spec);
  }

  async openTerminal(cloneId: string, spec: TerminalSpec): Promise<TerminalSession> {
    const c = this.runningClone(cloneId);
    if (!this.jobOutput.has(cloneId)) throw new StateError(`the job has not started its command yet in clone '${cloneId}'`);
    return openTerminal(c, spec);
  }

  jobTerminal(cloneId: string): JobTerminal | undefined {
    const tty = this.jobOutput.get(cloneId)?.tty;
    if (tty === undefined) return undefined;
    const c = this.runningClone(cloneId);
    return {
      read: (offset, maxBytes) => readGuestFileAt(c.agent, `${tty}.out`, offset, maxBytes),
      size: () => printedSize(c.agent, tty),
      write: (data) => typeInto(c.agent, tty, data),
    };
  }

  override async destroy(cloneId: string): Promise<void> {
    this.gates.delete(cloneId);
    this.jobOutput.delete(cloneId);
    await super.destroy(cloneId);
  }

  async headnodeIncarnation(headnode: string): Promise<string | undefined> {
    return this.opts.headnodes.withRunning(headnode, async (h) => h.incarnation).catch(() => undefined);
  }

  /** The snapshot, with the incarnation the headnode had (a re-creation takes a boot: never within one snapshot). */
  override async snapshot(headnode: string): Promise<SnapshotInfo> {
    const incarnation = await this.headnodeIncarnation(headnode);
    const s = await super.snapshot(headnode);
    const bytes = await this.snapshotBytes(s.id);
    return { ...s, ...(incarnation !== undefined ? { incarnation } : {}), ...(bytes !== undefined ? { bytes } : {}) };
  }

  /** Its RAM (the tmpfs file, as large as the VM's RAM once written) and its disk folder. */
  async snapshotBytes(snapshotId: string): Promise<number | undefined> {
    const info = await this.snapshotInfo(snapshotId).catch(() => undefined);
    if (!info) return undefined;
    return (info.memMiB ?? 0) * 1024 * 1024 + (await treeBytes(this.layout.snapshot(snapshotId).dir));
  }

  async deliverFile(headnode: string, guestPath: string, hostFile: string, owner: string): Promise<void> {
    if (!guestPath.startsWith('/') || guestPath.includes('\0')) throw new UsageError(`guest path must be absolute: '${guestPath}'`);
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(owner)) throw new UsageError(`invalid owner '${owner}'`);
    await stat(hostFile).catch(() => {
      throw new NotFoundError(`no such file on the host: ${hostFile}`);
    });
    // Take the agent under the lock, copy outside it: a big file must not hold up snapshots.
    const agent = await this.opts.headnodes.withRunning(headnode, async (h) => h.agent);
    // Staged in a root-only folder, then written by deliver.py as the job's account: the
    // account comes from the guest, so root must not write where that account could not.
    const tmp = `${DELIVER_STAGE_DIR}/${randomBytes(8).toString('hex')}`;
    try {
      const mk = await agent.run('/bin/mkdir', ['-p', '-m', '0700', '--', DELIVER_STAGE_DIR], { timeoutMs: 30_000 });
      if (mk.exitCode !== 0) throw new DriverError(`delivering ${guestPath} to ${headnode}: cannot make ${DELIVER_STAGE_DIR}`);
      await copyToGuest(agent, hostFile, tmp);
      const st = await agent.run('/usr/bin/python3', ['-I', '-S', '-c', deliverScript(), tmp, owner, guestPath], { timeoutMs: 30_000 });
      if (st.exitCode !== 0) {
        throw new DriverError(`delivering ${guestPath} to ${headnode}: ${st.err?.toString().trim() || `status ${st.exitCode}`}`);
      }
    } catch (err) {
      await agent.run('/bin/rm', ['-f', '--', tmp], { timeoutMs: 10_000 }).catch(() => undefined);
      throw err instanceof CopperError ? err : new DriverError(`delivering ${guestPath} to ${headnode}: ${errorMessage(err)}`, { cause: err });
    }
  }
}
