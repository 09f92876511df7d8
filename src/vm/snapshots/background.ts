/**
 * Freeze a running VM with QEMU's background-snapshot: stop, `freeze` (the disk), then a
 * migration to a RamReceiver during which QEMU saves the devices, write-protects guest RAM
 * (userfaultfd) and resumes the VM itself; RAM pages stream to the receiver while the VM
 * runs, each page as it was at the stop (a page the guest writes is sent first). The
 * receiver's RAM file is the snapshot's; it then writes state.bin. The pause is the
 * stop..RESUME window only.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, errorMessage } from '../../errors.js';
import { log } from '../../log.js';
import { virtualSize } from '../disk-chain.js';
import type { Layout } from '../layout.js';
import { backgroundSnapshotExpected, setMigrationCaps, waitMigration, type SnapshotRamMethod } from '../migration.js';
import { QmpError } from '../qmp.js';
import { RamReceiver } from '../ram-receiver.js';
import type { FrozenVm, RunningVm } from './types.js';

export interface FreezeOutcome {
  pauseMs: number;
  failure: unknown;
  marks: Record<string, number>;
}

/** Whether background snapshots are tried: off for good once QEMU refuses, or after 3 failures in a row. */
export class BackgroundPolicy {
  /** undefined: not tried yet; false after QEMU refused background-snapshot (then never again). */
  private enabled: boolean | undefined;
  private failures = 0;

  constructor(method: SnapshotRamMethod | undefined) {
    if (method === 'copy') this.enabled = false;
  }

  get tried(): boolean {
    return this.enabled !== false;
  }

  /** What the next snapshot will most likely do (for the RAM space check). */
  get expected(): boolean {
    return this.enabled ?? backgroundSnapshotExpected();
  }

  refused(why: string): void {
    this.enabled = false;
    log.warn(`background snapshots unavailable (${why}): the RAM is copied while the headnode is paused`);
  }

  succeeded(): void {
    this.failures = 0;
  }

  /** Background snapshots that keep failing for another reason: copy from then on. */
  failed(why: string): void {
    this.failures++;
    log.warn(`background snapshot failed (${this.failures} in a row): ${why}`);
    if (this.failures >= 3) {
      this.enabled = false;
      log.warn('background snapshots turned off after 3 failures in a row: the RAM is copied while the headnode is paused');
    }
  }
}

/**
 * Undefined (nothing done) when QEMU or the kernel cannot do it: the caller then copies the
 * RAM file inside the pause instead.
 */
export async function freezeInBackground(
  h: RunningVm, layout: Layout, policy: BackgroundPolicy, id: string, vm: FrozenVm, frozenNode: string,
  freeze: (mark: (step: string) => void) => Promise<void>,
): Promise<FreezeOutcome | undefined> {
  const qmp = h.vm.qmp;
  const sp = layout.snapshot(id);
  // Anything that fails before the pause leaves the VM untouched: copy instead.
  let receiver: RamReceiver;
  try {
    receiver = await RamReceiver.start({
      // A short folder name: socket paths must stay under 108 bytes.
      id, vm, ramFile: sp.ramFile, dir: `${layout.runDir}/t/${randomBytes(4).toString('hex')}`, diskBytes: await virtualSize(qmp, frozenNode),
    });
  } catch (err) {
    policy.failed(`its receiver did not start: ${errorMessage(err)}`);
    await rm(sp.ramFile, { force: true });
    return undefined;
  }
  let stopListening = (): void => undefined;
  const timer = new AbortController();
  try {
    try {
      await setMigrationCaps(qmp, { ignoreShared: false, background: true });
    } catch (err) {
      // QEMU refuses the capability when the kernel lacks shmem write-protect: for good.
      if (err instanceof QmpError) policy.refused(errorMessage(err));
      else policy.failed(errorMessage(err));
      await rm(sp.ramFile, { force: true });
      return undefined;
    }
    // The default bandwidth cap (128 MiB/s) would make the stream, not the host, the limit.
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 * 1024 * 1024 });
    const marks: Record<string, number> = {};
    const t0 = performance.now();
    const mark = (step: string): void => {
      marks[step] = Math.round(performance.now() - t0);
    };
    let failure: unknown;
    let resumedAt: number | undefined;
    let onResume = (): void => undefined;
    const resumed = new Promise<void>((resolve) => (onResume = resolve));
    stopListening = qmp.on('RESUME', () => {
      resumedAt ??= performance.now();
      onResume();
    });
    let streamed: Promise<void> | undefined;
    await qmp.execute('stop');
    mark('stop');
    try {
      await freeze(mark);
      streamed = waitMigration(qmp, `snapshot of '${h.name}'`, 300_000, qmp.execute('migrate', { uri: receiver.uri }));
      streamed.catch(() => undefined);
      // QEMU 7.2 resumes the VM once the devices are saved and RAM is write-protected; a
      // `cont` before that would let the guest run past the frozen disk.
      const first = await Promise.race([
        resumed.then(() => 'resumed'),
        streamed.then(() => 'done'),
        sleep(30_000, 'timeout', { signal: timer.signal }),
      ]);
      if (first === 'timeout') throw new DriverError('the background snapshot did not resume the headnode within 30 s');
    } catch (err) {
      failure = err;
    }
    const status = await qmp.execute<{ running: boolean }>('query-status').catch(() => ({ running: false }));
    if (!status.running) {
      // Whatever failed, the VM runs again.
      if (failure !== undefined) await qmp.execute('migrate_cancel').catch(() => undefined);
      try {
        await qmp.execute('cont');
      } catch (err) {
        failure ??= new DriverError(`headnode '${h.name}' could not be resumed: ${errorMessage(err)}`, { cause: err });
      }
    }
    const pauseMs = Math.round(((resumedAt ?? performance.now()) - t0) * 10) / 10;
    marks.resumed = Math.round(pauseMs);
    if (failure === undefined) {
      try {
        await streamed;
        mark('streamed');
        await receiver.finish(`snapshot of '${h.name}'`, sp.state);
        mark('state');
      } catch (err) {
        failure = err;
      }
    }
    if (failure === undefined) policy.succeeded();
    else policy.failed(errorMessage(failure));
    return { pauseMs, failure, marks };
  } finally {
    timer.abort();
    stopListening();
    await setMigrationCaps(qmp, { ignoreShared: true }).catch(() => undefined);
    await receiver.close();
  }
}
