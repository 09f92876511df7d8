import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { keepingOutput, OWNER_FILE, undeliveredRoom } from './byte-quotas.js';
import type { QuotaConfig } from '../config/quotas.js';
import { jobHeadnodeChanged } from '../headnodes/incarnation.js';
import { join } from 'node:path';
import type { CommandUsage, Driver, ExecResult, ExecSpec, RunningCommand } from '../drivers/driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { EXIT, signalExitStatus, type EndReason, type JobRecord } from '../queue/job.js';
import type { JobStore, TransitionResult } from '../queue/job-store.js';
import { stageOutJob } from '../stageout/run-stage-out.js';
import { pbsEnvironment } from './job-env.js';
import { defaultOutputPaths } from './output-paths.js';
import { cloneHostname } from './clone-hostname.js';
import { sampleUsage, type UsageSampler } from './usage-sampler.js';
import type { EndedOutputs } from './ended-output.js';
import { oomComment } from './oom-words.js';
import { SIGNAL_NUMBERS } from '../drivers/signals.js';
import { LiveJobControl, type LiveJobs } from './live-jobs.js';
import { WalltimeClock } from './walltime-clock.js';
import { crashPoint } from '../crash-point.js';
import { interactiveExec } from './interactive-exec.js';

/**
 * Why a running job is being stopped from outside: gcqdel, gcd's shutdown, gcqrerun (stop,
 * then run again from the same snapshot), gcqdel -W force (destroy the clone at once).
 */
export type StopReason = 'deleted' | 'shutdown' | 'rerun' | 'forced';

const STOP_REASONS: ReadonlySet<string> = new Set<StopReason>(['deleted', 'shutdown', 'rerun', 'forced']);

export interface RunnerOptions {
  driver: Driver;
  /** The quota file in force (byte quotas on output kept on the host; byte-quotas.ts). */
  quotas?: () => QuotaConfig;
  store: JobStore;
  /** Host folder for output on its way home: `<spool>/<jobid>/`. */
  spoolDir: string;
  /** PBS kill_delay: time between SIGTERM and SIGKILL. */
  killDelayMs: number;
  /**
   * Host-side deadline after the SIGKILL: a job still not ended by then (its guest lies or
   * stopped answering) has its clone destroyed by the host and ends with the reason. Default 30 s.
   */
  guestDeadlineMs?: number;
  /** How long finished jobs stay visible to gcqstat -x. */
  historyTtlSec: number;
  /**
   * Called once a job is F (and again after a crash if it did not complete): completes its
   * array, reviews its dependents. Must be idempotent; throwing leaves the job to be settled again.
   */
  onFinished?: (job: JobRecord) => Promise<void>;
  /** How often a running job's CPU time and memory are sampled for gcqstat (0: only at its end). */
  usageSampleMs?: number;
  /** Where a finished job's output copy stays a while for gcqpeek -f (else it is deleted at once). */
  endedOutputs?: EndedOutputs;
  /** Clone start latency (run transition to command started), for the metrics. */
  onCloneStarted?: (job: JobRecord, ms: number) => void;
  /** Where running commands are registered for gcqsig (signals, suspend, resume). */
  live?: LiveJobs;
}

/** How a job ends: its status (none: it never ran), the comment, and the reason (see JobRecord.endReason). */
export interface JobEnd {
  exitStatus?: number;
  comment: string;
  endReason?: EndReason;
}

export interface RunOutcome {
  /** True when the job was stopped by a gcd shutdown and must be queued again. */
  requeue: boolean;
}

/**
 * Runs one job from clone to cleanup. Every path — success, failure, walltime, gcqdel,
 * shutdown — ends with the clone destroyed and the spool removed.
 */
export class JobRunner {
  constructor(private readonly o: RunnerOptions) {}

