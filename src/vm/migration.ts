/**
 * Device-state save and restore over QMP migration with x-ignore-shared: RAM that lives in a
 * shared file is not sent (a clone maps the frozen RAM file instead), so the stream is only
 * the devices' state, a few hundred KB.
 */
import { release } from 'node:os';
import { settings } from '../config/settings.js';
import { DriverError, errorMessage } from '../errors.js';
import type { QmpClient } from './qmp.js';

interface MigrationInfo {
  status?: string;
  'error-desc'?: string;
}

/** exec: runs through /bin/sh; paths come from Layout, quoted anyway. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Migration capabilities, always with MIGRATION events (completion is noticed at once, not at
 * the next poll). `background` is set explicitly either way: QEMU keeps capabilities between
 * migrations, and a leftover background-snapshot=on would turn the next device-state save of
 * that VM into a background snapshot.
 */
export async function setMigrationCaps(qmp: QmpClient, caps: { ignoreShared: boolean; background?: boolean }): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'x-ignore-shared', state: caps.ignoreShared },
      { capability: 'events', state: true },
      { capability: 'background-snapshot', state: caps.background ?? false },
    ],
  });
}

/**
 * Whether this host's kernel can write-protect shared memory with userfaultfd (Linux 5.19+),
 * which QEMU's background-snapshot needs for a headnode's RAM file on tmpfs. A hint only (QEMU
 * has the last word when the capability is set); it decides whether headnodes preallocate.
 */
export function backgroundSnapshotExpected(kernelRelease: string = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(kernelRelease);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 5 || (major === 5 && minor >= 19);
}

export type SnapshotRamMethod = 'auto' | 'copy';

/** GC_SNAPSHOT_RAM=auto|copy (unset: auto). */
export function snapshotRamFromEnv(env: NodeJS.ProcessEnv = process.env): SnapshotRamMethod {
  return settings(env).snapshotRam;
}

/** x-ignore-shared: RAM in a shared file is not sent, only the devices' state. */
export async function enableIgnoreShared(qmp: QmpClient): Promise<void> {
  await setMigrationCaps(qmp, { ignoreShared: true });
}

const END_STATES = new Set(['completed', 'failed', 'cancelled']);

/**
 * Wait until the migration has completed; DriverError when it failed or took too long.
 * Driven by MIGRATION events, with a slow poll as a safety net (an event can be missed if
 * the migration ended before we subscribed).
 */
export async function waitMigration(qmp: QmpClient, what: string, timeoutMs: number, started?: Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let wake: (() => void) | undefined;
  const off = qmp.on('MIGRATION', (ev) => {
    if (END_STATES.has(String(ev.data.status))) wake?.();
  });
  try {
    await started;
    for (;;) {
      const info = await qmp.execute<MigrationInfo>('query-migrate');
      if (info.status === 'completed') return;
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new DriverError(`${what}: migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
      }
      if (Date.now() > deadline) throw new DriverError(`${what}: migration did not complete within ${timeoutMs} ms (${info.status ?? '?'})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 20);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    off();
  }
}

/** Write the (paused) VM's device state to a file. */
export async function saveDeviceState(qmp: QmpClient, stateFile: string, timeoutMs = 60_000): Promise<void> {
  // Subscribe before starting: a small state can be written before the reply arrives.
  await waitMigration(qmp, 'saving device state', timeoutMs, qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(stateFile)}` }));
}

/** Load device state into a QEMU started with `-incoming defer`. */
export async function loadDeviceState(qmp: QmpClient, stateFile: string, timeoutMs = 60_000): Promise<void> {
  await waitMigration(qmp, 'restoring device state', timeoutMs, qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(stateFile)}` }));
}

/**
 * Pause a VM (QMP stop), run `work`, and resume it whatever happened: a snapshot must never
 * leave a user's VM stopped. Returns how long it was paused and what failed, if anything
 * (the caller cleans up after the VM runs again). `mark` timestamps steps from the pause.
 */
export async function whilePaused(
  qmp: QmpClient,
  what: string,
  work: (mark: (step: string) => void) => Promise<void>,
): Promise<{ pauseMs: number; failure: unknown; marks: Record<string, number> }> {
  const marks: Record<string, number> = {};
  const t0 = performance.now();
  const mark = (step: string): void => {
    marks[step] = Math.round(performance.now() - t0);
  };
  let failure: unknown;
  await qmp.execute('stop');
  mark('stop');
  try {
    await work(mark);
  } catch (err) {
    failure = err;
  } finally {
    try {
      await qmp.execute('cont');
    } catch (err) {
      failure ??= new DriverError(`${what} could not be resumed: ${errorMessage(err)}`, { cause: err });
    }
  }
  return { pauseMs: Math.round((performance.now() - t0) * 10) / 10, failure, marks };
}
