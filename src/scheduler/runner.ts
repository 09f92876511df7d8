import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Driver, ExecResult, ExecSpec, RunningCommand } from '../drivers/driver.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { EXIT, signalExitStatus, type JobRecord } from '../queue/job.js';
import type { JobStore } from '../queue/job-store.js';
import { stageOutJob } from '../stageout/run-stage-out.js';
import { pbsEnvironment } from './job-env.js';
import { defaultOutputPaths } from './output-paths.js';

/** Why a running job is being stopped from outside. */
export type StopReason = 'deleted' | 'shutdown';

export interface RunnerOptions {
  driver: Driver;
  store: JobStore;
  /** Host folder for output on its way home: `<spool>/<jobid>/`. */
  spoolDir: string;
  /** PBS kill_delay: time between SIGTERM and SIGKILL. */
  killDelayMs: number;
  /** How long finished jobs stay visible to gcqstat -x. */
  historyTtlSec: number;
  /** Called once a job is F: releases its dependents, completes its array. */
  onFinished?: (job: JobRecord) => Promise<void>;
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

  async run(job: JobRecord, stop: AbortSignal): Promise<RunOutcome> {
    const { driver, store } = this.o;
    // Array tasks share a sequence number: the index keeps their clones apart.
    const task = job.arrayIndex !== undefined ? `-${job.arrayIndex}` : '';
    const cloneId = `j${job.seq}${task}-r${job.runCount}`;
    const spool = join(this.o.spoolDir, job.id);
    const paths = defaultOutputPaths(job);
    let running: RunningCommand | undefined;
    let ended: { exitStatus?: number; comment: string } | undefined;
    let requeue = false;
    let cloned = false;

    try {
      await store.update(job.id, { cloneId, startedAt: Date.now(), comment: undefined });
      await mkdir(spool, { recursive: true });
      const outFile = join(spool, 'stdout');
      const errFile = job.spec.join === 'n' ? join(spool, 'stderr') : outFile;
      const clone = await driver.clone({
        cloneId,
        snapshotId: job.snapshotId ?? '',
        hostname: `${job.spec.headnode}-${job.seq}${task}`,
        ncpus: job.spec.resources.ncpus,
      });
      cloned = true;
      const spec: ExecSpec = {
        argv: job.spec.argv,
        cwd: job.spec.cwd,
        env: pbsEnvironment(job),
        user: job.spec.account ?? 'root',
        stdoutFile: job.spec.join === 'eo' ? errFile : outFile,
        stderrFile: errFile,
      };
      if (job.spec.script !== undefined) {
        spec.script = job.spec.script;
        spec.scriptArgs = job.spec.scriptArgs ?? [];
      }
      if (stop.aborted) throw new Error('stopped before start');
      running = await driver.exec(clone, spec);
      const result = await this.supervise(job, running, stop);
      ended = result.ended;
      requeue = result.requeue;

      if (!requeue) {
        await store.update(job.id, { state: 'E' });
        await this.deliver(job, spool, paths, job.spec.join);
        // Files the job wrote come home before F (block=true, afterok dependents see them).
        const note = await stageOutJob(driver, clone, job, this.o.spoolDir);
        if (note && ended) ended = { ...ended, comment: `${ended.comment}; ${note}` };
      }
    } catch (e) {
      if (stop.aborted && stop.reason === 'shutdown') requeue = true;
      else if (stop.aborted && !running) ended = { comment: 'deleted by gcqdel while its clone was starting' };
      else ended = { exitStatus: EXIT.START_FAILED, comment: `job failed to run: ${errorMessage(e)}` };
      log.warn('job did not complete normally', { job: job.id, error: errorMessage(e) });
    } finally {
      if (cloned) {
        const used = await driver.usage?.(cloneId).catch(() => undefined);
        if (used) await store.update(job.id, { cputSec: Math.round(used.cputSec * 100) / 100, memKiB: used.memKiB }).catch(() => undefined);
      }
      if (cloned || running) await driver.destroy(cloneId).catch((e) => log.error('clone destroy failed', { cloneId, error: errorMessage(e) }));
      else await driver.destroy(cloneId).catch(() => undefined);
      await rm(spool, { recursive: true, force: true }).catch(() => undefined);
    }

    if (requeue) {
      if (job.spec.rerunnable) {
        await store.update(job.id, { state: 'Q', comment: 'requeued: gcd shut down while the job ran', cloneId: undefined });
        return { requeue: true };
      }
      ended = { exitStatus: EXIT.LOST, comment: 'killed: gcd shut down while the job ran and it is not rerunnable (-r n)' };
    }
    await this.finish(job, ended ?? { exitStatus: EXIT.START_FAILED, comment: 'job ended without a status' });
    return { requeue: false };
  }