  /**
   * Run a job the dispatcher has moved to R (its `run` transition). The steps, in order:
   * clone and run the command; the command ended -> `exit` (R->E, exit status recorded);
   * deliver the output; clean up (usage, clone, spool); then `finish` (->F) and settle.
   */
  async run(job: JobRecord, stop: AbortSignal): Promise<RunOutcome> {
    const { driver, store } = this.o;
    // Array tasks share a sequence number: the index keeps their clones apart.
    const task = job.arrayIndex !== undefined ? `-${job.arrayIndex}` : '';
    const cloneId = `j${job.seq}${task}-r${job.runCount}`;
    const spool = join(this.o.spoolDir, job.id);
    const paths = defaultOutputPaths(job);
    let running: RunningCommand | undefined;
    let ended: JobEnd | undefined;
    let requeue = false;
    let cloned = false;
    let sampler: UsageSampler | undefined;
    /** Past E: from here the job is finished, never requeued (its command has run). */
    let exited = false;
    let guestMeasured = false;

    try {
      const startedAt = Date.now();
      await store.update(job.id, { cloneId, startedAt, comment: undefined });
      await mkdir(spool, { recursive: true });
      const outFile = join(spool, 'stdout');
      const errFile = job.spec.join === 'n' ? join(spool, 'stderr') : outFile;
      const clone = await driver.clone({
        cloneId,
        snapshotId: job.snapshotId ?? '',
        hostname: cloneHostname(job),
        ncpus: job.spec.assigned?.ncpus ?? job.spec.resources.ncpus,
        memMiB: job.spec.assigned?.memMiB ?? job.spec.resources.memMiB,
      });
      cloned = true;
      crashPoint('run:after-clone');
      sampler = sampleUsage(driver, store, job.id, cloneId, this.o.usageSampleMs ?? 5000);
      const spec: ExecSpec = {
        argv: job.spec.argv,
        cwd: job.spec.cwd,
        env: pbsEnvironment(job),
        user: job.spec.account ?? 'root',
        stdoutFile: job.spec.join === 'eo' ? errFile : outFile,
        stderrFile: errFile,
      };
      const script = await store.scriptOf(job);
      if (script !== undefined) {
        spec.script = script;
        spec.scriptArgs = job.spec.scriptArgs ?? [];
      }
      if (job.spec.interactive) Object.assign(spec, interactiveExec(job.spec.interactive, spec.env));
      if (stop.aborted) throw new Error('stopped before start');
      running = await driver.exec(clone, spec);
      crashPoint('run:after-exec');
      this.o.onCloneStarted?.(job, Date.now() - startedAt);
      const result = await this.supervise(job, cloneId, running, stop);
      // The command has ended: no live sample (the whole VM's figures) may land after, or over, its own usage.
      await sampler?.stop();
      ended = result.ended;
      requeue = result.requeue;
      if (result.usage) {
        // The command's own usage (its cgroup in the clone) rather than the whole VM's.
        guestMeasured = true;
        const u = result.usage;
        await store.update(job.id, { cputSec: Math.round(u.cputSec * 100) / 100, ...(u.memPeakKiB !== undefined ? { memKiB: u.memPeakKiB } : {}) });
      }

      if (!requeue) {
        // Job ended -> E (its status kept, so a gcd dying from here on finishes it, not reruns it).
        const e = await store.transitionOnHost(job.id, job.execHost, 'exit', {
          exitStatus: ended.exitStatus,
          comment: ended.comment,
          endReason: ended.endReason,
        });
        if (!e.ok) throw e.error;
        exited = true;
        crashPoint('deliver:before');
        // Deliver output.
        // An interactive job's output went to its terminal: no .o/.e files, as in PBS.
        const note = job.spec.interactive ? undefined : await this.deliver(job, spool, paths, job.spec.join);
        if (note) ended = { ...ended, comment: `${ended.comment}; ${note}` };
        // Stage-out: the files the job wrote come home while its clone lives, before F, so
        // that block=true and afterok dependents see them. Never throws (a failure is a note).
        // Not redone after a crash: a job found in E is finished with its status, as it is.
        const staged = await stageOutJob(driver, clone, job, this.o.spoolDir, this.o.quotas?.());
        if (staged) ended = { ...ended, comment: `${ended.comment}; ${staged}` };
      }
    } catch (e) {
      if (stop.aborted && (stop.reason === 'shutdown' || stop.reason === 'rerun') && !exited) requeue = true;
      else if (stop.aborted && !running) ended = { comment: 'deleted by gcqdel while its clone was starting', endReason: 'deleted' };
      // A delete asked while the guest stopped answering: the user's delete is why it ended,
      // whatever error the dead agent gave first.
      else if (stop.aborted && (stop.reason === 'deleted' || stop.reason === 'forced') && !ended)
        ended = { exitStatus: EXIT.LOST, comment: `deleted by gcqdel while running; ${errorMessage(e)}`, endReason: 'deleted' };
      else if (!ended || !running) ended = { exitStatus: EXIT.START_FAILED, comment: `job failed to run: ${errorMessage(e)}`, endReason: 'failed' };
      log.warn('job did not complete normally', { job: job.id, error: errorMessage(e) });
    } finally {
      await sampler?.stop();
      if (cloned && !guestMeasured) {
        const used = await driver.usage?.(cloneId).catch(() => undefined);
        if (used) await store.update(job.id, { cputSec: Math.round(used.cputSec * 100) / 100, memKiB: used.memKiB }).catch(() => undefined);
      }
      if (cloned || running) await driver.destroy(cloneId).catch((e) => log.error('clone destroy failed', { cloneId, error: errorMessage(e) }));
      else await driver.destroy(cloneId).catch(() => undefined);
      const kept = this.o.endedOutputs?.keep(job.id, spool).then(
        () => true,
        () => false,
      );
      if (!(await kept)) await rm(spool, { recursive: true, force: true }).catch(() => undefined);
    }

    if (requeue) {
      // gcqrerun keeps the job's snapshot reference: the next run clones the same snapshot.
      const rerun = stop.reason === 'rerun';
      if (rerun || job.spec.rerunnable) {
        const q = rerun
          ? await store.transitionOnHost(job.id, job.execHost, 'rerun', {
              comment: `rerun by gcqrerun: run ${job.runCount} stopped, queued to run again`,
              cloneId: undefined,
            })
          : await store.transitionOnHost(job.id, job.execHost, 'requeue', { comment: 'requeued: gcd shut down while the job ran', cloneId: undefined });
        if (q.ok) return { requeue: true };
        log.error('requeue refused', { job: job.id, error: q.error.message });
        return { requeue: false };
      }
      ended = { exitStatus: EXIT.LOST, comment: 'killed: gcd shut down while the job ran and it is not rerunnable (-r n)', endReason: 'lost' };
    }
    // Finish: -> F, then settle (snapshot, array, dependents).
    crashPoint('deliver:before-F');
    const f = await this.finish(job, ended ?? { exitStatus: EXIT.START_FAILED, comment: 'job ended without a status', endReason: 'failed' });
    if (!f.ok && f.from !== 'F') log.error('finish refused', { job: job.id, error: f.error.message });
    return { requeue: false };
  }

