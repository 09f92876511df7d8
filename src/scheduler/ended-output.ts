import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { OutputStream } from '../drivers/driver.js';
import { readHostFileAt } from '../drivers/read-at.js';

/**
 * The host copy of a finished job's output, kept for a minute after its clone is gone, so
 * that `gcqpeek -f` reads the last lines a job wrote between its last round and its end
 * (the clone, and the driver's view of it, are gone by then). Emptied when gcd starts and
 * stops: nothing outlives the process.
 */
export class EndedOutputs {
  constructor(
    private readonly dir: string,
    private readonly keepMs = 60_000,
  ) {}

  /** Take over a finished job's spool folder (its `stdout` and `stderr` files). */
  async keep(jobId: string, spool: string): Promise<void> {
    const to = join(this.dir, jobId);
    await mkdir(this.dir, { recursive: true, mode: 0o700 }); // jobs' output: root's alone (VM uids traverse the state folder)
    await rm(to, { recursive: true, force: true });
    await rename(spool, to);
    const t = setTimeout(() => void rm(to, { recursive: true, force: true }).catch(() => undefined), this.keepMs);
    t.unref();
  }

  /** Delete everything kept. */
  async clear(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Up to maxBytes of a kept stream from offset; undefined when nothing is kept. */
  read(jobId: string, stream: OutputStream, offset: number, maxBytes: number): Promise<Buffer | undefined> {
    if (jobId.includes('/') || jobId.startsWith('.')) return Promise.resolve(undefined);
    return readHostFileAt(join(this.dir, jobId, stream), offset, maxBytes);
  }
}