  /** Mark a job F (no exit status: it never ran), release its snapshot, start its history clock. */
  async finish(job: JobRecord, end: { exitStatus?: number; comment: string }): Promise<void> {
    const { store, driver } = this.o;
    const endedAt = Date.now();
    await store.update(job.id, { state: 'F', endedAt, exitStatus: end.exitStatus, comment: end.comment, cloneId: undefined, holds: undefined });
    await store.expire(job.id, this.o.historyTtlSec);
    if (job.snapshotId && (await store.releaseSnapshotRef(job.snapshotId))) {
      await driver.releaseSnapshot(job.snapshotId).catch((e) => log.error('snapshot release failed', { snapshot: job.snapshotId, error: errorMessage(e) }));
    }
    const done: JobRecord = { ...job, state: 'F', endedAt, comment: end.comment };
    if (end.exitStatus !== undefined) done.exitStatus = end.exitStatus;
    else delete done.exitStatus;
    await this.o.onFinished?.(done).catch((e) => log.error('after-finish step failed', { job: job.id, error: errorMessage(e) }));
  }

  /** Wait for the command, enforcing walltime and outside stops (SIGTERM, kill delay, SIGKILL). */
  private async supervise(
    job: JobRecord,
    running: RunningCommand,
    stop: AbortSignal,
  ): Promise<{ ended: { exitStatus: number; comment: string }; requeue: boolean }> {
    let why: 'walltime' | StopReason | undefined;
    const terminate = (reason: 'walltime' | StopReason): void => {
      if (why) return;
      why = reason;
      void running.kill('TERM').catch(() => undefined);
      const k = setTimeout(() => void running.kill('KILL').catch(() => undefined), this.o.killDelayMs);
      void running.done.finally(() => clearTimeout(k));
    };
    const wall = job.spec.walltimeSec;
    const timer = wall ? setTimeout(() => terminate('walltime'), wall * 1000) : undefined;
    const onStop = (): void => terminate(stop.reason === 'shutdown' ? 'shutdown' : 'deleted');
    if (stop.aborted) onStop();
    stop.addEventListener('abort', onStop);
    let result: ExecResult;
    try {
      result = await running.done;
    } finally {
      if (timer) clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
    }
    const status = result.signal !== null ? signalExitStatus(result.signal) : (result.exitCode ?? EXIT.START_FAILED);
    if (why === 'walltime') {
      return { ended: { exitStatus: EXIT.WALLTIME, comment: `walltime ${wall}s exceeded: killed (exit ${status})` }, requeue: false };
    }
    if (why === 'deleted') return { ended: { exitStatus: status, comment: 'deleted by gcqdel while running' }, requeue: false };
    if (why === 'shutdown') return { ended: { exitStatus: status, comment: 'stopped by gcd shutdown' }, requeue: true };
    const how = result.signal !== null ? `killed by signal ${result.signal}` : `exit ${status}`;
    return { ended: { exitStatus: status, comment: `Job run, ${how}` }, requeue: false };
  }

  /** Bring the output home; if the headnode cannot take it, keep it on the host and say where. */
  private async deliver(job: JobRecord, spool: string, paths: { out: string; err: string }, join_: 'oe' | 'eo' | 'n'): Promise<void> {
    const { driver, store } = this.o;
    const sends: Array<[string, string]> = [];
    if (join_ === 'oe') sends.push([join(spool, 'stdout'), paths.out]);
    else if (join_ === 'eo') sends.push([join(spool, 'stdout'), paths.err]);
    else sends.push([join(spool, 'stdout'), paths.out], [join(spool, 'stderr'), paths.err]);
    for (const [host, guest] of sends) {
      const exists = await stat(host).then(() => true, () => false);
      if (!exists) continue;
      try {
        await driver.deliverFile(job.spec.headnode, guest, host, job.spec.account ?? 'root');
      } catch (e) {
        const keep = join(this.o.spoolDir, '..', 'undelivered', job.id);
        await mkdir(keep, { recursive: true });
        const kept = join(keep, guest.split('/').pop() ?? 'output');
        const { rename } = await import('node:fs/promises');
        await rename(host, kept);
        await store.update(job.id, { comment: `output not delivered to ${job.spec.headnode}:${guest} (${errorMessage(e)}); kept on the host at ${kept}` });
      }
    }
    await store.update(job.id, {
      outputPath: join_ === 'eo' ? paths.err : paths.out,
      errorPath: join_ === 'oe' ? paths.out : paths.err,
    });
  }
}