  /**
   * End a job: `event` (finish from R/E; delete before it ran; array-end for an array's
   * record) to F with compare-and-set, then settle. Idempotent: a job already F is left as it
   * is and nothing is released or counted twice (the result says `from: 'F'`). Any other
   * refusal (e.g. gcqdel of a job a runner took meanwhile) is returned, not thrown.
   *
   * F is written together with the `settling` mark, and the mark is cleared only once the
   * snapshot reference, the array and the dependents are settled. Dependents and arrays judge
   * by their parents' F, so F has to come first; a crash in between leaves the mark, and gcd's
   * start settles every marked job again (each settle step is idempotent).
   */
  async finish(job: JobRecord, end: JobEnd, event: 'finish' | 'delete' | 'array-end' = 'finish'): Promise<TransitionResult> {
    // On a grid, only while the record still names the host the caller saw (src/grid/failure-monitor.ts).
    const r = await this.o.store.transitionOnHost(job.id, job.execHost, event, {
      endedAt: Date.now(),
      exitStatus: end.exitStatus,
      comment: end.comment,
      // Absent: keep the reason written at E (a gcd that died while delivering the output).
      ...(end.endReason ? { endReason: end.endReason } : {}),
      cloneId: undefined,
      holds: undefined,
      settling: true,
    });
    if (r.ok) {
      crashPoint('finish:after-F');
      await this.settle(r.record);
    }
    return r;
  }

  /**
   * Settle a finished job: drop its snapshot reference (once), complete its array and review
   * its dependents (onFinished), then clear the mark and start its history clock. Safe to run
   * again on a job already settled in part.
   */
  async settle(job: JobRecord): Promise<void> {
    const { store, driver } = this.o;
    try {
      if (job.snapshotId && (await store.releaseSnapshotRef(job.id, job.snapshotId))) {
        await driver
          .releaseSnapshot(job.snapshotId, job.id)
          .catch((e) => log.error('snapshot release failed', { snapshot: job.snapshotId, error: errorMessage(e) }));
      }
      await this.o.onFinished?.(job);
      await store.update(job.id, { settling: false });
      await store.expire(job.id, this.o.historyTtlSec);
    } catch (e) {
      // The mark stays: the next gcd start settles it again.
      log.error('after-finish step failed', { job: job.id, error: errorMessage(e) });
    }
  }

  /** Wait for the command, enforcing walltime and outside stops (SIGTERM, kill delay, SIGKILL). */
  private async supervise(
    job: JobRecord,
    cloneId: string,
    running: RunningCommand,
    stop: AbortSignal,
  ): Promise<{ ended: JobEnd & { exitStatus: number }; requeue: boolean; usage?: CommandUsage }> {
    let why: 'walltime' | StopReason | undefined;
    /** Set when the host killed the clone: the guest did not end the job by the deadline. */
    let forced: string | undefined;
    let killErr: string | undefined;
    let forceEnd: (r: ExecResult) => void = () => undefined;
    const forcedEnd = new Promise<ExecResult>((resolve) => (forceEnd = resolve));
    const timers: NodeJS.Timeout[] = [];
    const guestDeadlineMs = this.o.guestDeadlineMs ?? 30_000;
    const noteKillError = (e: unknown): void => {
      killErr ??= errorMessage(e);
    };
    const wall = job.spec.walltimeSec;
    // The walltime clock stops while the job is suspended (gcqsig) and runs on after resume.
    const clock = wall ? new WalltimeClock(wall, () => terminate('walltime')) : undefined;
    const live = new LiveJobControl(job.id, cloneId, running, this.o.driver, this.o.store, clock);
    const unregister = this.o.live?.add(job.id, live);
    const terminate = (reason: 'walltime' | StopReason): void => {
      if (why) return;
      why = reason;
      clock?.clear();
      if (reason === 'forced') {
        // gcqdel -W force: the clone may not answer; destroy it without asking it anything.
        void this.o.driver.destroy(cloneId).catch((e) => log.error('forced clone destroy failed', { cloneId, error: errorMessage(e) }));
        return;
      }
      // A suspended clone is let run first, or it could not take the signal.
      void live
        .wake()
        .catch(() => undefined)
        .then(() => running.kill('TERM'))
        .catch(noteKillError);
      timers.push(setTimeout(() => void running.kill('KILL').catch(noteKillError), this.o.killDelayMs));
      // The kills go through the guest, which may lie or not answer: the host has the last word.
      timers.push(
        setTimeout(() => {
          forced = `the guest did not end the job ${Math.round((this.o.killDelayMs + guestDeadlineMs) / 1000)}s after SIGTERM${killErr ? ` (${killErr})` : ''}; its VM was killed`;
          log.warn('guest did not end its job: clone killed from the host', { job: job.id, cloneId, error: killErr });
          void this.o.driver
            .destroy(cloneId)
            .catch((e) => log.error('clone destroy failed', { cloneId, error: errorMessage(e) }))
            .finally(() => forceEnd({ exitCode: null, signal: 9 }));
        }, this.o.killDelayMs + guestDeadlineMs),
      );
    };
    const onStop = (): void => terminate(typeof stop.reason === 'string' && STOP_REASONS.has(stop.reason) ? (stop.reason as StopReason) : 'deleted');
    if (stop.aborted) onStop();
    stop.addEventListener('abort', onStop);
    let result: ExecResult;
    try {
      // Once the host killed the clone, the command's own end (a failure: its VM is gone) is moot.
      const own = running.done.catch(async (e: unknown): Promise<ExecResult> => {
        if (forced) return forcedEnd;
        // The clone destroyed under the command (gcqdel -W force) is the end we asked for, not a failure.
        if (why === 'forced') return { exitCode: null, signal: SIGNAL_NUMBERS.KILL };
        throw e;
      });
      result = await Promise.race([own, forcedEnd]);
    } finally {
      clock?.clear();
      unregister?.();
      for (const t of timers) clearTimeout(t);
      stop.removeEventListener('abort', onStop);
    }
    const status = result.signal !== null ? signalExitStatus(result.signal) : (result.exitCode ?? EXIT.START_FAILED);
    const extra = [forced, result.note]
      .filter((x) => x !== undefined)
      .map((x) => `; ${x}`)
      .join('');
    const u = result.usage ? { usage: result.usage } : {};
    if (why === 'walltime') {
      return {
        ended: { exitStatus: EXIT.WALLTIME, comment: `walltime ${wall}s exceeded: killed (exit ${status})${extra}`, endReason: 'walltime' },
        requeue: false,
        ...u,
      };
    }
    if (why === 'deleted')
      return { ended: { exitStatus: status, comment: `deleted by gcqdel while running${extra}`, endReason: 'deleted' }, requeue: false, ...u };
    if (why === 'forced')
      return {
        ended: { exitStatus: status, comment: 'deleted by gcqdel -W force: its clone was destroyed at once', endReason: 'deleted' },
        requeue: false,
        ...u,
      };
    if (why === 'rerun') return { ended: { exitStatus: status, comment: `stopped by gcqrerun${extra}` }, requeue: true, ...u };
    if (why === 'shutdown') return { ended: { exitStatus: status, comment: `stopped by gcd shutdown${extra}`, endReason: 'lost' }, requeue: true, ...u };
    const how = result.signal !== null ? `killed by signal ${result.signal}` : `exit ${status}`;
    const oom = oomComment(result, result.usage, job.spec.resources.memMiB);
    return { ended: { exitStatus: status, comment: `${oom ?? `Job run, ${how}`}${extra}`, endReason: 'exit' }, requeue: false, ...u };
  }

  /**
   * After a crash in E: the command had ended and its output waited in the spool; deliver it
   * now (the restart empties the spool next), so a finished job's output is not lost.
   * Returns a note when it could not be delivered and was kept on the host.
   */
  async deliverSpooled(job: JobRecord): Promise<string | undefined> {
    const spool = join(this.o.spoolDir, job.id);
    if (
      !(await stat(spool).then(
        () => true,
        () => false,
      ))
    )
      return undefined;
    try {
      return await this.deliver(job, spool, defaultOutputPaths(job), job.spec.join);
    } finally {
      await rm(spool, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** Bring the output home; if the headnode cannot take it, keep it on the host and say where. */
  private async deliver(job: JobRecord, spool: string, paths: { out: string; err: string }, join_: 'oe' | 'eo' | 'n'): Promise<string | undefined> {
    const { driver, store } = this.o;
    let note: string | undefined;
    const sends: Array<[string, string]> = [];
    if (join_ === 'oe') sends.push([join(spool, 'stdout'), paths.out]);
    else if (join_ === 'eo') sends.push([join(spool, 'stdout'), paths.err]);
    else sends.push([join(spool, 'stdout'), paths.out], [join(spool, 'stderr'), paths.err]);
    for (const [host, guest] of sends) {
      const exists = await stat(host).then(
        () => true,
        () => false,
      );
      if (!exists) continue;
      try {
        // Another life of the headnode name (destroyed, created again by someone): not theirs.
        const other = await jobHeadnodeChanged(driver, job.spec);
        if (other) throw other;
        await driver.deliverFile(job.spec.headnode, guest, host, job.spec.account ?? 'root', job.id);
      } catch (e) {
        const undelivered = join(this.o.spoolDir, '..', 'undelivered');
        const keep = join(undelivered, job.id);
        const size = (await stat(host)).blocks * 512;
        const ownerOf = async (id: string): Promise<string | undefined> => (await store.tryGet(id).catch(() => undefined))?.spec.user;
        const kept = join(keep, guest.split('/').pop() ?? 'output');
        const over = await keepingOutput(job.spec.user, async () => {
          const full = this.o.quotas ? await undeliveredRoom(this.o.quotas(), job.spec.user, undelivered, size, ownerOf) : undefined;
          if (full) return full;
          await mkdir(keep, { recursive: true });
          await writeFile(join(keep, OWNER_FILE), `${job.spec.user}\n`);
          const { rename } = await import('node:fs/promises');
          await rename(host, kept);
          return undefined;
        });
        if (over) {
          await rm(host, { force: true });
          note = [note, `output not delivered to ${job.spec.headnode}:${guest} (${errorMessage(e)}); dropped: ${over.message}`].filter(Boolean).join('; ');
          continue;
        }
        const where = driver.nodeName ? `node ${driver.nodeName}` : 'the host';
        note = [note, `output not delivered to ${job.spec.headnode}:${guest} (${errorMessage(e)}); kept on ${where} at ${kept}`].filter(Boolean).join('; ');
      }
    }
    await store.update(job.id, {
      outputPath: join_ === 'eo' ? paths.err : paths.out,
      errorPath: join_ === 'oe' ? paths.out : paths.err,
    });
    return note;
  }
}
